"""The one place that owns the consoles and turns errors into a message and an exit code.

stdout carries data only (a JSON document with --json, else a table on a terminal or plain lines off
one); everything else (progress, logs, errors) goes to stderr.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import typer

from rqmaint.cli import tables
from rqmaint.cli.tables import Col
from rqmaint.errors import ExitCode, Interrupted, RqmaintError

if TYPE_CHECKING:
    from rqmaint.connection import Target

#: Variables with which rich decides a stream is a terminal although it is not a tty.
_TTY_OVERRIDES = ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")

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
        if self._out is None and not sys.stdout.isatty() and not any(v in os.environ for v in _TTY_OVERRIDES):
            return False  # plainly no terminal: decided without importing rich
        return bool(self.out.is_terminal)

    def emit_json(self, doc: dict[str, Any]) -> None:
        """One JSON document: indented for a person at a terminal, compact for a program."""
        text = json.dumps(doc, indent=2) if sys.stdout.isatty() else json.dumps(doc, separators=(",", ":"))
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def table(
        self,
        title: str | None,
        columns: Sequence[str | Col],
        rows: Sequence[Sequence[object]],
        empty: str | None = None,
    ) -> None:
        """A rich table fitted to the terminal (or ``empty`` when there are no rows); off a terminal,
        tab-separated lines with a header (for grep/awk). See :mod:`rqmaint.cli.tables`."""
        if self.terminal:
            self.out.print(tables.renderable(title, columns, rows, self.out.width, empty))
        else:
            sys.stdout.write(tables.tsv(columns, rows))
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
        self.info(
            f"{PROG}: error: {tables.escape(self.scrubbed(message), backslash=False)}"
        )  # one line, always

    def traceback(self) -> None:
        """With --debug: the current exception's traceback on stderr, passwords scrubbed."""
        if self.debug:
            sys.stderr.write(self.scrubbed(traceback.format_exc()))
            sys.stderr.flush()

    def scrubbed(self, text: str) -> str:
        if self.target is None:
            return text
        from rqmaint.connection import scrub

        return scrub(text, self.target)


_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)


def usage_line(message: str, command_path: list[str]) -> str:
    """A usage error as one line: ``rqmaint: error: <what failed>; see 'rqmaint <cmd> -h'``, control
    characters escaped (a value with a newline cannot break it), passwords in URLs redacted, no markup."""
    if "://" in message:
        from rqmaint.connection.urls import redact_url

        message = _URL.sub(lambda m: redact_url(m.group()), message)
    what = tables.escape(message.strip(), backslash=False).rstrip(".")
    see = f"see '{' '.join([PROG, *command_path])} -h'"
    return f"{PROG}: error: {what} ({see})" if what.endswith("?") else f"{PROG}: error: {what}; {see}"


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
        o.traceback()
        fail(o, str(Interrupted("SIGINT")), ExitCode.INTERRUPTED)
    except RqmaintError as exc:
        o.traceback()
        fail(o, str(exc), exc.exit_code)
    except Exception as exc:
        # redis is imported by whatever raised one of its errors: no need to import it before
        redis = sys.modules.get("redis")
        if redis is None or not isinstance(exc, redis.RedisError):
            raise
        o.traceback()
        fail(o, _redis_message(o, exc, redis), ExitCode.ERROR)


def _redis_message(o: Output, exc: Exception, redis: Any) -> str:
    from rqmaint.connection import ClusterError, RetryBudgetExhausted, TransactionInterrupted

    if isinstance(exc, redis.exceptions.NoPermissionError):
        user = o.target.redacted if o.target else "Redis"
        return (
            f"permission denied by {user}: {exc}; this command needs the ACL rules listed in the README "
            "(read-only rules suffice only for status, lock status and --dry-run); nothing was changed "
            "by the denied command"
        )
    where = o.target.redacted if o.target else "Redis"
    kind = type(exc).__name__
    if isinstance(exc, (RetryBudgetExhausted, TransactionInterrupted, ClusterError)):
        return f"{kind} talking to {where}: {exc}"  # the message says what to do
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        hint = "check that Redis is reachable, or raise --timeout"
    elif "WRONGTYPE" in str(exc):
        hint = "a key rqmaint reads as RQ's holds another type: inspect it (TYPE <key>) before cleaning"
    else:
        hint = "check the ACL permissions of the connecting user and the server's state"
    return f"{kind} talking to {where}: {exc}; {hint}"
