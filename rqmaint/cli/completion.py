"""Shell completion: scripts for bash, zsh and fish (generated into completions/), and ``--queue <TAB>``
offering the queue names found in Redis.

``python -m rqmaint.cli.completion --write completions`` regenerates the scripts; a test fails when
they drift. The scripts call ``rqmaint`` back with ``_RQMAINT_COMPLETE=complete_<shell>``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

PROG = "rqmaint"
COMPLETE_VAR = "_RQMAINT_COMPLETE"
FILES = {"bash": "rqmaint.bash", "zsh": "_rqmaint", "fish": "rqmaint.fish"}
QUEUE_COMPLETION_TIMEOUT = 1.0


def init() -> None:
    """Register typer's shell classes, so ``_RQMAINT_COMPLETE`` works without --install-completion."""
    from typer._completion_classes import completion_init

    completion_init()


def script(shell: str) -> str:
    from typer._completion_shared import get_completion_script

    init()
    return get_completion_script(prog_name=PROG, complete_var=COMPLETE_VAR, shell=shell).strip() + "\n"


def complete_queue(ctx: Any, incomplete: str) -> list[str]:
    """Queue names in ``rq:queues`` starting with ``incomplete`` (nothing if Redis can't be reached)."""
    from rqmaint.connection import connect, resolve_url
    from rqmaint.errors import RqmaintError
    from rqmaint.queues import known_queues

    try:
        url = ctx.params.get("url") if ctx is not None else None
        client = connect(resolve_url(url), QUEUE_COMPLETION_TIMEOUT)
        return [q for q in known_queues(client) if q.startswith(incomplete)]
    except (RqmaintError, OSError, Exception):  # completion must never print a traceback
        return []


def write(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for shell, name in FILES.items():
        (folder / name).write_text(script(shell), encoding="utf-8")


def main() -> None:
    if "--write" in sys.argv:
        write(Path(sys.argv[sys.argv.index("--write") + 1] if len(sys.argv) > 2 else "completions"))
    else:
        sys.stdout.write(script(os.environ.get("SHELL_NAME", "bash")))


if __name__ == "__main__":
    main()
