"""``rqmaint lock status`` and ``rqmaint lock release``: RQ's per-queue cleaning lock."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from rqmaint.cli import render
from rqmaint.cli.completion import complete_queue
from rqmaint.cli.context import CliContext, command
from rqmaint.cli.options import DryRunOpt, QueuesOpt
from rqmaint.errors import ExitCode, Refused


def register(app: typer.Typer) -> None:
    lock_app = typer.Typer(
        help="Inspect and release RQ's per-queue cleaning lock (rq:clean_registries:<queue>).",
        no_args_is_help=True,
    )
    command(lock_app, "status")(lock_status_cmd)
    command(lock_app, "release")(lock_release_cmd)
    app.add_typer(lock_app, name="lock")


def lock_status_cmd(ctx: CliContext, queue: QueuesOpt = None) -> None:
    """Who holds each queue's cleaning lock, its TTL, and for how long it has been held."""
    from rqmaint import lock

    infos = lock.inspect(ctx.connect(), ctx.queues(queue))
    if ctx.json:
        ctx.out.emit_json({"locks": [i.as_dict() for i in infos]})
        return
    render.lock_table(ctx.out, infos)


def lock_release_cmd(
    ctx: CliContext,
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
) -> None:
    """Release a queue's lock: deleted only if it still holds the value shown (compare-and-delete)."""
    from rqmaint import lock, queues

    o = ctx.out
    client = ctx.connect()
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
        render.release_report(o, doc, f"lock of queue {queue!r} is not held; nothing to release")
        return
    shown = f"lock of queue {queue!r}: held by {info.describe_holder()}, " + (
        "no expiry" if info.no_expiry else f"ttl {info.ttl}s"
    )
    if dry_run:
        doc["reason"] = "dry run"
        render.release_report(o, doc, f"would release {shown}")
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
        render.release_report(
            o,
            doc,
            f"not released: the lock of queue {queue!r} changed since it was read "
            "(expired, released, or taken by another holder); run lock status again",
        )
        raise typer.Exit(int(ExitCode.LOCK_HELD))
    doc["reason"] = "released"
    render.release_report(o, doc, f"released {shown}")
