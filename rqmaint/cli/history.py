"""``rqmaint history``: rqmaint's audit trail (:mod:`rqmaint.audit`), newest first. Read-only."""

from __future__ import annotations

import re
from typing import Annotated

import typer

from rqmaint.cli import render
from rqmaint.cli.completion import complete_queue
from rqmaint.cli.context import CliContext, command
from rqmaint.cli.options import MAX_COUNT

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_SINCE = 366 * 86400.0


def duration(value: str | None) -> float | None:
    """``90``, ``90s``, ``15m``, ``2h``, ``7d`` -> seconds; anything else is a usage error (exit 2)."""
    if value is None:
        return None
    m = _DURATION.fullmatch(value.strip())
    seconds = float(m.group(1)) * _UNITS[m.group(2)] if m else -1.0
    if not 0 < seconds <= MAX_SINCE:
        raise typer.BadParameter(f"{value!r} is not a duration like 90s, 15m, 2h or 7d (at most 366d).")
    return seconds


def register(app: typer.Typer) -> None:
    command(app, "history")(history_cmd)


def history_cmd(
    ctx: CliContext,
    queue: Annotated[
        str | None,
        typer.Option(
            "--queue", "-q", metavar="QUEUE", help="Only this queue.", autocompletion=complete_queue
        ),
    ] = None,
    job: Annotated[str | None, typer.Option("--job", "-j", metavar="ID", help="Only this job.")] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", metavar="DURATION", help="Only the last DURATION (90s, 15m, 2h, 7d)."),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", metavar="N", help="Show at most N entries.", min=1, max=MAX_COUNT)
    ] = 100,
) -> None:
    """What rqmaint changed in RQ's data (requeues, give-ups, repairs, lock releases, cleans), newest
    first, from its capped audit stream. Read-only.

    Example: rqmaint history -q default --since 2h"""
    from rqmaint import audit

    seconds = duration(since)
    found = audit.history(ctx.connect(), queue=queue, job=job, since=seconds, limit=limit)
    if ctx.json:
        ctx.out.emit_json(found.as_dict())
        return
    render.history_table(ctx.out, found)
