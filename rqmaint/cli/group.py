"""How rqmaint's Typer apps behave: ``-h`` as well as ``--help``, help as wide as the terminal, and a
suggestion for a near-miss command (``rqmaint requeue`` -> ``requeue-abandoned``)."""

from __future__ import annotations

from difflib import get_close_matches
from typing import Any

import typer
from typer._click.core import Command, Context  # typer >= 0.26 vendors click
from typer._click.exceptions import UsageError
from typer.core import TyperGroup

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


class SuggestingGroup(TyperGroup):
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
