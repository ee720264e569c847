"""The runner: proposes candidates to the requeue scripts in bounded calls and builds the report.

Python only says where to look (offsets, ids read in bounded chunks); each script call re-checks every
job and moves it atomically, so a SIGKILL at any instant leaves every job in exactly one place. A dry
run sends the same scripts with writes off (``EVALSHA_RO`` on the no-writes variant where the server
has it), so the dry run and the real run cannot disagree. Nothing is unpickled.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, cast

import redis

from rqmaint import health, keys, lock, scripts
from rqmaint.clock import redis_now as redis_now
from rqmaint.lock import decode
from rqmaint.requeue import bindings
from rqmaint.requeue.abandoned import abandoned_marker, decode_failure, failure_text_is_abandonment
from rqmaint.requeue.outcome import SETTLED, STAYS, Outcome
from rqmaint.requeue.report import MAX_LISTED, JobLine, QueueRequeue, action_of

DEFAULT_MAX_REQUEUES = 3
DEFAULT_BATCH = 500
RECONCILE_WINDOW = 900  # seconds a requeue stays in the ledger <own>requeued:<queue> (RQ's lock: 899)
RECONCILE_CHUNK = 500  # ledger entries read per round trip at the start of a run
FAILED_SCAN = 100  # failed-registry entries per ZSCAN step (two reads per entry, in Lua: ~1-4 ms a step)
INTERMEDIATE_SCAN = 10000  # explain looks for a job within this many intermediate entries (bounded)
TRIM_CHUNK = 1000  # expired ledger entries removed per command (bounded, however large the ledger)


@dataclass
class RequeueOptions:
    dry_run: bool = False
    at_front: bool = False
    include_failed: bool = False
    max_requeues: int = DEFAULT_MAX_REQUEUES
    limit: int | None = None
    batch_size: int = DEFAULT_BATCH
    by: str = "requeue-abandoned"  # the command, for the audit trail (watch, clean, worker)


def _iso(ts: str | float | None) -> str | None:
    """ISO time, or None for what is not a representable time (garbage, infinities)."""
    try:
        value = float(ts) if ts not in (None, "") else None
        if value is None:
            return None
        return datetime.fromtimestamp(value, timezone.utc).isoformat(timespec="seconds")
    except (ValueError, OverflowError, OSError, TypeError):
        return None


class Requeuer:
    """Runs one queue's requeue (or its dry run) in budgeted script calls."""

    def __init__(
        self,
        client: redis.Redis,
        queue: str,
        opts: RequeueOptions,
        checkpoint: Callable[[], None] = lambda: None,
        now: float | None = None,
    ) -> None:
        self.client = client
        self.queue = queue
        self.opts = opts
        self.checkpoint = checkpoint
        self.now = redis_now(client) if now is None else now
        self._t0 = time.monotonic()
        self.report = QueueRequeue(queue, outcome="would-requeue" if opts.dry_run else "done")
        self._reasons = bindings.give_up_reasons(opts.max_requeues, self.now)
        self._token = os.urandom(6).hex()
        self._seq = 0
        self._score = 0.0
        self._last_score: float | None = None  # ledger score of the last call that requeued
        self._settled: set[str] = set()  # the per-run set: jobs settled (never counted twice)
        self._kept_started: set[str] = set()  # jobs whose started entries this run left in place
        self._listed: list[tuple[JobLine, str]] = []  # dry run: rows to complete (job id)

    # -- one call -------------------------------------------------------------------------------------
    def _room(self) -> int:
        if self.opts.limit is None:
            return self.opts.batch_size
        done = self.report.requeued + self.report.given_up
        return max(0, min(self.opts.batch_size, self.opts.limit - done))

    def _clock(self) -> float:
        return self.now + (time.monotonic() - self._t0)

    def _call(self, mode: str, tail: list[Any], source: str) -> bindings.CallResult:
        result = bindings.call(self.client, mode, self._args(), tail)
        if self.opts.dry_run:
            self.report.read_only_guarantee = scripts.read_only_supported(self.client)
        requeued = any(o is Outcome.REQUEUED for o, _, _, _ in result.outcomes)
        if not self.opts.dry_run:
            if requeued:
                self._last_score = self._score  # the next call re-checks this call's requeues
            elif mode != "reconcile":
                self._last_score = None
        self._apply(result, source)
        return result

    def _apply(self, result: bindings.CallResult, source: str) -> None:
        for outcome, job_id, detail, since in result.outcomes:
            if job_id and job_id in self._settled and outcome is not Outcome.RECONCILED:
                continue  # e.g. another entry of a job this run already settled: counted once
            if outcome in SETTLED and (self.opts.dry_run or source != "started"):
                # A real run removes what it settles, so a later call cannot find the job again where
                # it was (a second started entry of it is "already_queued"): only the dry run, which
                # removes nothing, and the later modes need the set (memory stays flat at any size).
                self._settled.add(job_id)
            if source == "started" and outcome in STAYS:
                self._kept_started.add(job_id)
            self.report.record(outcome, job_id, detail)
            if self.opts.dry_run and len(self._listed) < MAX_LISTED and outcome is not Outcome.RACED:
                line = JobLine(job_id, self.queue, source, action_of(outcome), None, _iso(since), None, 0)
                self._listed.append((line, job_id))

    def _key_ok(self, key: str, wanted: str) -> bool:
        """A registry or list the runner reads itself has its type (or does not exist); else the queue
        gets a wrong_type problem and that part of the run is skipped (the rest goes on)."""
        kind = decode(cast(bytes, self.client.type(key))) or "none"
        if kind in ("none", wanted):
            return True
        self.report.record(Outcome.WRONG_TYPE, "", key)
        return False

    @staticmethod
    def _stayed(result: bindings.CallResult) -> int:
        return sum(1 for o, _, _, _ in result.outcomes if o in STAYS)

    # -- running --------------------------------------------------------------------------------------
    #
    # Lost races against RQ's lock-less cleanups: RQ's StartedJobRegistry.cleanup (run without the lock
    # by ``rq info`` and ``registry.count``) reads expired entries, then EXECs seconds later. If our
    # script requeued a job in that window, the EXEC marks it failed (queued and failed at once) or
    # retries it (queued twice). The scripts record every requeue in the ledger <own>requeued:<queue>
    # under the call's score; each call first re-checks the previous call's entries, the run's last call
    # is re-checked at its end, and every run starts by re-checking the ledger of the last
    # RECONCILE_WINDOW seconds, so a late EXEC is repaired by the next run at the latest.
    #
    # Lost replies: every call has an id; what it wrote is recorded under that id (<own>calls:<queue>),
    # and a re-send of the same call (redis-py retries a command whose reply was lost) first reads that
    # record back into its reply, so the report is exact however many replies were lost.

    def run(self) -> QueueRequeue:
        started = time.monotonic()
        try:
            self.reconcile_recent()
            self._run_started()
            self._run_intermediate()
            if self.opts.include_failed:
                self._run_failed()
        finally:
            if self._last_score is not None:  # the last call's requeues
                self._call("reconcile", [], "reconcile")
            if self.opts.dry_run:
                self._complete_listing()
        self.report.duration = time.monotonic() - started
        return self.report

    def _run_started(self) -> None:
        offset = 0
        while (room := self._room()) > 0:
            self.checkpoint()
            result = self._call("started", ["range", offset, room], "started")
            # entries that stay are skipped by the next call; a dry run removes nothing
            offset += result.scanned if self.opts.dry_run else self._stayed(result)
            if result.scanned < room and not result.more:
                return

    def _budgeted(
        self, mode: str, items: list[Any], source: str, per_item: int = 1, head: int = 0
    ) -> bindings.CallResult:
        """Send ``items`` (after ``head`` fixed arguments) to the script, again and again from where each
        call's budget stopped it; the outcomes of every call together."""
        fixed, items = items[:head], items[head:]
        total = bindings.CallResult()
        while items:
            self.checkpoint()
            result = self._call(mode, fixed + items, source)
            total.outcomes += result.outcomes
            total.scanned += result.scanned
            if not result.more:
                break
            items = items[max(1, result.scanned) * per_item :]
        return total

    def _run_intermediate(self) -> None:
        key = keys.intermediate(self.queue)
        if not self._key_ok(key, "list"):
            return
        offset = 0
        while (room := self._room()) > 0:
            ids = cast(list[bytes], self.client.lrange(key, offset, offset + room - 1))
            if not ids:
                return
            window = offset + len(ids)  # the script re-finds each id within the list's first entries
            result = self._budgeted("intermediate", [window, *ids], "intermediate", head=1)
            if any(o is Outcome.NAME_COLLISION for o, _, _, _ in result.outcomes):
                return
            offset += len(ids) if self.opts.dry_run else self._stayed(result)
            if len(ids) < room:
                return

    def _args(self) -> bindings.CallArgs:
        self._seq += 1
        self._score = max(self._clock(), self._score + 1e-6)
        return bindings.CallArgs(
            queue=self.queue,
            now=self.now,
            enqueued_at=bindings.rq_time(self._clock()),
            dry_run=self.opts.dry_run,
            at_front=self.opts.at_front,
            max_requeues=self.opts.max_requeues,
            reasons=self._reasons,
            call_id=f"{self._token}.{self._seq}",
            score=self._score,
            previous_score=self._last_score,
            by=self.opts.by,
        )

    def _failed_candidates(self, found: list[tuple[bytes, str, bytes, bytes]]) -> list[tuple[bytes, str]]:
        """The abandonments among the short failure records the scan returned (decompressed here: Lua
        has no zlib), as (id, expectation) for the take calls."""
        out = []
        for job_id, kind, entry_id, record in found:
            text = decode_failure(record, b64=(kind == "s"))
            if text is None or not failure_text_is_abandonment(text):
                continue
            jid = decode(job_id) or ""
            if jid in self._settled:
                continue
            if jid in self._kept_started:
                self.report.record(Outcome.IN_STARTED, jid, "")
                continue
            expect = "s" + (decode(entry_id) or "") if kind == "s" else "h" + record.decode("latin-1")
            out.append((job_id, expect))
        return out

    def _run_failed(self) -> None:
        """The failed registry, one ZSCAN step per call inside the script (bounded work per call,
        however many entries; only the records short enough to be abandonments come back)."""
        cursor = 0
        if not self._key_ok(keys.failed(self.queue), "zset"):
            return
        while True:
            if self._room() <= 0:
                return
            self.checkpoint()
            cursor, found = bindings.scan_failed(self.client, self._args(), cursor, FAILED_SCAN)
            candidates = self._failed_candidates(found)
            for start in range(0, len(candidates), self.opts.batch_size):
                room = self._room()
                if room <= 0:
                    return
                tail: list[Any] = ["take"]
                for member, expect in candidates[start : start + min(room, self.opts.batch_size)]:
                    tail += [member, expect.encode("latin-1")]
                self._budgeted("failed", tail, "failed", per_item=2, head=1)
            if cursor == 0:
                return

    def _trim(self, key: str) -> None:
        """Drop entries older than the window, TRIM_CHUNK per command."""
        cutoff = self.now - RECONCILE_WINDOW
        while True:
            old = cast(list[bytes], self.client.zrangebyscore(key, "-inf", cutoff, start=0, num=TRIM_CHUNK))
            if not old:
                return
            self.client.zrem(key, *old)
            if len(old) < TRIM_CHUNK:
                return

    def reconcile_recent(self) -> None:
        """The start of a run: forget ledger entries past the window, then re-check the rest."""
        ledger, calls = keys.requeued(self.queue), keys.requeue_calls(self.queue)
        if not self._key_ok(ledger, "zset") or not self._key_ok(calls, "zset"):
            return
        if not self.opts.dry_run:
            self._trim(ledger)
            self._trim(calls)
        start = 0
        while True:
            chunk = cast(list[bytes], self.client.zrange(ledger, start, start + RECONCILE_CHUNK - 1))
            if not chunk:
                return
            start += len(chunk)
            self._budgeted("reconcile", list(chunk), "reconcile")

    def _complete_listing(self) -> None:
        """Dry run: the plain fields of the listed jobs (description, last worker, times requeued)."""
        if not self._listed:
            return
        pipe = self.client.pipeline(transaction=False)
        for _line, jid in self._listed:
            pipe.hmget(keys.job(jid), ["description", "worker_name"])
            pipe.get(keys.abandons(jid))
        replies = pipe.execute(raise_on_error=False)
        for n, (line, _jid) in enumerate(self._listed):
            fields, count = replies[2 * n], replies[2 * n + 1]
            if not isinstance(fields, Exception):
                line.description, line.last_worker = decode(fields[0]), decode(fields[1]) or None
            try:
                line.times_requeued = int(count) if isinstance(count, bytes) else 0
            except ValueError:
                line.times_requeued = 0
            self.report.jobs.append(line)


def started_members(client: redis.Redis, queue: str, job_id: str) -> list[tuple[str, float]]:
    """The job's entries in ``queue``'s started registry with their scores: its plain id (RQ < 2.0)
    and every ``<id>:<execution>`` (the executions index may have expired already: ZSCAN steps of
    bounded size, each a short command, through the registry)."""
    found = []
    score = client.zscore(keys.started(queue), job_id)
    if score is not None:
        found.append((job_id, float(score)))
    pattern = "".join("\\" + c if c in "*?[]\\" else c for c in job_id) + ":*"
    for member_raw, member_score in client.zscan_iter(keys.started(queue), match=pattern, count=1000):
        member = decode(cast(bytes, member_raw)) or ""
        if member.rsplit(":", 1)[0] == job_id:
            found.append((member, float(member_score)))
    return found


def explain_job(
    client: redis.Redis, queue: str, job_id: str, opts: RequeueOptions | None = None
) -> list[JobLine]:
    """What rqmaint would do with one job of ``queue`` right now: the requeue scripts' own verdicts
    (a dry run of exactly the real code) for each place the job sits in (started, intermediate,
    failed registry). An empty list: the job is in none of them."""
    base = opts or RequeueOptions()
    dry = RequeueOptions(
        dry_run=True, at_front=base.at_front, include_failed=True, max_requeues=base.max_requeues
    )
    r = Requeuer(client, queue, dry)
    members = [m for m, _score in started_members(client, queue, job_id)]
    if members:
        r._call("started", ["members", *members], "started")
    position = client.lpos(keys.intermediate(queue), job_id, maxlen=INTERMEDIATE_SCAN)
    if position is not None:
        r._call("intermediate", [cast(int, position) + 1, job_id], "intermediate")
    if client.zscore(keys.failed(queue), job_id) is not None:
        fields = cast(list[bytes | None], client.hmget(keys.job(job_id), ["status", "exc_info"]))
        newest = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrevrange(keys.results(job_id), count=1))
        marker = abandoned_marker(fields[1], newest) if fields[0] == b"failed" else None
        if marker is not None:
            r._call("failed", ["take", job_id, marker.encode("latin-1")], "failed")
    r._complete_listing()
    return r.report.jobs


def requeue_queue(
    client: redis.Redis,
    queue: str,
    opts: RequeueOptions,
    wait: float,
    lock_ttl: float,
    stop: Callable[[], None] | None = None,
) -> QueueRequeue:
    """Hold the queue's lock (like ``clean``) and requeue its abandoned jobs; a dry run takes no lock.

    ``stop()`` runs at every safe point (between calls) and may raise to end the run early."""
    if opts.dry_run:
        return Requeuer(client, queue, opts, checkpoint=stop or (lambda: None)).run()
    with lock.held(client, queue, lock_ttl, wait, by=opts.by) as lease:
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
