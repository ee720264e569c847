"""rqmaint demo: a private server, a real incident, rqmaint fixing it, nothing left behind."""

from __future__ import annotations

import json
import socket

from tests.support import process_env, rqmaint_argv, run_process


def test_demo_end_to_end(tmp_path):
    # When a newcomer runs the demo (no Redis URL given: it must not need or touch one)
    env = process_env(None, {"RQ_REDIS_URL": None, "REDIS_URL": None})
    done = run_process(rqmaint_argv("demo", "--json"), env=env, timeout=240, cwd=tmp_path)
    # Then every step worked and a stock worker finished every requeued job
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["finished"] == report["jobs"] == 3
    commands = [s["command"] for s in report["steps"]]
    assert commands == [
        "rqmaint status",
        "rqmaint lock status",
        "rqmaint lock release -q demo --yes",
        "rqmaint requeue-abandoned --dry-run",
        "rqmaint requeue-abandoned",
        "rqmaint clean -q demo",
    ]
    assert all(s["exit_code"] == 0 for s in report["steps"])
    assert "SIGKILL" in done.stderr and "3 of 3 jobs finished" in done.stderr
    # And the private server is gone
    port = int(report["server"].rsplit(":", 1)[1])
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
