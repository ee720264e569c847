"""rqmaint demo: a private server, a real incident, rqmaint fixing it, nothing left behind; honest
about the ~90 s it skips (or waits them out), and on a terminal the commands' own tables in order."""

from __future__ import annotations

import json
import re
import socket

from tests.support import process_env, rqmaint_argv, run_process

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _env(overrides=None):
    return process_env(None, {"RQ_REDIS_URL": None, "REDIS_URL": None, **(overrides or {})})


def test_demo_end_to_end(tmp_path):
    # When a newcomer runs the demo (no Redis URL given: it must not need or touch one)
    done = run_process(rqmaint_argv("demo", "--json"), env=_env(), timeout=240, cwd=tmp_path)
    # Then every step worked and a stock worker finished every requeued job
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["finished"] == report["jobs"] == 3
    commands = [s["command"] for s in report["steps"]]
    assert commands == [
        "rqmaint status",  # right after the kill: what a real incident shows for ~90 s
        "rqmaint status",
        "rqmaint lock status",
        "rqmaint lock release -q demo --yes",
        "rqmaint requeue-abandoned --dry-run",
        "rqmaint requeue-abandoned",
        "rqmaint clean -q demo",
    ]
    assert all(s["exit_code"] == 0 for s in report["steps"])
    assert "SIGKILL" in done.stderr and "3 of 3 jobs finished" in done.stderr
    # And it says that it skipped the wait, and what the wait looks like
    assert report["fast_forwarded"] is True
    assert "fast-forwards" in done.stderr and "--real-time" in done.stderr
    assert "none abandoned" in done.stderr
    # And the private server is gone
    port = int(report["server"].rsplit(":", 1)[1])
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_demo_on_a_terminal_shows_the_tables_in_order(tmp_path):
    env = _env({"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "0", "COLUMNS": "120"})
    done = run_process(rqmaint_argv("demo"), env=env, timeout=240, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    out = ANSI.sub("", done.stdout)
    assert "queue\tqueued" not in out  # no tab-separated lines: the tables the commands draw
    order = [
        "## Right after the kill",
        "RQ registries",
        "Cleaning locks",
        "## What would requeue-abandoned do?",
        "looking at queue 'demo'",  # the command's progress line, before its table
        "Abandoned jobs (dry run)",
        "Would requeue (dry run)",
        "## Put the abandoned jobs back",
        "Requeued",
        "3 of 3 jobs finished",
    ]
    at = [out.find(x) for x in order]
    assert -1 not in at, [x for x, i in zip(order, at, strict=True) if i < 0]
    assert at == sorted(at), out


def test_demo_real_time_waits_it_out(tmp_path):
    done = run_process(rqmaint_argv("demo", "--json", "--real-time"), env=_env(), timeout=400, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["fast_forwarded"] is False and report["finished"] == 3
    assert "# abandoned in " in done.stderr and "fast-forwards that wait" not in done.stderr
    waited = re.search(r"# waited (\d+) s", done.stderr)
    assert waited is not None and int(waited.group(1)) >= 30  # RQ's deadline really passed
