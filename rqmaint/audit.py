"""rqmaint's audit trail: a capped Redis stream (``keys.audit()``, ``rqmaint:audit``) of every change
rqmaint makes to RQ's data, and the bounded reader behind ``rqmaint history``.

Each entry has the fields :data:`FIELDS`:

- ``action``: an :class:`Action` (``requeue``, ``give_up``, ``repair``, ``lock_release``, ``clean``);
- ``queue``, ``job`` (``""`` when the change is not about one job);
- ``detail``: what changed, as text (what one of RQ's cleaning steps changed as JSON,
  :class:`rqmaint.clean.StepAudit`; the lock value a release removed; at most :data:`MAX_DETAIL` bytes);
- ``run``: the rqmaint process that made it (:func:`run_id`: host, pid and a random token);
- ``by``: the command (``clean``, ``requeue-abandoned``, ``watch``, ``worker``, ``lock release``).

The stream is capped by length (``XADD MAXLEN ~`` :data:`MAX_ENTRIES`) and by age (``XTRIM MINID ~``,
entries older than :data:`MAX_AGE` go, exactly). Changes made inside rqmaint's Lua scripts are recorded by the
same script (it gets :func:`script_args` as ARGV), so a record and its change are one atomic step;
:func:`record` is for the Python side (what each of RQ's own cleaning steps changed), written right
after the step; a lock release (``lock release`` or a lease's own) is recorded by its script or
WATCH/MULTI (:func:`rqmaint.lock.release_if`, :func:`add_to`).
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from enum import Enum
from functools import cache
from typing import Any, cast

import redis

from rqmaint import keys
from rqmaint.lock import decode

MAX_ENTRIES = 100_000  # XADD MAXLEN ~: about this many entries are kept
MAX_AGE = 30 * 24 * 3600  # seconds: older entries are trimmed at the next write
MAX_DETAIL = 4096  # bytes of ``detail`` kept per entry (a lock value may be huge)
TRIM_LIMIT = 1000  # entries one trim may remove, at most (XADD/XTRIM ... LIMIT: bounded work per write)
SCAN_CHUNK = 1000  # entries per XREVRANGE
MAX_SCAN = 100_000  # entries one history() call looks at, at most (the whole stream by default)
FIELDS = ("action", "queue", "job", "detail", "run", "by")


class Action(str, Enum):
    REQUEUE = "requeue"
    GIVE_UP = "give_up"
    REPAIR = "repair"  # a lost race against RQ's lock-less cleanups, repaired
    LOCK_RELEASE = "lock_release"
    CLEAN = "clean"  # what one of RQ's own cleaning steps changed on a queue (one entry per step)


@cache
def run_id() -> str:
    """This process's id in the trail: ``host:pid:token``."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def script_args(by: str) -> list[str | int]:
    """What a Lua script that records its own changes needs as ARGV: run, by, MAX_ENTRIES, TRIM_LIMIT,
    MAX_AGE."""
    return [run_id(), by, MAX_ENTRIES, TRIM_LIMIT, MAX_AGE]


def _clip(text: str) -> str:
    raw = text.encode("utf-8", "backslashreplace")
    if len(raw) <= MAX_DETAIL:
        return text
    return raw[: MAX_DETAIL - 3].decode("utf-8", "ignore") + "..."


def clip_bytes(raw: bytes) -> bytes:
    """A value (e.g. a lock value, maybe not UTF-8) as an entry's detail: at most MAX_DETAIL bytes."""
    return raw if len(raw) <= MAX_DETAIL else raw[: MAX_DETAIL - 3] + b"..."


def release_entry(queue: str, detail: bytes, by: str) -> dict[str, str | bytes]:
    """The entry of a lock release (``detail``: the removed value, :func:`clip_bytes`)."""
    return {
        "action": Action.LOCK_RELEASE.value,
        "queue": queue,
        "job": "",
        "detail": detail,
        "run": run_id(),
        "by": by,
    }


def add_to(pipe: Any, entry: dict[str, str | bytes], now: float | None = None) -> None:
    """Queue ``entry``'s XADD and the bounded trims (length and age, ``~ ... LIMIT``) on ``pipe`` (a
    MULTI the caller executes with its change)."""
    now = time.time() if now is None else now
    pipe.xadd(keys.audit(), entry, maxlen=MAX_ENTRIES, approximate=True, limit=TRIM_LIMIT)
    pipe.xtrim(keys.audit(), minid=f"{int((now - MAX_AGE) * 1000)}-0", approximate=True, limit=TRIM_LIMIT)


def record(
    client: redis.Redis,
    action: Action,
    queue: str,
    *,
    by: str,
    job: str = "",
    detail: str = "",
    now: float | None = None,
) -> str:
    """Append one entry (and trim by length and age, in the same MULTI). Returns its stream id."""
    now = time.time() if now is None else now
    entry = {
        "action": action.value,
        "queue": queue,
        "job": job,
        "detail": _clip(detail),
        "run": run_id(),
        "by": by,
    }
    pipe = client.pipeline(transaction=True)
    pipe.xadd(keys.audit(), entry, maxlen=MAX_ENTRIES, approximate=True)  # type: ignore[arg-type]
    pipe.xtrim(keys.audit(), minid=f"{int((now - MAX_AGE) * 1000)}-0", approximate=False)
    entry_id, _trimmed = pipe.execute()
    return decode(entry_id) or ""


@dataclass(frozen=True)
class Entry:
    id: str
    at: float  # epoch seconds (the stream id's milliseconds)
    action: str
    queue: str
    job: str
    detail: str
    run: str
    by: str

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass
class History:
    entries: list[Entry] = field(default_factory=list)  # newest first
    scanned: int = 0  # stream entries looked at
    more: bool = False  # stopped at ``limit`` or MAX_SCAN with older entries left unread

    def as_dict(self) -> dict[str, object]:
        return {"entries": [e.as_dict() for e in self.entries], "scanned": self.scanned, "more": self.more}


def _entry(raw_id: bytes | str, fields: dict[bytes, bytes]) -> Entry:
    entry_id = decode(raw_id) or ""
    values = {k: decode(fields.get(k.encode())) or "" for k in FIELDS}
    return Entry(entry_id, int(entry_id.split("-", 1)[0]) / 1000.0, **values)


def history(
    client: redis.Redis,
    *,
    queue: str | None = None,
    job: str | None = None,
    since: float | None = None,
    limit: int = 100,
    max_scan: int = MAX_SCAN,
    now: float | None = None,
) -> History:
    """The newest ``limit`` entries (for ``queue`` / ``job``, within the last ``since`` seconds), newest
    first. Bounded: XREVRANGE with COUNT, at most ``max_scan`` entries looked at; read-only."""
    now = time.time() if now is None else now
    low = "-" if since is None else f"{int((now - since) * 1000)}-0"
    out = History()
    high = "+"
    while len(out.entries) < limit and out.scanned < max_scan:
        count = min(SCAN_CHUNK, max_scan - out.scanned)
        rows = cast(
            list[tuple[bytes, dict[bytes, bytes]]],
            client.xrevrange(keys.audit(), max=high, min=low, count=count),
        )
        for raw_id, fields in rows:
            out.scanned += 1
            high = f"({decode(raw_id)}"  # the next read starts below the last entry looked at
            e = _entry(raw_id, fields)
            if (queue is None or e.queue == queue) and (job is None or e.job == job):
                out.entries.append(e)
                if len(out.entries) == limit:
                    break
        if len(out.entries) < limit and len(rows) < count:
            return out  # the whole range was read
    out.more = bool(client.xrevrange(keys.audit(), max=high, min=low, count=1))
    return out
