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
DEFAULT_JOB_MONITORING_INTERVAL = 30.0  # rqmaint.health.JOB_MONITORING_INTERVAL


def finite(value: float | None) -> float | None:
    """Reject nan (which passes every range check) and inf: exit 2 before anything touches Redis."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number of seconds.")
    return value


def split_queues(values: list[str] | None) -> list[str] | None:
    """``-q a,b -q c`` -> ``[a, b, c]``; an empty name (``-q ""``, ``-q a,,b``) is a usage error."""
    if values is None:
        return None
    names: list[str] = []
    for value in values:
        for name in value.split(","):
            if not name.strip():
                raise typer.BadParameter(
                    f"empty queue name in {value!r}; name a queue, or leave -q out for all."
                )
            if name not in names:
                names.append(name)
    return names


def queue_names(option: list[str] | None, arguments: list[str] | None) -> list[str] | None:
    """The queues named by ``-q`` and by position, in order, each once; None if none was named."""
    names = [*(option or []), *(n for n in arguments or [] if n not in (option or []))]
    return names or None


QueuesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--queue",
        "-q",
        metavar="QUEUE",
        help="Queue name; repeat or separate with commas for several (-q a,b). "
        "Default: every queue in rq:queues.",
        autocompletion=complete_queue,
        show_default=False,
        callback=split_queues,
    ),
]
QueuesArg = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="[QUEUE]...",
        help="Queue names, as rq info takes them (the same as -q).",
        autocompletion=complete_queue,
        show_default=False,
        callback=split_queues,
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


# RQ's own options where RQ's code runs (clean, watch --clean), named as rq worker / rq info name them.
SerializerOpt = Annotated[
    str | None,
    typer.Option(
        "--serializer",
        "-S",
        metavar="SERIALIZER",
        help="The deployment's serializer, as given to rq worker: json, pickle, or a dotted path "
        "(default: RQ's pickle serializer).",
        show_default=False,
    ),
]
JobClassOpt = Annotated[
    str | None,
    typer.Option(
        "--job-class",
        "-j",
        metavar="DOTTED.PATH",
        help="The deployment's Job class, as given to rq worker.",
        show_default=False,
    ),
]
QueueClassOpt = Annotated[
    str | None,
    typer.Option(
        "--queue-class",
        metavar="DOTTED.PATH",
        help="The deployment's Queue class, as given to rq worker.",
        show_default=False,
    ),
]
PathOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--path",
        "-P",
        metavar="DIR",
        help="Directory appended to the import path (for callbacks and classes), as rq worker's -P; "
        "repeatable. Default: the current directory.",
        show_default=False,
    ),
]


JobMonitoringIntervalOpt = Annotated[
    float,
    typer.Option(
        "--job-monitoring-interval",
        metavar="SECONDS",
        help="Your RQ workers' job monitoring interval (RQ's default 30): a started job whose worker "
        "has not heartbeated for twice this long is shown as stalled.",
        min=1.0,
        max=MAX_SECONDS,
        callback=finite,
    ),
]
