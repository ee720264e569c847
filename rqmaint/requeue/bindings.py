"""Python bindings of the requeue scripts (``rqmaint/lua/requeue_lib.lua`` + one file per mode): the
KEYS/ARGV layout, the reply, and the give-up reasons. The scripts decide everything; nothing here
classifies a job."""

from __future__ import annotations

import base64
import json
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import redis

from rqmaint import audit, keys, scripts
from rqmaint.requeue.abandoned import INTERMEDIATE_GRACE
from rqmaint.requeue.outcome import Outcome

COUNTER_TTL = 7 * 24 * 3600  # how long a job's abandonment counter is kept after its last abandonment


def rq_time(ts: float) -> str:
    """RQ's utcformat: %Y-%m-%dT%H:%M:%S.%fZ."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def give_up_reasons(max_requeues: int, now: float) -> list[bytes]:
    """ARGV[10..13] of the scripts: the failure text for exactly max+1 and for more abandonments."""
    at = datetime.fromtimestamp(now, timezone.utc)
    exact = (
        f"Abandoned {max_requeues + 1} times (its worker died mid-job each time); rqmaint gave up after "
        f"--max-requeues {max_requeues} and moved it to FailedJobRegistry at {at}"
    )
    more = (
        f"Abandoned more than {max_requeues + 1} times (its worker died mid-job each time); rqmaint gave up "
        f"after --max-requeues {max_requeues} and moved it to FailedJobRegistry at {at}"
    )
    out = []
    for text in (exact, more):
        z = zlib.compress(text.encode("utf-8"))
        out += [base64.b64encode(z), z]
    return out


def script_keys(queue: str) -> list[str]:
    """KEYS of every requeue script call: real keys of the queue, so a Redis Cluster routes the call to
    RQ's slot (a prefix with a hash tag puts every key of the deployment there)."""
    return [
        keys.started(queue),
        keys.intermediate(queue),
        keys.failed(queue),
        keys.requeued(queue),
        keys.requeue_calls(queue),
        keys.audit(),
    ]


@dataclass
class CallArgs:
    """ARGV[1..22] (see requeue_lib.lua)."""

    queue: str
    now: float
    enqueued_at: str
    dry_run: bool
    at_front: bool
    max_requeues: int
    reasons: list[bytes]
    call_id: str
    score: float
    previous_score: float | None
    by: str = "requeue-abandoned"  # the audit trail's "by" (rqmaint.audit)

    def argv(self, tail: list[Any]) -> list[Any]:
        return [
            keys.prefix(),
            keys.own_prefix(),
            self.queue,
            repr(self.now),
            self.enqueued_at,
            "1" if self.dry_run else "0",
            "1" if self.at_front else "0",
            self.max_requeues,
            COUNTER_TTL,
            *self.reasons,
            INTERMEDIATE_GRACE,
            self.call_id,
            repr(self.score),
            "" if self.previous_score is None else repr(self.previous_score),
            *audit.script_args(self.by),
            *tail,
        ]


@dataclass
class CallResult:
    outcomes: list[tuple[Outcome, str, str, str]] = field(default_factory=list)  # outcome, id, detail, since
    scanned: int = 0
    more: bool = False
    resent: int = 0  # outcomes read back from an earlier send of the same call (its reply was lost)


def parse_reply(raw: Any) -> CallResult:
    doc = json.loads(raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw)
    flat = doc.get("out") or []
    outcomes = [
        (Outcome(str(flat[i])), str(flat[i + 1]), str(flat[i + 2]), str(flat[i + 3]))
        for i in range(0, len(flat), 4)
    ]
    return CallResult(
        outcomes, int(doc.get("scanned") or 0), bool(doc.get("more")), int(doc.get("resent") or 0)
    )


def scan_failed(
    client: redis.Redis, args: CallArgs, cursor: int, count: int
) -> tuple[int, list[tuple[bytes, str, bytes, bytes]]]:
    """One ZSCAN step of the failed registry inside the failed-mode script: the next cursor, and the
    failed jobs whose newest failure record is short enough to be an abandonment: (id, kind "s"/"h",
    stream entry id, record)."""
    raw = scripts.run_requeue(
        client, "failed", script_keys(args.queue), args.argv(["scan", cursor, count]), dry_run=args.dry_run
    )
    items = list(raw[1:])
    found = [
        (bytes(items[i]), bytes(items[i + 1]).decode(), bytes(items[i + 2]), bytes(items[i + 3]))
        for i in range(0, len(items), 4)
    ]
    return int(raw[0]), found


def call(client: redis.Redis, mode: str, args: CallArgs, tail: list[Any]) -> CallResult:
    """One atomic, budgeted call of the script of ``mode``."""
    raw = scripts.run_requeue(client, mode, script_keys(args.queue), args.argv(tail), dry_run=args.dry_run)
    return parse_reply(raw)
