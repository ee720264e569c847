"""``rqmaint demo``: a staged incident on a private server."""

from __future__ import annotations

import typer

from rqmaint.cli.context import CliContext, command
from rqmaint.errors import ExitCode


def register(app: typer.Typer) -> None:
    command(app, "demo", only=("json_out", "debug"))(demo_cmd)


def demo_cmd(ctx: CliContext) -> None:
    """Stage a real incident on a private server and watch rqmaint fix it (needs rqmaint[demo] or a
    redis-server on PATH). Touches no other Redis."""
    from rqmaint import demo

    o = ctx.out
    report = demo.run(o.info if ctx.json else o.line, ctx.json)
    if ctx.json:
        o.emit_json(report.as_dict())
    if report.finished != report.jobs:
        raise typer.Exit(int(ExitCode.ATTENTION))
