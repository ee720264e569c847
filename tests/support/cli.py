"""Running a CLI: in-process through Typer's ``CliRunner``, or as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

#: Fixed terminal width for every CLI run (Rich reads COLUMNS).
COLUMNS = "200"
#: Variables from the outer environment that must never reach the CLI under test.
SCRUBBED_ENV = (
    "REDIS_URL",
    "RQ_REDIS_URL",
    "FORCE_COLOR",
    "TTY_COMPATIBLE",
    "TTY_INTERACTIVE",
    "CLICOLOR_FORCE",
    "RQ_KEY_PREFIX",
)
REPO_ROOT = Path(__file__).resolve().parents[2]


def cli_env(url: str | None, overrides: Mapping[str, str | None] | None = None) -> dict[str, str | None]:
    """Environment overrides for a CLI run: scrubbed variables unset, ``RQ_REDIS_URL=url``,
    ``COLUMNS=200``, then ``overrides`` (a value of None unsets that variable)."""
    env: dict[str, str | None] = dict.fromkeys(SCRUBBED_ENV)
    env["COLUMNS"] = COLUMNS
    env["LINES"] = "50"
    if url is not None:
        env["RQ_REDIS_URL"] = url
    env.update(overrides or {})
    return env


@dataclass
class CliInvoker:
    """Call as ``invoke(*args, input=None, env=None)``: runs ``app`` in-process.

    Returns Typer's ``Result``: ``exit_code``, ``stdout`` and ``stderr`` separately (``output``
    is both, interleaved), ``exception``.  Unexpected exceptions propagate (so pytest shows the
    traceback) unless ``catch_exceptions=True``; ``SystemExit``/``typer.Exit`` set ``exit_code``.
    """

    app: Any
    url: str | None
    runner: CliRunner = field(default_factory=CliRunner)

    def __call__(
        self,
        *args: str | int | os.PathLike[str],
        input: str | bytes | None = None,
        env: Mapping[str, str | None] | None = None,
        catch_exceptions: bool = False,
    ) -> Any:
        return self.runner.invoke(
            self.app,
            [os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in args],
            input=input,
            env=cli_env(self.url, env),
            catch_exceptions=catch_exceptions,
            prog_name="rqmaint",
        )


def process_env(url: str | None, overrides: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """A full environment for a CLI subprocess: ``os.environ`` with :func:`cli_env` applied."""
    env = dict(os.environ)
    for name, value in cli_env(url, overrides).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def run_process(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str],
    input: str | None = None,
    timeout: float = 60.0,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to completion (text output captured separately, no check of the exit code).

    A run longer than ``timeout`` seconds raises ``subprocess.TimeoutExpired`` (the child is
    killed).  stdin is empty unless ``input`` is given.
    """
    return subprocess.run(
        [os.fspath(a) for a in argv],
        env=dict(env),
        input=input if input is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or REPO_ROOT,
        check=False,
    )


def rqmaint_argv(*args: str | int | os.PathLike[str], script: bool = False) -> list[str]:
    """``[sys.executable, "-m", "rqmaint", *args]``: the installed package as a real process.

    ``script=True`` uses the ``rqmaint`` console script installed next to ``sys.executable``
    instead (tests the ``[project.scripts]`` entry point).
    """
    head = [str(Path(sys.executable).with_name("rqmaint"))] if script else [sys.executable, "-m", "rqmaint"]
    return head + [os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in args]
