"""The one place that owns the consoles and turns errors into a message and an exit code.

stdout carries data only (a JSON document with --json, else a table on a terminal or plain lines off
one); everything else (progress, logs, errors) goes to stderr.
"""

from __future__ import annotations

import json
import signal
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any, NoReturn, Protocol

import redis
import typer

from rqmaint.connection import RetryBudgetExhausted, Target, TransactionInterrupted, scrub
from rqmaint.errors import ExitCode, Interrupted, RqmaintError

PROG = "rqmaint"


@dataclass
class Output:
    json_mode: bool = False
    debug: bool = False
    target: Target | None = None

    # rich is imported only when something is rendered with it (a --json run never needs it)
    _out: Any = None
    _err: Any = None

    @property
    def out(self) -> Any:
        if self._out is None:
            from rich.console import Console

            self._out = Console(soft_wrap=False)
        return self._out

    @property
    def err(self) -> Any:
        if self._err is None:
            from rich.console import Console

            self._err = Console(stderr=True, soft_wrap=True, highlight=False)
        return self._err

    @property
    def terminal(self) -> bool:
        return bool(self.out.is_terminal)

    def emit_json(self, doc: dict[str, Any]) -> None:
        """One JSON document: indented for a person at a terminal, compact for a program."""
        text = json.dumps(doc, indent=2) if sys.stdout.isatty() else json.dumps(doc, separators=(",", ":"))
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def table(self, title: str | None, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        """A rich table on a terminal; off one, tab-separated lines with a header (for grep/awk)."""
        if self.terminal:
            from rich.table import Table

            t = Table(title=title, title_justify="left")
            for i, c in enumerate(columns):
                t.add_column(c, justify="left" if i == 0 else "right" if _numeric(rows, i) else "left")
            for r in rows:
                t.add_row(*(_cell(v) for v in r))
            self.out.print(t)
        else:
            lines = ["\t".join(columns)] + ["\t".join(_cell(v) for v in r) for r in rows]
            sys.stdout.write("\n".join(lines) + "\n")
            sys.stdout.flush()

    def line(self, text: str) -> None:
        """A line of human-readable result on stdout (not used in --json mode)."""
        if self.terminal:
            self.out.print(text, markup=False, highlight=False)
        else:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()

    def info(self, text: str) -> None:
        """Progress and logs: stderr, printed as is."""
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def error_line(self, message: str) -> None:
        """``rqmaint: error: <message>`` on stderr, passwords scrubbed, printed as text."""
        self.err.print(f"{PROG}: error: {self.scrubbed(message)}", markup=False)

    def scrubbed(self, text: str) -> str:
        return scrub(text, self.target) if self.target is not None else text


def _numeric(rows: Sequence[Sequence[object]], i: int) -> bool:
    return bool(rows) and all(isinstance(r[i], (int, float)) for r in rows)


def _cell(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.1f}"
    return str(v)


def fail(o: Output, message: str, code: ExitCode) -> NoReturn:
    o.error_line(message)
    raise typer.Exit(int(code))


class Reported(Protocol):
    """What a per-queue report offers to the exit code (requeue.QueueRequeue has it)."""

    @property
    def given_up(self) -> int: ...

    @property
    def problem_count(self) -> int: ...


def exit_code(outcomes: Sequence[str], reports: Sequence[Reported]) -> ExitCode:
    """The run's exit code, most serious first: an RQ error on a queue, a lock held by another holder,
    then items that need attention (jobs given up, bad data skipped)."""
    if "error" in outcomes:
        return ExitCode.ERROR
    if "skipped-locked" in outcomes or "lease-lost" in outcomes:
        return ExitCode.LOCK_HELD
    if any(r.given_up or r.problem_count for r in reports):
        return ExitCode.ATTENTION
    return ExitCode.OK


def exit_with(code: ExitCode) -> None:
    """End the command with ``code`` unless it is OK."""
    if code != ExitCode.OK:
        raise typer.Exit(int(code))


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Interrupted("SIGTERM")


def install_signal_handlers() -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)


@contextmanager
def guard(o: Output) -> Iterator[None]:
    """Map every failure to one line on stderr and a documented exit code (traceback only with --debug)."""
    try:
        yield
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        if o.debug:
            o.err.print(o.scrubbed(traceback.format_exc()), markup=False)
        fail(o, str(Interrupted("SIGINT")), ExitCode.INTERRUPTED)
    except RqmaintError as exc:
        if o.debug:
            o.err.print(o.scrubbed(traceback.format_exc()), markup=False)
        fail(o, str(exc), exc.exit_code)
    except redis.exceptions.NoPermissionError as exc:
        if o.debug:
            o.err.print(o.scrubbed(traceback.format_exc()), markup=False)
        user = o.target.redacted if o.target else "Redis"
        fail(
            o,
            f"permission denied by {user}: {exc}; this command needs the ACL rules listed in the README "
            "(read-only rules suffice only for status, lock status and --dry-run); nothing was changed "
            "by the denied command",
            ExitCode.ERROR,
        )
    except redis.RedisError as exc:
        if o.debug:
            o.err.print(o.scrubbed(traceback.format_exc()), markup=False)
        where = o.target.redacted if o.target else "Redis"
        kind = type(exc).__name__
        if isinstance(exc, (RetryBudgetExhausted, TransactionInterrupted)):
            fail(o, f"{kind} talking to {where}: {exc}", ExitCode.ERROR)  # the message says what to do
        if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
            hint = "check that Redis is reachable, or raise --timeout"
        elif "WRONGTYPE" in str(exc):
            hint = "a key rqmaint reads as RQ's holds another type: inspect it (TYPE <key>) before cleaning"
        else:
            hint = "check the ACL permissions of the connecting user and the server's state"
        fail(o, f"{kind} talking to {where}: {exc}; {hint}", ExitCode.ERROR)
