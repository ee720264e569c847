"""What "abandoned" means, defined once for every rqmaint module (status, clean's plan, watch, the
metrics and the requeue itself).

An RQ job is **abandoned** when its worker died mid-job:

* its started-registry entry (``<prefix>:wip:<queue>``) is *due*: the deadline (the score, which a
  live worker pushes ahead on every heartbeat) is at or before "now" -- Redis's clock (:func:`due`,
  :func:`due_range`); rqmaint additionally checks that no live worker claims it (the scripts);
* or it sits in the queue's intermediate list unclaimed for longer than :data:`INTERMEDIATE_GRACE`
  (the worker died between its LMOVE and the work horse's start);
* or RQ's own maintenance already failed it as abandoned (:func:`failure_text_is_abandonment`):
  ``AbandonedJobError``, or a work horse SIGKILLed while its worker lived (the OOM killer's signal);
  never a job that raised.

Nothing here unpickles anything: failure records are zlib/base64 text.
"""

from __future__ import annotations

import base64
import zlib

from rqmaint.lock import decode

INTERMEDIATE_GRACE = 60  # seconds; RQ's IntermediateQueue.should_be_cleaned_up
ABANDONED_MARK = "Moved to FailedJobRegistry, due to AbandonedJobError"
# RQ's worker_classes.py: f"Work-horse terminated unexpectedly; waitpid returned {ret_val}{signal_msg}; "
# with signal_msg " (signal 9)" for SIGKILL (the OOM killer's signal, or kill -9 of the horse).
HORSE_KILLED_PREFIX = "Work-horse terminated unexpectedly; waitpid returned "
HORSE_KILLED_SIGNAL = "(signal 9)"


def due(score: float, now: float) -> bool:
    """A started entry whose deadline has passed (the scripts' ``tonumber(score) > now`` is "not due")."""
    return score <= now


def due_range(now: float) -> tuple[str, float]:
    """``ZRANGEBYSCORE``/``ZCOUNT`` bounds of the due entries of a started registry."""
    return ("-inf", now)


def rq_cleanup_range(now: float) -> tuple[int, int]:
    """``ZCOUNT``/``ZRANGEBYSCORE`` bounds of the started entries RQ's own cleanup takes at ``now``
    (``StartedJobRegistry.get_expired_job_ids``: scores ``0..int(now)``): due entries, less any with a
    negative score or a deadline in the current second. ``clean``'s plan predicts RQ's code with it."""
    return (0, int(now))


def not_due_range(now: float, until: float) -> tuple[str, float]:
    """``ZRANGEBYSCORE`` bounds of the entries not due yet whose deadline is at most ``until`` (the
    complement of :func:`due_range` up to ``until``: no entry is in both)."""
    return (f"({now!r}", until)


def failure_text_is_abandonment(text: str) -> bool:
    """A failure record that says the job died mid-job (not that it raised)."""
    if text.startswith(ABANDONED_MARK):
        return True
    if text.startswith(HORSE_KILLED_PREFIX):
        head = text[len(HORSE_KILLED_PREFIX) :].split(";", 1)[0]
        return head.endswith(HORSE_KILLED_SIGNAL)
    return False


def decode_failure(raw: bytes | None, *, b64: bool) -> str | None:
    """The text of a failure record (zlib, base64(zlib) in results streams). Never unpickles."""
    if not raw:
        return None
    try:
        data = base64.b64decode(raw) if b64 else raw
        return zlib.decompress(data).decode("utf-8", "replace")
    except (ValueError, zlib.error):
        return None if b64 else raw.decode("utf-8", "replace")


def abandoned_marker(exc_info: bytes | None, newest: list[tuple[bytes, dict[bytes, bytes]]]) -> str | None:
    """The expectation string for the failed-mode script if the job failed as abandoned, else None.

    RQ >= 2.2 records the failure as the newest results-stream entry (type 2); 1.16-2.1 in the hash's
    exc_info. A job whose newest failure record says anything else (it raised, it was stopped) is
    never taken."""
    if newest:
        entry_id, fields = newest[0]
        if fields.get(b"type") == b"2":
            text = decode_failure(fields.get(b"exc_string"), b64=True)
            if text is not None and failure_text_is_abandonment(text):
                return "s" + (decode(entry_id) or "")
            return None
    text = decode_failure(exc_info, b64=False)
    if exc_info is not None and text is not None and failure_text_is_abandonment(text):
        return "h" + exc_info.decode("latin-1")
    return None
