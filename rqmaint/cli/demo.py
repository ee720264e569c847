"""``rqmaint demo``: a staged incident on a private server."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from rqmaint.cli.context import CliContext, command
from rqmaint.cli.tables import duration
from rqmaint.errors import ExitCode


def register(app: typer.Typer) -> None:
    command(app, "demo", only=("json_out", "debug"))(demo_cmd)


def demo_cmd(
    ctx: CliContext,
    real_time: Annotated[
        bool,
        typer.Option(
            "--real-time",
            help="Wait, with a countdown, the ~90 s until RQ's deadline for the killed workers' jobs "
            "passes, instead of fast-forwarding it.",
        ),
    ] = False,
) -> None:
    """Stage a real incident on a private server and watch rqmaint fix it (needs rqmaint[demo] or a
    redis-server on PATH). Touches no other Redis.

    Example: pip install 'rqmaint[demo]' && rqmaint demo"""
    from rqmaint import demo

    o = ctx.out
    terminal = o.terminal and not ctx.json
    tty_err = sys.stderr.isatty()

    def show(text: str) -> None:  # a command's own output, tables and colours included
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def countdown(left: float) -> None:
        if tty_err:
            sys.stderr.write(f"\r# abandoned in {duration(left)}   " + ("\n" if left <= 0 else ""))
            sys.stderr.flush()
        elif left <= 0 or int(left) % 15 == 0:
            o.info(f"# abandoned in {duration(left)}")

    report = demo.run(
        o.info if ctx.json else o.line,
        ctx.json,
        real_time=real_time,
        terminal=terminal,
        width=o.out.width if terminal else 120,
        show=o.info if ctx.json else show,
        countdown=countdown,
    )
    if ctx.json:
        o.emit_json(report.as_dict())
    if report.finished != report.jobs:
        raise typer.Exit(int(ExitCode.ATTENTION))
