"""The options shared by several commands, declared once (names, metavars, help, ranges).

The options every command takes (``-u/--url``, ``--timeout``, ``--json``, ``--debug``) are in
:mod:`rqmaint.cli.context`, which parses them into the shared context.
"""

from __future__ import annotations

import math
from typing import Annotated

import typer

from rqmaint.cli.completion import complete_queue

#: Upper bounds of the numeric options: anything above is a typo, and would overflow a socket
#: timeout, a Redis EX, or a sleep (inf would never return).
MAX_SECONDS = 86400.0
MAX_COUNT = 1_000_000_000

#: Defaults of the core, repeated here so that parsing the command line imports none of the core
#: (tests/commands/test_options.py checks they agree).
DEFAULT_TIMEOUT = 5.0  # rqmaint.connection.DEFAULT_TIMEOUT
DEFAULT_LEASE = 60.0  # rqmaint.lock.DEFAULT_LEASE
DEFAULT_MAX_REQUEUES = 3  # rqmaint.requeue.DEFAULT_MAX_REQUEUES
DEFAULT_BATCH = 500  # rqmaint.requeue.DEFAULT_BATCH


def finite(value: float | None) -> float | None:
    """Reject nan (which passes every range check) and inf: exit 2 before anything touches Redis."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number of seconds.")
    return value


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
        callback=finite,
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
        callback=finite,
    ),
]
