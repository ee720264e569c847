"""Requeue abandoned jobs: jobs whose worker died mid-job (started registry, deadline passed, worker not
alive and busy with them), jobs stuck in the intermediate queue, and optionally jobs that RQ's own
maintenance already moved to the failed registry as AbandonedJobError.

Python proposes candidates in batches; ``lua/requeue_abandoned.lua`` re-checks each one and moves it
atomically, so a SIGKILL at any instant leaves every job in exactly one place. Nothing is unpickled:
only plain hash fields, and zlib/base64 text of failure records, are read.
"""

from __future__ import annotations

import base64
import json
import re
import time
import zlib
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import cast

import redis

from rqmaint import health, keys, lock, scripts
from rqmaint.lock import decode

DEFAULT_MAX_REQUEUES = 3
DEFAULT_BATCH = 500
COUNTER_TTL = 7 * 24 * 3600  # how long a job's abandonment counter is kept after its last abandonment
INTERMEDIATE_GRACE = 60  # seconds; RQ's IntermediateQueue.should_be_cleaned_up
ABANDONED_MARK = "Moved to FailedJobRegistry, due to AbandonedJobError"
RECONCILE_WINDOW = 900  # seconds a requeue stays in the ledger rqmaint:requeued:<queue> (RQ's lock: 899)
RECONCILE_CHUNK = 200  # ledger entries per reconcile call (a suspect one may LPOS the queue list)
MAX_LISTED = 200  # per queue: jobs listed in reports (dry-run rows, problems); totals are always exact

# Outcomes of the Lua script. "Problems" are bad data that needs an operator (exit 4).
PROBLEMS = frozenset({"missing_job", "no_origin", "unknown_origin", "malformed", "status", "unverified"})
QUEUED_SCAN = 10000  # the script's QUEUED_SCAN: entries looked at from either end of a queue list
STARTED_CHECK = 1000  # the script's STARTED_CHECK: a list this short is looked through for a started job
STAYS = frozenset({"not_due", "live_worker", "in_started", "first_seen"}) | PROBLEMS


@dataclass
class JobLine:
    """One job as the dry run shows it (plain fields only)."""

    job_id: str
    queue: str
    source: str  # started | intermediate | failed
    action: str  # what would happen: requeue, give_up, skip:<reason>
    description: str | None
    abandoned_since: str | None  # ISO time the deadline passed (started) or first seen (intermediate)
    last_worker: str | None
    times_requeued: int

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass
class QueueRequeue:
    name: str
    outcome: str = "done"  # done | would-requeue | skipped-locked | lease-lost | stopped
    counts: Counter[str] = field(default_factory=Counter)  # every outcome of the script, by name
    given_up_jobs: list[str] = field(default_factory=list)
    problems: list[dict[str, str]] = field(default_factory=list)
    jobs: list[JobLine] = field(default_factory=list)  # dry run only
    holder: lock.LockInfo | None = None
    duration: float = 0.0

    @property
    def requeued(self) -> int:
        return self.counts["requeued"]

    @property
    def given_up(self) -> int:
        return self.counts["given_up"]

    @property
    def already_queued(self) -> int:
        return self.counts["already_queued"]

    @property
    def raced(self) -> int:
        """Handled by someone else between our read and the script."""
        return self.counts["gone"]

    @property
    def reconciled(self) -> int:
        """Lost races against RQ's lock-less cleanups that were repaired."""
        return self.counts["reconciled"]

    @property
    def skipped(self) -> int:
        return sum(n for k, n in self.counts.items() if k in PROBLEMS or k == "live_worker")

    @property
    def problem_count(self) -> int:
        return sum(n for k, n in self.counts.items() if k in PROBLEMS)

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "outcome": self.outcome,
            "requeued": self.requeued,
            "given_up": self.given_up,
            "skipped": self.skipped,
            "already_queued": self.already_queued,
            "raced": self.raced,
            "reconciled": self.reconciled,
            "live_worker": self.counts.get("live_worker", 0),
            "watching": self.counts.get("first_seen", 0),
            "skipped_reasons": {k: n for k, n in sorted(self.counts.items()) if k in PROBLEMS},
            "given_up_jobs": list(self.given_up_jobs),
            "problems": list(self.problems),
            "jobs": [j.as_dict() for j in self.jobs],
            "holder": None if self.holder is None else self.holder.as_dict(),
            "duration": round(self.duration, 4),
        }

    def record(self, outcome: str, job_id: str, detail: str, n: int = 1) -> None:
        self.counts[outcome] += n
        if outcome == "given_up" and len(self.given_up_jobs) < MAX_LISTED:
            self.given_up_jobs.append(job_id)
        elif outcome in PROBLEMS and len(self.problems) < MAX_LISTED:
            reason = f"status {detail!r}" if outcome == "status" else outcome
            self.problems.append({"job_id": job_id, "reason": reason})


@dataclass
class RequeueOptions:
    dry_run: bool = False
    at_front: bool = False
    include_failed: bool = False
    max_requeues: int = DEFAULT_MAX_REQUEUES
    limit: int | None = None
    batch_size: int = DEFAULT_BATCH


def rq_time(ts: float) -> str:
    """RQ's utcformat: %Y-%m-%dT%H:%M:%S.%fZ."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _iso(ts: float | None) -> str | None:
    """ISO time, or None for what is not a representable time (garbage scores, infinities)."""
    if ts is None:
        return None
    try:
        return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")
    except (ValueError, OverflowError, OSError):
        return None


def give_up_reasons(max_requeues: int, now: float) -> list[bytes]:
    """ARGV[8..11] of the script: the failure text for exactly max+1 and for more abandonments."""
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
    """The expectation string for the script if the job failed as AbandonedJobError, else None.

    RQ >= 2.2 records it as the newest results-stream entry (type 2); 1.16-2.1 in the hash's exc_info.
    A job whose newest failure record says anything else (it raised, it was stopped) is never taken.
    """
    if newest:
        entry_id, fields = newest[0]
        if fields.get(b"type") == b"2":
            text = decode_failure(fields.get(b"exc_string"), b64=True)
            if text is not None and text.startswith(ABANDONED_MARK):
                return "s" + (decode(entry_id) or "")
            return None
    text = decode_failure(exc_info, b64=False)
    if exc_info is not None and text is not None and text.startswith(ABANDONED_MARK):
        return "h" + exc_info.decode("latin-1")
    return None


class Requeuer:
    """Runs one queue's requeue (or its dry run) in batches."""

    def __init__(
        self,
        client: redis.Redis,
        queue: str,
        opts: RequeueOptions,
        checkpoint: Callable[[], None] = lambda: None,
        now: float | None = None,
    ) -> None:
        if keys.prefix() != keys.DEFAULT_PREFIX:
            # Interim guard (issue 9, rq3 helper): this build's requeue script hard-codes RQ's default
            # prefix; the prefix-aware engine (wt-engine, rqmaint/requeue/ package) replaces this file.
            from rqmaint.errors import UsageError

            raise UsageError(
                f"requeueing under the key prefix {keys.prefix()!r} needs the prefix-aware requeue "
                "engine, not in this build; nothing was changed"
            )
        self.client = client
        self.queue = queue
        self.opts = opts
        self.checkpoint = checkpoint
        self.now = time.time() if now is None else now
        self.report = QueueRequeue(queue, outcome="would-requeue" if opts.dry_run else "done")
        self._reasons = give_up_reasons(opts.max_requeues, self.now)
        self._last_score = 0.0  # ledger score of the last call that requeued (re-checked by the next)
        self._dry_moved: set[str] = set()  # dry run: jobs the script would have moved already
        self._kept_started: set[str] = set()  # jobs whose started entries this run left in place
        self._more = False  # the last call stopped at its work budget

    # -- budget ---------------------------------------------------------------------------------------
    def _room(self) -> int:
        if self.opts.limit is None:
            return self.opts.batch_size
        done = self.report.requeued + self.report.given_up
        return max(0, min(self.opts.batch_size, self.opts.limit - done))

    # -- candidates -----------------------------------------------------------------------------------
    def _started_batches(self) -> Generator[list[tuple[bytes, float]], int, None]:
        offset = 0
        key = keys.started(self.queue)
        while True:
            room = self._room()
            if room <= 0:
                return
            rows = cast(
                list[tuple[bytes, float]],
                self.client.zrangebyscore(key, "-inf", self.now, start=offset, num=room, withscores=True),
            )
            if not rows:
                return
            stayed = yield [(m, float(s)) for m, s in rows]
            offset += int(stayed or 0)

    def _intermediate_ids(self) -> list[bytes]:
        return cast(list[bytes], self.client.lrange(keys.intermediate(self.queue), 0, -1))

    def _failed_batches(self) -> Iterator[list[bytes]]:
        cursor = 0
        key = keys.failed(self.queue)
        while True:
            cursor, members = cast(
                tuple[int, list[tuple[bytes, float]]],
                self.client.zscan(key, cursor, count=self.opts.batch_size),
            )
            if members:
                yield [m for m, _ in members]
            if cursor == 0:
                return

    # -- running --------------------------------------------------------------------------------------
    #
    # Lost races against RQ's lock-less cleanups: RQ's StartedJobRegistry.cleanup (run without the lock
    # by ``rq info`` and ``registry.count``) reads expired entries, then EXECs seconds later (one fetch
    # per job in between). If our script requeued a job in that window, the EXEC marks it failed (queued
    # and failed at once) or retries it (queued twice). The script records every requeue in the ledger
    # ``rqmaint:requeued:<queue>`` under the calling batch's score; each call first re-checks the
    # previous call's entries, the run's last call is re-checked at its end, and every run starts by
    # re-checking the ledger of the last RECONCILE_WINDOW seconds, so a late EXEC is repaired by the
    # next run at the latest.

    def _script(self, mode: str, tail: list[object]) -> tuple[list[tuple[str, str, str]], int]:
        """One atomic, budgeted call; returns its outcomes and how many members it looked at (fewer
        than it was given when its work budget ran out: the caller sends the rest again)."""
        score = max(time.time(), self._last_score + 1e-6)
        args: list[object] = [
            mode,
            self.queue,
            repr(self.now),
            rq_time(time.time()),
            "1" if self.opts.at_front else "0",
            self.opts.max_requeues,
            COUNTER_TTL,
            *self._reasons,
            INTERMEDIATE_GRACE,
            repr(score),
            repr(self._last_score) if self._last_score else "",
            *tail,
        ]
        raw = scripts.run(self.client, "requeue_abandoned", [], args)
        flat = json.loads(raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw)
        results = [(str(flat[i]), str(flat[i + 1]), str(flat[i + 2])) for i in range(0, len(flat), 3)]
        scanned = int(results.pop()[2]) if results and results[-1][0] == "scanned" else 0
        self._more = bool(results) and results[-1][0] == "more"
        if self._more:
            results.pop()
        if any(outcome == "requeued" for outcome, _, _ in results):
            self._last_score = score  # the next call re-checks this call's requeues
        elif mode != "reconcile":
            self._last_score = 0.0
        return results, scanned

    def _apply(self, results: list[tuple[str, str, str]]) -> int:
        stayed = 0
        for outcome, job_id, detail in results:
            if outcome == "requeued" and not job_id:  # the call's total (the ids are in the ledger)
                self.report.record(outcome, job_id, detail, int(detail))
                continue
            self.report.record(outcome, job_id, detail)
            if outcome in STAYS:
                stayed += 1
        return stayed

    def run(self) -> QueueRequeue:
        started = time.monotonic()
        if self.opts.dry_run:
            self._dry_run()
        else:
            try:
                self.reconcile_recent()
                self._run_started()
                self._run_intermediate()
                if self.opts.include_failed:
                    self._run_failed()
            finally:
                if self._last_score:  # the last call's requeues
                    self._apply(self._script("reconcile", [])[0])
        self.report.duration = time.monotonic() - started
        return self.report

    def _run_started(self) -> None:
        offset = 0
        while (room := self._room()) > 0:
            self.checkpoint()
            results, scanned = self._script("started", [offset, room])
            offset += self._apply(results)  # entries that stay are skipped by the next call
            self._kept_started.update(job_id for outcome, job_id, _ in results if outcome in STAYS)
            if scanned < room and not self._more:
                return

    def _budgeted(self, mode: str, items: list[object], per_item: int = 1) -> None:
        """Send ``items`` to the script, again and again from where each call's budget stopped it."""
        while items:
            self.checkpoint()
            results, scanned = self._script(mode, items)
            self._apply(results)
            if not self._more:
                return
            items = items[max(1, scanned) * per_item :]

    def _run_intermediate(self) -> None:
        ids = self._intermediate_ids()
        for i in range(0, len(ids), self.opts.batch_size):
            room = self._room()
            if room <= 0:
                return
            self._budgeted("intermediate", list(ids[i : i + min(room, self.opts.batch_size)]))

    def _failed_candidates(self, ids: list[bytes]) -> list[tuple[bytes, str]]:
        pipe = self.client.pipeline(transaction=False)
        for job_id in ids:
            jid = decode(job_id) or ""
            pipe.hget(keys.job(jid), "status")
            pipe.hget(keys.job(jid), "exc_info")
            pipe.xrevrange(keys.results(jid), "+", "-", count=1)
        replies = pipe.execute()
        out = []
        for n, job_id in enumerate(ids):
            status, exc_info, newest = replies[3 * n : 3 * n + 3]
            if status != b"failed":
                continue
            marker = abandoned_marker(exc_info, newest)
            if marker is not None:
                out.append((job_id, marker))
        return out

    def _run_failed(self) -> None:
        for ids in self._failed_batches():
            room = self._room()
            if room <= 0:
                return
            self.checkpoint()
            candidates = self._failed_candidates(ids)[:room]
            candidates = self._not_kept_started(candidates)
            if candidates:
                tail: list[object] = []
                for member, expect in candidates:
                    tail += [member, expect.encode("latin-1")]
                self._budgeted("failed", tail, per_item=2)

    def _not_kept_started(self, candidates: list[tuple[bytes, str]]) -> list[tuple[bytes, str]]:
        """A failed job this run left in the started registry (e.g. status failed there too) is not
        requeued from the failed registry: it would then be queued and started at once."""
        keep = []
        for member, expect in candidates:
            if (decode(member) or "") in self._kept_started:
                self.report.record("in_started", decode(member) or "", "")
            else:
                keep.append((member, expect))
        return keep

    def reconcile_recent(self) -> None:
        """The start of a run: forget ledger entries past the window, then re-check the rest."""
        key = keys.requeued(self.queue)
        self.client.zremrangebyscore(key, "-inf", self.now - RECONCILE_WINDOW)
        start = 0
        while True:
            chunk = cast(list[bytes], self.client.zrange(key, start, start + RECONCILE_CHUNK - 1))
            if not chunk:
                return
            start += len(chunk)
            self._budgeted("reconcile", list(chunk))

    # -- dry run --------------------------------------------------------------------------------------
    def _dry_run(self) -> None:
        """Classify candidates read-only (plain reads, no script), mirroring the script's checks."""
        batches = self._started_batches()
        try:
            rows = next(batches)
            while True:
                self.checkpoint()
                for ln in self._classify_started(rows):
                    self._dry_add(ln)
                # Nothing is removed in a dry run: every row stays, so move past all of them.
                rows = batches.send(len(rows))
        except StopIteration:
            pass
        ids = self._intermediate_ids()
        for i in range(0, len(ids), self.opts.batch_size):
            if self._room() <= 0:
                break
            for ln in self._classify_intermediate(ids[i : i + self.opts.batch_size]):
                self._dry_add(ln)
        if self.opts.include_failed:
            for ids_batch in self._failed_batches():
                room = self._room()
                if room <= 0:
                    break
                cands = self._not_kept_started(self._failed_candidates(ids_batch)[:room])
                for ln in self._classify_failed([m for m, _ in cands]):
                    self._dry_add(ln)

    def _dry_add(self, ln: JobLine) -> None:
        action = ln.action
        outcome = {"requeue": "requeued", "give_up": "given_up"}.get(action, action.removeprefix("skip:"))
        self.report.record(outcome, ln.job_id, "")
        if len(self.report.jobs) < MAX_LISTED:
            self.report.jobs.append(ln)

    def _job_fields(self, ids: list[str]) -> list[list[bytes | None]]:
        pipe = self.client.pipeline(transaction=False)
        for jid in ids:
            pipe.hmget(keys.job(jid), ["status", "origin", "worker_name", "description"])
            pipe.exists(keys.job(jid))
            pipe.get(keys.abandons(jid))
        replies = pipe.execute()
        return [[*replies[3 * i], replies[3 * i + 1], replies[3 * i + 2]] for i in range(len(ids))]

    def _decide(self, count: int) -> str:
        return "give_up" if count + 1 > self.opts.max_requeues else "requeue"

    def _origin_problem(self, origin: str | None) -> str | None:
        if not origin:
            return "skip:no_origin"
        if origin != self.queue and not self.client.sismember(keys.queues(), keys.queue(origin)):
            return "skip:unknown_origin"
        return None

    def _already_queued(self, jid: str, origin: str, status: str | None) -> bool | None:
        """The script's queued_on(): a started job only on a list of up to STARTED_CHECK; otherwise
        within QUEUED_SCAN entries from either end of the list; None when that cannot tell."""
        qkey = keys.queue(origin)
        length = int(self.client.llen(qkey))
        if length == 0:
            return False
        if status == "started":
            return length <= STARTED_CHECK and self.client.lpos(qkey, jid) is not None
        if length <= 2 * QUEUED_SCAN:
            return self.client.lpos(qkey, jid) is not None
        if self.client.lpos(qkey, jid, maxlen=QUEUED_SCAN) is not None:
            return True
        if self.client.lpos(qkey, jid, rank=-1, maxlen=QUEUED_SCAN) is not None:
            return True
        return None

    @staticmethod
    def _queued_action(queued: bool | None) -> str | None:
        if queued is None:
            return "skip:unverified"
        return "skip:already_queued" if queued else None

    def _busy_elsewhere(self, pairs: list[tuple[str, str]]) -> list[bool]:
        """The script's other_entries() for many (job id, member) pairs, in two round trips: is another
        started entry of the job (through rq:executions:<id>, or the plain id) still current?"""
        wip = keys.started(self.queue)
        pipe = self.client.pipeline(transaction=False)
        for jid, member in pairs:
            pipe.zrange(keys.executions(jid), 0, -1)
            pipe.zscore(wip, jid) if member != jid else pipe.echo("")
        first = pipe.execute()
        others: list[list[str]] = []
        pipe = self.client.pipeline(transaction=False)
        for n, (jid, member) in enumerate(pairs):
            names = [f"{jid}:{decode(e)}" for e in first[2 * n]]
            others.append([o for o in names if o != member])
            for other in others[-1]:
                pipe.zscore(wip, other)
        scores = iter(pipe.execute() if any(others) else [])
        busy = []
        for n, (jid, member) in enumerate(pairs):
            plain = first[2 * n + 1] if member != jid else None
            current = [float(sc) > self.now for sc in (next(scores) for _ in others[n]) if sc is not None]
            busy.append(any(current) or (isinstance(plain, float) and plain > self.now))
        return busy

    def _classify_started(self, rows: list[tuple[bytes, float]]) -> list[JobLine]:
        members = [decode(m) or "" for m, _ in rows]
        ids = [m.split(":", 1)[0] for m in members]
        fields = self._job_fields(ids)
        pipe = self.client.pipeline(transaction=False)
        for m, jid in zip(members, ids, strict=True):
            exec_id = m.split(":", 1)[1] if ":" in m else ""
            pipe.hget(keys.execution(jid, exec_id), "worker_name") if exec_id else pipe.echo("")
        exec_workers = pipe.execute()
        workers = [decode(exec_workers[n]) or decode(fields[n][2]) or "" for n in range(len(ids))]
        wpipe = self.client.pipeline(transaction=False)
        for w in workers:
            wk = keys.worker(w) if w else "rqmaint:nonexistent"
            wpipe.exists(wk)
            wpipe.hmget(wk, ["death", "current_job", "state"])
            wpipe.exists(wk + ":executions")
        wr = wpipe.execute()
        busy = self._busy_elsewhere(list(zip(ids, members, strict=True)))
        out = []
        for n, ((_member, score), jid) in enumerate(zip(rows, ids, strict=True)):
            member = members[n]
            status, origin_raw, _wn, desc, exists, counter = fields[n]
            w = workers[n]
            w_exists, (death, current, state), execs_exist = wr[3 * n], wr[3 * n + 1], wr[3 * n + 2]
            count = int(counter or 0)
            st = decode(status)
            origin = decode(origin_raw)
            if jid in self._dry_moved:
                action = "skip:already_queued"  # the script requeued it for an earlier entry
            elif not _valid_id(jid):
                action = "skip:malformed"
            elif status is None and not exists:
                action = "skip:missing_job"
            elif st not in ("started", "queued"):
                action = "skip:status"
            else:
                action = self._origin_problem(origin) or ""
                if not action:
                    assert origin is not None
                    live = False
                    if w and w_exists and death is None:
                        if current is not None:
                            live = decode(current) == jid
                        elif state == b"busy":
                            live = (not execs_exist) or bool(
                                self.client.sismember(keys.worker(w) + ":executions", member)
                            )
                    if live:
                        action = "skip:live_worker"
                    elif busy[n]:
                        action = "skip:in_started"
                    else:
                        action = self._queued_action(self._already_queued(jid, origin, st)) or self._decide(
                            count
                        )
            out.append(
                JobLine(jid, self.queue, "started", action, decode(desc), _iso(score), w or None, count)
            )
            if action.startswith("skip:") and action != "skip:already_queued":
                self._kept_started.add(jid)
            if action in ("requeue", "give_up", "skip:already_queued"):
                self._dry_moved.add(jid)
        return out

    def _classify_intermediate(self, raw_ids: list[bytes]) -> list[JobLine]:
        ids = [decode(j) or "" for j in raw_ids]
        fields = self._job_fields(ids)
        pipe = self.client.pipeline(transaction=False)
        for jid in ids:
            pipe.get(keys.first_seen(self.queue, jid))
            pipe.zscore(keys.started(self.queue), jid)
            pipe.zrange(keys.executions(jid), 0, -1)
        replies = pipe.execute()
        wip_check = self.client.pipeline(transaction=False)
        execs_per_job = [replies[3 * n + 2] for n in range(len(ids))]
        for jid, execs in zip(ids, execs_per_job, strict=True):
            for e in execs:
                wip_check.zscore(keys.started(self.queue), f"{jid}:{decode(e)}")
        wip_scores = iter(wip_check.execute())
        out = []
        for n, jid in enumerate(ids):
            status, origin_raw, w, desc, exists, counter = fields[n]
            seen, plain_score = replies[3 * n], replies[3 * n + 1]
            in_started = plain_score is not None
            for _ in execs_per_job[n]:
                in_started = (next(wip_scores) is not None) or in_started
            count = int(counter or 0)
            seen_at = lua_number(decode(seen), self.now) if seen else None
            origin = decode(origin_raw)
            st = decode(status)
            if jid in self._dry_moved:
                action = "gone"  # the script took it off the intermediate list already
            elif not _valid_id(jid):
                action = "skip:malformed"
            elif in_started:
                action = "skip:in_started"
            elif seen_at is None:
                action = "skip:first_seen"
            elif self.now - seen_at <= INTERMEDIATE_GRACE:
                action = "skip:not_due"
            elif not exists:
                action = "skip:missing_job"
            elif st not in ("started", "queued"):
                action = "skip:status"
            else:
                action = self._origin_problem(origin) or ""
                if not action:
                    assert origin is not None
                    action = self._queued_action(self._already_queued(jid, origin, st)) or self._decide(count)
            out.append(
                JobLine(
                    jid, self.queue, "intermediate", action, decode(desc), _iso(seen_at), decode(w), count
                )
            )
            if action in ("requeue", "give_up", "skip:already_queued"):
                self._dry_moved.add(jid)
        return out

    def _classify_failed(self, raw_ids: list[bytes]) -> list[JobLine]:
        ids = [decode(j) or "" for j in raw_ids]
        fields = self._job_fields(ids)
        busy = self._busy_elsewhere([(jid, "") for jid in ids])
        out = []
        for n, jid in enumerate(ids):
            _status, origin_raw, w, desc, _exists, counter = fields[n]
            count = int(counter or 0)
            origin = decode(origin_raw)
            if jid in self._dry_moved:
                action = "gone"
            elif not _valid_id(jid):
                action = "skip:malformed"
            else:
                action = self._origin_problem(origin) or ""
                if not action:
                    assert origin is not None
                    if busy[n]:
                        action = "skip:in_started"
                    else:
                        queued = self._already_queued(jid, origin, "failed")
                        action = self._queued_action(queued) or self._decide(count)
            out.append(JobLine(jid, self.queue, "failed", action, decode(desc), None, decode(w), count))
            if action in ("requeue", "give_up"):
                self._dry_moved.add(jid)
        return out


_ID = re.compile(r"[A-Za-z0-9_.-]+")  # the script's '^[%w_%-%.]+$' (Lua's %w is ASCII-only)
_LUA_DECIMAL = re.compile(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*")
_LUA_HEX = re.compile(r"\s*[-+]?0[xX][0-9a-fA-F]+\s*")
_LUA_SPECIAL = re.compile(r"\s*[-+]?(inf|infinity|nan)\s*", re.IGNORECASE)


def _valid_id(job_id: str) -> bool:
    return _ID.fullmatch(job_id) is not None


def lua_number(text: str | None, default: float) -> float:
    """The script's num_or(): Lua's tonumber (C strtod: decimal, hex, inf, nan), then anything not
    finite or beyond 1e12 in size gives ``default``."""
    if text is None:
        return default
    if _LUA_DECIMAL.fullmatch(text) or _LUA_SPECIAL.fullmatch(text):
        value = float(text)
    elif _LUA_HEX.fullmatch(text):
        value = float(int(text.strip(), 16))
    else:
        return default
    if value != value or not -1e12 < value < 1e12:
        return default
    return value


def requeue_queue(
    client: redis.Redis,
    queue: str,
    opts: RequeueOptions,
    wait: float,
    lock_ttl: float,
    stop: Callable[[], None] | None = None,
) -> QueueRequeue:
    """Hold the queue's lock (like ``clean``) and requeue its abandoned jobs; a dry run takes no lock.

    ``stop()`` runs at every safe point (between batches) and may raise to end the run early."""
    if opts.dry_run:
        return Requeuer(client, queue, opts, checkpoint=stop or (lambda: None)).run()
    with lock.held(client, queue, lock_ttl, wait) as lease:
        if lease is None:
            report = QueueRequeue(queue, outcome="skipped-locked")
            report.holder = lock.inspect(client, [queue])[0]
            return report

        def check() -> None:
            if stop is not None:
                stop()
            lease.check()

        requeuer = Requeuer(client, queue, opts, checkpoint=check)
        try:
            report = requeuer.run()
            if report.outcome == "done":  # for watch's metrics (health.collect)
                health.record_success(client, queue, [health.KIND_REQUEUE])
            return report
        except lock.LeaseLost:
            requeuer.report.outcome = "lease-lost"
            return requeuer.report
        except lock.StopRequested:
            requeuer.report.outcome = "stopped"
            return requeuer.report
