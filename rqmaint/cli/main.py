"""The rqmaint command line: a thin Typer layer that parses, calls the core, and renders."""

from __future__ import annotations

import math
import sys
from typing import Annotated

import redis
import typer

from rqmaint import __version__, clean, lock, queues, requeue, status, watch
from rqmaint.cli.completion import complete_queue
from rqmaint.cli.completion import init as init_completion
from rqmaint.cli.output import Output, guard, install_signal_handlers
from rqmaint.connection import DEFAULT_TIMEOUT, connect, resolve_url
from rqmaint.errors import ExitCode, Refused

app = typer.Typer(
    name="rqmaint",
    help="Maintenance toolkit for RQ (Redis Queue): see and release the cleaning lock, "
    "run the acquire -> clean -> release cycle, inspect registries.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)
lock_app = typer.Typer(
    help="Inspect and release RQ's per-queue cleaning lock (rq:clean_registries:<queue>).",
    no_args_is_help=True,
)
app.add_typer(lock_app, name="lock")

#: Upper bounds of the numeric options: anything above is a typo, and would overflow a socket
#: timeout, a Redis EX, or a sleep (inf would never return).
MAX_SECONDS = 86400.0
MAX_COUNT = 1_000_000_000


def _finite(value: float | None) -> float | None:
    """Reject nan (which passes every range check) and inf: exit 2 before anything touches Redis."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number of seconds.")
    return value


# Options shared by every command.
UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        "-u",
        metavar="URL",
        help="Redis URL (redis://, rediss://, unix://, redis+sentinel://h1:p1,h2:p2/service/db). "
        "Default: env RQ_REDIS_URL, else REDIS_URL, "
        "else redis://localhost:6379/0.",
        show_default=False,
    ),
]
TimeoutOpt = Annotated[
    float,
    typer.Option(
        "--timeout",
        metavar="SECONDS",
        help="Connect and read timeout, in seconds.",
        min=0.001,
        max=MAX_SECONDS,
        callback=_finite,
    ),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else there.")
]
DebugOpt = Annotated[
    bool, typer.Option("--debug", help="Show tracebacks on errors (passwords still redacted).")
]
QueuesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--queue",
        "-q",
        metavar="QUEUE",
        help="Queue name; repeat for several. Default: every queue in rq:queues.",
        autocompletion=complete_queue,
        show_default=False,
    ),
]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Show what would happen; write nothing.")]
WaitOpt = Annotated[
    float,
    typer.Option(
        "--wait",
        metavar="SECONDS",
        help="Seconds to keep retrying a queue's lock held by another holder.",
        min=0,
        max=MAX_SECONDS,
        callback=_finite,
    ),
]
MaxRequeuesOpt = Annotated[
    int,
    typer.Option(
        "--max-requeues",
        metavar="N",
        help="A job abandoned more often than this goes to the failed registry instead (poison job).",
        min=0,
        max=MAX_COUNT,
    ),
]
LockTtlOpt = Annotated[
    float,
    typer.Option(
        "--lock-ttl",
        metavar="SECONDS",
        help="Lease on the lock, in seconds, renewed in the background while working.",
        min=1,
        max=MAX_SECONDS,
        callback=_finite,
    ),
]


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"rqmaint {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", callback=_version, is_eager=True)
    ] = False,
) -> None:
    """Maintenance toolkit for RQ (Redis Queue)."""


def _open(o: Output, url: str | None, timeout: float) -> redis.Redis:
    o.target = resolve_url(url)
    return connect(o.target, timeout)


def _lock_text(info: lock.LockInfo) -> str:
    if not info.held:
        return "free"
    parts = [info.holder_kind]
    if info.holder_kind == lock.HOLDER_RQMAINT:
        parts.append(f"pid {info.holder_pid}@{info.holder_host}")
    parts.append("no expiry" if info.no_expiry else f"ttl {info.ttl}s")
    if info.held_for is not None:
        parts.append(f"held {info.held_for:.0f}s")
    return " ".join(parts)


@app.command("status")
def status_cmd(
    queue: QueuesOpt = None,
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Registry state per queue. Strictly read-only: never runs RQ's count-time cleanups."""
    o = Output(json_out, debug)
    with guard(o):
        client = _open(o, url, timeout)
        rows = status.collect(client, queues.resolve(client, queue))
        if json_out:
            o.emit_json({"queues": [r.as_dict() for r in rows]})
            return
        o.table(
            "RQ registries" if o.terminal else None,
            ["queue", *status.COUNTS, "lock"],
            [[r.name, *r.counts(), _lock_text(r.lock)] for r in rows],
        )
        if not rows:
            o.info("no queues: rq:queues is empty")


@lock_app.command("status")
def lock_status_cmd(
    queue: QueuesOpt = None,
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Who holds each queue's cleaning lock, its TTL, and for how long it has been held."""
    o = Output(json_out, debug)
    with guard(o):
        client = _open(o, url, timeout)
        infos = lock.inspect(client, queues.resolve(client, queue))
        if json_out:
            o.emit_json({"locks": [i.as_dict() for i in infos]})
            return
        o.table(
            "Cleaning locks" if o.terminal else None,
            ["queue", "held", "ttl", "holder_kind", "holder", "held_for"],
            [
                [
                    i.queue,
                    "yes" if i.held else "no",
                    "none" if i.no_expiry else i.ttl,
                    i.holder_kind,
                    i.describe_holder() if i.held else None,
                    i.held_for,
                ]
                for i in infos
            ],
        )
        if not infos:
            o.info("no queues: rq:queues is empty")


@lock_app.command("release")
def lock_release_cmd(
    queue: Annotated[
        str,
        typer.Option(
            "--queue",
            "-q",
            metavar="QUEUE",
            help="The queue whose lock to release.",
            autocompletion=complete_queue,
        ),
    ],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask; required off a terminal.")] = False,
    dry_run: DryRunOpt = False,
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Release a queue's lock: deleted only if it still holds the value shown (compare-and-delete)."""
    o = Output(json_out, debug)
    with guard(o):
        client = _open(o, url, timeout)
        info = lock.inspect(client, [queue])[0]
        if not info.held and queue not in queues.known_queues(client):
            queues.resolve(client, [queue])  # raises UnknownQueue naming the known queues
        doc: dict[str, object] = {
            "queue": queue,
            "dry_run": dry_run,
            "lock": info.as_dict(),
            "released": False,
        }
        if not info.held:
            doc["reason"] = "not held"
            _release_report(o, doc, f"lock of queue {queue!r} is not held; nothing to release")
            return
        shown = f"lock of queue {queue!r}: held by {info.describe_holder()}, " + (
            "no expiry" if info.no_expiry else f"ttl {info.ttl}s"
        )
        if dry_run:
            doc["reason"] = "dry run"
            _release_report(o, doc, f"would release {shown}")
            return
        if not yes:
            if not sys.stdin.isatty():
                raise Refused(
                    f"refusing to release the lock of queue {queue!r} without --yes off a terminal; "
                    "nothing was changed"
                )
            o.info(shown)
            if not typer.confirm("Release it?", default=False, err=True):
                raise Refused("not released: the operator declined")
        assert info.holder is not None
        # the stored bytes, not their decoded text: a binary value would never compare equal
        released = lock.release_if(client, queue, info.raw if info.raw is not None else info.holder)
        doc["released"] = released
        if not released:
            doc["reason"] = "changed hands"
            _release_report(
                o,
                doc,
                f"not released: the lock of queue {queue!r} changed since it was read "
                "(expired, released, or taken by another holder); run lock status again",
            )
            raise typer.Exit(int(ExitCode.LOCK_HELD))
        doc["reason"] = "released"
        _release_report(o, doc, f"released {shown}")


def _release_report(o: Output, doc: dict[str, object], text: str) -> None:
    if o.json_mode:
        o.emit_json(doc)
    else:
        o.line(text)


@app.command("clean")
def clean_cmd(
    queue: QueuesOpt = None,
    dry_run: DryRunOpt = False,
    wait: WaitOpt = 0.0,
    lock_ttl: LockTtlOpt = lock.DEFAULT_LEASE,
    exception_handler: Annotated[
        list[str] | None,
        typer.Option(
            "--exception-handler",
            metavar="MODULE:FUNCTION",
            help="module:function called for abandoned jobs, as a worker's "
            "exception handlers are; repeatable.",
            show_default=False,
        ),
    ] = None,
    requeue_abandoned: Annotated[
        bool,
        typer.Option(
            "--requeue-abandoned",
            help="First put abandoned jobs back on their queue "
            "(as requeue-abandoned does), so they are not moved to failed.",
        ),
    ] = False,
    max_requeues: MaxRequeuesOpt = requeue.DEFAULT_MAX_REQUEUES,
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Acquire -> clean -> release, per queue: exactly what an RQ worker's maintenance does."""
    from rqmaint import rqcompat

    o = Output(json_out, debug)
    with guard(o):
        handlers = [rqcompat.load_handler(h) for h in exception_handler or []]
        client = _open(o, url, timeout)
        names = queues.resolve(client, queue)
        opts = clean.CleanOptions(dry_run=dry_run, wait=wait, lock_ttl=lock_ttl, handlers=handlers)
        if requeue_abandoned:
            opts.requeue = requeue.RequeueOptions(dry_run=dry_run, max_requeues=max_requeues)
        results = []
        for name in names:
            if not json_out:
                o.info(f"{'planning' if dry_run else 'cleaning'} queue {name!r}")
            results.append(clean.clean_queue(client, name, opts))
        code = _exit_code([r.outcome for r in results], [r.requeue for r in results if r.requeue is not None])
        if json_out:
            o.emit_json({"dry_run": dry_run, "queues": [r.as_dict() for r in results]})
        else:
            o.table(
                ("Would clean (dry run)" if dry_run else "Cleaned") if o.terminal else None,
                [
                    "queue",
                    "outcome",
                    "finished",
                    "failed",
                    "abandoned",
                    "to_failed",
                    "to_retry",
                    "dead_workers",
                    "intermediate_stuck",
                    "holder",
                ],
                [
                    [
                        r.queue,
                        r.outcome,
                        r.plan.finished_expired,
                        r.plan.failed_expired,
                        r.plan.started_abandoned,
                        r.plan.abandoned_to_failed,
                        r.plan.abandoned_to_retry,
                        r.plan.dead_workers,
                        r.plan.intermediate_stuck,
                        r.holder.describe_holder() if r.holder else None,
                    ]
                    for r in results
                ],
            )
        for r in results:
            _lock_outcome(o, r.queue, r.outcome, r.holder)
            if r.error:
                o.err.print(f"rqmaint: error: {o.scrubbed(r.error)}", markup=False)
        if code != ExitCode.OK:
            raise typer.Exit(int(code))


@app.command("requeue-abandoned")
def requeue_abandoned_cmd(
    queue: QueuesOpt = None,
    dry_run: DryRunOpt = False,
    at_front: Annotated[
        bool, typer.Option("--at-front", help="Put the jobs at the head of their queue.")
    ] = False,
    include_failed: Annotated[
        bool,
        typer.Option(
            "--include-failed",
            help="Also requeue jobs RQ already moved to the failed registry "
            "as AbandonedJobError (never jobs that failed by raising).",
        ),
    ] = False,
    max_requeues: MaxRequeuesOpt = requeue.DEFAULT_MAX_REQUEUES,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit", metavar="N", help="Move at most this many jobs per queue.", min=1, max=MAX_COUNT
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", metavar="N", help="Jobs per atomic script call.", min=1, max=10000)
    ] = requeue.DEFAULT_BATCH,
    wait: WaitOpt = 0.0,
    lock_ttl: LockTtlOpt = lock.DEFAULT_LEASE,
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Put jobs whose worker died mid-job back on their queue, atomically and exactly once."""
    o = Output(json_out, debug)
    with guard(o):
        client = _open(o, url, timeout)
        names = queues.resolve(client, queue)
        opts = requeue.RequeueOptions(
            dry_run=dry_run,
            at_front=at_front,
            include_failed=include_failed,
            max_requeues=max_requeues,
            limit=limit,
            batch_size=batch_size,
        )
        reports = []
        for name in names:
            if not json_out:
                o.info(f"{'looking at' if dry_run else 'requeueing abandoned jobs of'} queue {name!r}")
            reports.append(requeue.requeue_queue(client, name, opts, wait, lock_ttl))
        _render_requeue(o, dry_run, reports)
        code = _exit_code([r.outcome for r in reports], reports)
        if code != ExitCode.OK:
            raise typer.Exit(int(code))


def _exit_code(outcomes: list[str], reports: list[requeue.QueueRequeue]) -> ExitCode:
    """The run's exit code, most serious first: an RQ error on a queue, a lock held by another holder,
    then items that need attention (jobs given up, bad data skipped)."""
    if "error" in outcomes:
        return ExitCode.ERROR
    if "skipped-locked" in outcomes or "lease-lost" in outcomes:
        return ExitCode.LOCK_HELD
    if any(r.given_up or r.problem_count for r in reports):
        return ExitCode.ATTENTION
    return ExitCode.OK


def _render_requeue(o: Output, dry_run: bool, reports: list[requeue.QueueRequeue]) -> None:
    if o.json_mode:
        o.emit_json({"dry_run": dry_run, "queues": [r.as_dict() for r in reports]})
        return
    if dry_run:
        jobs = [j for r in reports for j in r.jobs]
        o.table(
            "Abandoned jobs (dry run)" if o.terminal else None,
            [
                "job_id",
                "queue",
                "from",
                "would",
                "description",
                "abandoned_since",
                "last_worker",
                "times_requeued",
            ],
            [
                [
                    j.job_id,
                    j.queue,
                    j.source,
                    j.action,
                    j.description,
                    j.abandoned_since,
                    j.last_worker,
                    j.times_requeued,
                ]
                for j in jobs
            ],
        )
    o.table(
        ("Would requeue (dry run)" if dry_run else "Requeued") if o.terminal else None,
        ["queue", "outcome", "requeued", "given_up", "skipped", "live_worker", "already_queued", "raced"],
        [
            [
                r.name,
                r.outcome,
                r.requeued,
                r.given_up,
                r.skipped,
                r.counts.get("live_worker", 0),
                r.already_queued,
                r.raced,
            ]
            for r in reports
        ],
    )
    for r in reports:
        for p in r.problems:
            o.info(f"queue {r.name!r}: skipped job {p['job_id']}: {p['reason']}")
        if r.given_up:
            o.info(
                f"queue {r.name!r}: gave up on {r.given_up} job(s) abandoned too often (poison?): "
                f"{', '.join(r.given_up_jobs[:10])}; they are in the failed registry"
            )
        _lock_outcome(o, r.name, r.outcome, r.holder)


def _lock_outcome(o: Output, queue: str, outcome: str, holder: lock.LockInfo | None) -> None:
    if outcome == "skipped-locked":
        who = holder.describe_holder() if holder else "another holder"
        o.info(f"skipped queue {queue!r}: its lock is held by {who}; retry later or raise --wait")
    elif outcome == "lease-lost":
        o.info(
            f"stopped on queue {queue!r} at a safe point: the lock was lost (expired or taken); "
            "raise --lock-ttl if Redis is slow"
        )


@app.command("watch")
def watch_cmd(
    queue: QueuesOpt = None,
    interval: Annotated[
        float,
        typer.Option(
            "--interval",
            metavar="SECONDS",
            help="Seconds between cycles.",
            min=0.1,
            max=MAX_SECONDS,
            callback=_finite,
        ),
    ] = 30.0,
    do_clean: Annotated[
        bool, typer.Option("--clean", help="Run the acquire -> clean -> release cycle every interval.")
    ] = False,
    do_requeue: Annotated[
        bool,
        typer.Option(
            "--requeue-abandoned",
            help="Requeue abandoned jobs every interval (inside the clean cycle when --clean is given too).",
        ),
    ] = False,
    max_requeues: MaxRequeuesOpt = requeue.DEFAULT_MAX_REQUEUES,
    lock_ttl: LockTtlOpt = lock.DEFAULT_LEASE,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            metavar="PORT",
            help="Serve Prometheus metrics on this port (needs rqmaint[metrics]).",
            min=1,
            max=65535,
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option("--metrics-host", metavar="HOST", help="Address the metrics server binds.")
    ] = "127.0.0.1",
    max_cycles: Annotated[
        int | None,
        typer.Option(
            "--max-cycles",
            metavar="N",
            help="Stop after N cycles (default: run until SIGTERM/SIGINT).",
            min=1,
            max=MAX_COUNT,
        ),
    ] = None,
    url: UrlOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Dashboard and daemon: show registry state every interval, optionally cleaning and requeueing.

    View-only by default. Off a terminal it prints one line per cycle (JSON lines with --json).
    SIGTERM/SIGINT stop it at a safe point, with every lock released, exit 0. With --max-cycles it
    exits 1 if the last cycle could not reach Redis."""
    from rqmaint.cli import watching

    o = Output(json_out, debug)
    with guard(o):
        reached = watching.run(
            o,
            url=url,
            timeout=timeout,
            opts=watch.WatchOptions(
                queues=queue or None,
                interval=interval,
                clean=do_clean,
                requeue_abandoned=do_requeue,
                max_requeues=max_requeues,
                lock_ttl=lock_ttl,
            ),
            metrics_port=metrics_port,
            metrics_host=metrics_host,
            max_cycles=max_cycles,
        )
        if not reached:  # --max-cycles ended on a cycle that could not reach Redis
            raise typer.Exit(int(ExitCode.ERROR))


@app.command("demo")
def demo_cmd(
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Stage a real incident on a private server and watch rqmaint fix it (needs rqmaint[demo] or a
    redis-server on PATH). Touches no other Redis."""
    from rqmaint import demo

    o = Output(json_out, debug)
    with guard(o):
        report = demo.run(o.info if json_out else o.line, json_out)
        if json_out:
            o.emit_json(report.as_dict())
        if report.finished != report.jobs:
            raise typer.Exit(int(ExitCode.ATTENTION))


def main() -> None:
    install_signal_handlers()
    init_completion()
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
