"""How rqmaint's Typer apps behave: ``-h`` as well as ``--help``, help as wide as the terminal, a
suggestion for a near-miss command (``rqmaint requeue`` -> ``requeue-abandoned``), and every usage error
from Click (bad value, unknown option or command, missing argument) as one line on stderr, exit 2."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from difflib import get_close_matches
from typing import Any

import typer
from typer._click.core import Command, Context  # typer >= 0.26 vendors click
from typer._click.exceptions import Abort, ClickException, NoArgsIsHelpError, UsageError
from typer.core import TyperGroup

from rqmaint.cli.output import usage_line
from rqmaint.errors import ExitCode

#: Help text uses the terminal's width (click caps it at 80 by default), up to this.
MAX_HELP_WIDTH = 240

CONTEXT_SETTINGS: dict[str, Any] = {
    "help_option_names": ["-h", "--help"],
    "max_content_width": MAX_HELP_WIDTH,
}


def suggestions(typo: str, commands: list[str]) -> list[str]:
    """Commands ``typo`` may have meant: those it begins or is part of, then close spellings."""
    found = [c for c in commands if c.startswith(typo) or (len(typo) >= 3 and typo in c)]
    found += [c for c in get_close_matches(typo, commands, n=3, cutoff=0.6) if c not in found]
    return found


_PATH = "rqmaint_command_path"


def _command_path(ctx: Context | None) -> list[str]:
    """The subcommands of ``ctx`` below the program (``["lock", "release"]``), whatever the program is
    called (``rqmaint``, ``python -m rqmaint``)."""
    names: list[str] = []
    while ctx is not None and ctx.parent is not None:
        names.insert(0, ctx.info_name or "")
        ctx = ctx.parent
    return names


class SuggestingGroup(TyperGroup):
    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            # Click's parser raises some errors without their context (an option missing its value):
            # name the subcommand being parsed, so the line points at its help
            if exc.ctx is None and ctx.invoked_subcommand and not hasattr(exc, _PATH):
                setattr(exc, _PATH, [*_command_path(ctx), ctx.invoked_subcommand])
            raise

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        """Click's standalone mode, except that a usage error is one line (Click's is a ``Usage:`` box
        of three or more lines); the program's help for no arguments stays as it is."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except UsageError as exc:
            path = getattr(exc, _PATH, None) or _command_path(exc.ctx)
            sys.stderr.write(usage_line(exc.format_message(), path) + "\n")
            sys.stderr.flush()
            sys.exit(int(ExitCode.USAGE))
        except ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except Abort:
            sys.stderr.write("Aborted!\n")
            sys.exit(1)
        # not standalone, Click returns the code of an Exit (typer.Exit(4)) or the command's value
        sys.exit(rv if isinstance(rv, int) else 0)

    def resolve_command(self, ctx: Context, args: list[str]) -> tuple[str | None, Command | None, list[str]]:
        try:
            return self._click_resolve_command(ctx, args)
        except UsageError as exc:
            if args and not args[0].startswith("-"):
                names = [n for n, c in self.commands.items() if not c.hidden]
                matches = suggestions(args[0], names)
                if matches:
                    exc.message = (
                        f"No such command {args[0]!r}. Did you mean {' or '.join(repr(m) for m in matches)}?"
                    )
            raise


def new_app(**kwargs: Any) -> typer.Typer:
    """A Typer app (or sub-app) with rqmaint's conventions."""
    return typer.Typer(cls=SuggestingGroup, context_settings=dict(CONTEXT_SETTINGS), **kwargs)
