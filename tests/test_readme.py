"""The README's generated parts and promises: command reference, exit codes, test command."""

from __future__ import annotations

import re
from pathlib import Path

from rqmaint.cli.main import app
from rqmaint.cli.reference import render, splice
from rqmaint.errors import ExitCode

README = Path(__file__).resolve().parents[1] / "README.md"


def test_command_reference_matches_cli():
    text = README.read_text(encoding="utf-8")
    assert splice(text, render(app)) == text, "README drifted: run python -m rqmaint.cli.reference --write"


def test_every_exit_code_is_documented():
    text = README.read_text(encoding="utf-8")
    for code in ExitCode:
        assert re.search(rf"\| {int(code)} \| `{code.name}` \|", text), code


def test_every_command_has_help_text_and_json():
    from typer.main import get_command

    from rqmaint.cli.reference import _walk

    for path, cmd in _walk(get_command(app), ["rqmaint"]):
        assert cmd.help, path
        if not hasattr(cmd, "list_commands"):
            assert "--json" in [o for p in cmd.params for o in p.opts], path


def test_ci_runs_the_readme_test_command():
    text = README.read_text(encoding="utf-8")
    command = re.search(r"pip install -e '\.\[test\]' && (python -m pytest[^\n`]*)", text)
    assert command is not None
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert command.group(1) in ci
