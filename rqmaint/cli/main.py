"""The rqmaint command line: the Typer app, assembled from one module per command (or group).

Each command module (status, lock, clean, requeue, watch, history, explain,
demo) defines its options and a thin body
that calls the core; :mod:`rqmaint.cli.context` parses the global options and opens the output and
the connection once; :mod:`rqmaint.cli.render` draws every table and line.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from rqmaint import __version__
from rqmaint.cli import clean, demo, explain, history, lock, requeue, status, watch
from rqmaint.cli.completion import init as init_completion
from rqmaint.cli.group import new_app
from rqmaint.cli.output import install_signal_handlers

app = new_app(
    name="rqmaint",
    help="Maintenance toolkit for RQ (Redis Queue): put the jobs of dead workers back on their queue, "
    "see and release the cleaning lock, run the acquire -> clean -> release cycle, inspect registries."
    "\n\nExample: rqmaint requeue-abandoned --dry-run -u redis://redis:6379/0",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


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


# the order of the commands in --help
status.register(app)
lock.register(app)
clean.register(app)
requeue.register(app)
watch.register(app)
history.register(app)
explain.register(app)
demo.register(app)


def main() -> None:
    install_signal_handlers()
    init_completion()
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
