"""The CLI's shape: one module per command, global options declared once, no import cycles."""

from __future__ import annotations

import ast
from pathlib import Path

from typer.main import get_command

import rqmaint.cli
from rqmaint import connection, health, lock, requeue
from rqmaint.cli import options
from rqmaint.cli.context import GLOBAL_OPTIONS
from rqmaint.cli.main import app
from rqmaint.cli.reference import _walk

CLI = Path(rqmaint.cli.__file__).parent


def test_cli_defaults_agree_with_the_core():
    # the CLI repeats them so that parsing imports none of the core
    assert options.DEFAULT_TIMEOUT == connection.DEFAULT_TIMEOUT
    assert options.DEFAULT_LEASE == lock.DEFAULT_LEASE
    assert options.DEFAULT_MAX_REQUEUES == requeue.DEFAULT_MAX_REQUEUES
    assert options.DEFAULT_BATCH == requeue.DEFAULT_BATCH
    assert options.DEFAULT_JOB_MONITORING_INTERVAL == health.JOB_MONITORING_INTERVAL


def test_every_command_takes_the_global_options_after_its_own():
    globals_ = [name for name, _, _ in GLOBAL_OPTIONS]
    for path, cmd in _walk(get_command(app), ["rqmaint"]):
        if hasattr(cmd, "list_commands"):
            continue
        names = [p.name for p in cmd.params]
        wanted = ["json_out", "debug"] if path[-1] == "demo" else globals_
        assert names[-len(wanted) :] == wanted, path
        assert not set(globals_[: -len(wanted)]) & set(names), path


def _cli_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "rqmaint.cli":
                found |= {a.name for a in node.names}
            elif node.module.startswith("rqmaint.cli."):
                found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[2] for a in node.names if a.name.startswith("rqmaint.cli.")}
    return found


def test_cli_modules_import_each_other_without_cycles():
    graph = {p.stem: _cli_imports(p) for p in CLI.glob("*.py") if p.stem != "__init__"}
    for package in (p for p in CLI.iterdir() if (p / "__init__.py").exists()):  # a node per package
        graph[package.name] = set().union(*map(_cli_imports, package.glob("*.py"))) - {package.name}
    assert "watching" not in graph  # the old watch renderer that imported main back
    for command in ("status", "lock", "clean", "requeue", "watch", "demo"):
        assert command in graph and "main" not in graph[command], command
    assert graph["render"] <= {"output", "tables"}, "renderers depend on the output and the table layout only"

    def visit(node: str, trail: tuple[str, ...]) -> None:
        assert node not in trail, f"import cycle: {' -> '.join((*trail, node))}"
        for nxt in graph.get(node, set()):
            visit(nxt, (*trail, node))

    for module in graph:
        visit(module, ())
