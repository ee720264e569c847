"""CLI conventions (issue 10 item 8): -h, -q a,b / repeated / positional queues, empty names refused,
near-miss commands suggested, help as wide as the terminal with an example, clean's requeue hint."""

from __future__ import annotations

import json
import re

import pytest
from rq import Queue
from typer.main import get_command

from rqmaint.cli.main import app
from rqmaint.cli.reference import _walk
from tests import jobs
from tests.support import REPO_ROOT, age_abandoned, process_env, rqmaint_argv, run_process

COMMANDS = [path[1:] for path, _ in _walk(get_command(app), ["rqmaint"])]
LEAVES = [path[1:] for path, cmd in _walk(get_command(app), ["rqmaint"]) if not hasattr(cmd, "list_commands")]
DEAD = "redis://127.0.0.1:1/0"  # nothing listens: a usage error must come before any connection


@pytest.fixture
def offline():
    from tests.support import CliInvoker

    return CliInvoker(app, DEAD)


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "rqmaint")
def test_dash_h_is_help(offline, path):
    short, long = offline(*path, "-h"), offline(*path, "--help")
    assert short.exit_code == 0 and short.stdout == long.stdout
    assert "Usage:" in short.stdout


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "rqmaint")
def test_every_help_shows_an_example(offline, path):
    out = offline(*path, "-h").stdout
    example = re.search(r"Example: (.*)", out)
    assert example is not None, out
    assert example.group(1).split()[0] in ("rqmaint", "pip"), example.group(1)
    assert " ".join(["rqmaint", *path]) in out.replace("\n", " ") or not path


def _help_lines(columns: int) -> list[str]:
    # a real process: typer's CliRunner forces a width of 80
    done = run_process(
        rqmaint_argv("requeue-abandoned", "-h"), env=process_env(DEAD, {"COLUMNS": str(columns)})
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_help_uses_the_terminal_width():
    wide, narrow = _help_lines(160), _help_lines(80)
    assert max(map(len, wide)) > 100
    assert max(map(len, narrow)) <= 80
    assert len(wide) < len(narrow)


@pytest.mark.parametrize(
    ("typo", "meant"),
    [(["requeue"], "requeue-abandoned"), (["stauts"], "status"), (["lock", "rel"], "release")],
)
def test_near_miss_command_gets_a_suggestion(offline, typo, meant):
    result = offline(*typo)
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("rqmaint: error: No such command") and f"Did you mean {meant!r}?" in line


def _one_usage_line(result, command: list[str]) -> str:
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()  # not Click's "Usage: ... / Try ... -h / Error: ..." box
    assert line.startswith("rqmaint: error: "), line
    assert f"see '{' '.join(['rqmaint', *command])} -h'" in line, line
    return line


@pytest.mark.parametrize("path", LEAVES, ids=lambda p: " ".join(p))
def test_unknown_option_is_one_line(offline, path):
    line = _one_usage_line(offline(*path, "--no-such-option"), path)
    assert "No such option: --no-such-option" in line


@pytest.mark.parametrize(
    ("argv", "command", "what"),
    [
        (["requeue-abandoned", "--limit", "nan"], ["requeue-abandoned"], "'--limit'"),
        (["status", "--timeout", "-1"], ["status"], "'--timeout'"),
        (["lock", "release"], ["lock", "release"], "Missing option '--queue'"),
        (["watch", "--interval"], ["watch"], "'--interval' requires an argument"),
        (["status", "--json=x"], ["status"], "--json"),
        (["nosuchthing"], [], "No such command 'nosuchthing'"),
        (["lock", "status", "--timeout", "1\nError: forged"], ["lock", "status"], "'--timeout'"),
    ],
)
def test_every_usage_error_is_one_line(offline, argv, command, what):
    assert what in _one_usage_line(offline(*argv), command)


def test_usage_error_of_the_console_script_is_one_line():
    done = run_process(
        rqmaint_argv("requeue-abandoned", "--limit", "nan", script=True),
        env=process_env("redis://127.0.0.1:1/0"),
        cwd=REPO_ROOT,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "rqmaint: error: Invalid value for '--limit': 'nan' is not a valid integer range; "
        "see 'rqmaint requeue-abandoned -h'"
    ]


def _queues(cli, *args):
    result = cli("status", "--json", *args)
    assert result.exit_code == 0, result.stderr
    return [q["name"] for q in json.loads(result.stdout)["queues"]]


def test_queues_by_comma_repeat_and_position(cli, client):
    for name in ("alpha", "beta", "gamma"):
        Queue(name, connection=client).enqueue(jobs.add, 1, 1)
    assert _queues(cli, "-q", "alpha,beta") == ["alpha", "beta"]
    assert _queues(cli, "-q", "alpha", "-q", "gamma") == ["alpha", "gamma"]
    assert _queues(cli, "beta", "gamma") == ["beta", "gamma"]
    assert _queues(cli, "gamma", "-q", "alpha,gamma") == ["alpha", "gamma"]
    result = cli("lock", "status", "--json", "beta")
    assert [x["queue"] for x in json.loads(result.stdout)["locks"]] == ["beta"]


@pytest.mark.parametrize(
    "argv",
    [
        ("status", "-q", ""),
        ("status", "-q", "a,,b"),
        ("status", ""),
        ("lock", "status", "-q", " "),
        ("clean", "-q", ""),
        ("requeue-abandoned", "-q", "", "--dry-run"),
        ("watch", "-q", ",", "--max-cycles", "1"),
    ],
)
def test_empty_queue_name_is_a_usage_error(offline, argv):
    result = offline(*argv)
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    assert "empty queue name" in line
    assert "Connection" not in result.stderr


def test_clean_hints_at_requeue_when_it_sent_abandoned_jobs_to_failed(cli, client, abandon):
    abandon("default", 2)
    age_abandoned(client, "default", 200)
    dry = cli("clean", "-q", "default", "--dry-run")
    assert "2 abandoned job(s) would go to the failed registry" in dry.stderr
    assert "--requeue-abandoned" in dry.stderr
    done = cli("clean", "-q", "default")
    assert done.exit_code == 0, done.stderr
    assert "2 abandoned job(s) went to the failed registry" in done.stderr
    assert "requeue-abandoned --include-failed" in done.stderr


def test_clean_with_requeue_gives_no_hint(cli, client, abandon):
    abandon("default", 1)
    age_abandoned(client, "default", 200)
    done = cli("clean", "-q", "default", "--requeue-abandoned")
    assert done.exit_code == 0, done.stderr
    assert "went to the failed registry" not in done.stderr


def test_readme_first_command_is_the_recovery():
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    first = re.search(r"^rqmaint (\S+)(.*)$", text, re.M)
    assert first is not None
    assert first.group(1) == "requeue-abandoned" and "--dry-run" in first.group(2)
