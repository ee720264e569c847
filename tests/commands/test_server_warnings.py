"""status and watch warn when the server's maxmemory-policy can evict RQ's keys (issue 10 item 6)."""

from __future__ import annotations

import json

import pytest
from rq import Queue

from tests import jobs
from tests.support import CliInvoker


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl"])
def test_status_and_watch_warn_of_an_evicting_policy(server_factory, policy):
    srv = server_factory(["--maxmemory", "100mb", "--maxmemory-policy", policy])
    with srv.client() as admin:
        Queue("default", connection=admin).enqueue(jobs.add, 1, 1)
    from rqmaint.cli.main import app

    cli = CliInvoker(app, srv.url)
    doc = json.loads(cli("status", "--json").stdout)
    assert [(w["kind"], w["policy"]) for w in doc["warnings"]] == [("maxmemory-policy", policy)]
    table = cli("status")
    assert table.exit_code == 0
    assert f"warning: the server's maxmemory-policy is {policy}" in table.stderr
    assert "noeviction" in table.stderr
    watch = cli("watch", "--max-cycles", "1")
    assert watch.exit_code == 0 and watch.stderr.count(f"maxmemory-policy is {policy}") == 1


def test_no_warning_under_noeviction_or_without_maxmemory(cli, client, server_factory):
    Queue("default", connection=client).enqueue(jobs.add, 1, 1)
    assert json.loads(cli("status", "--json").stdout)["warnings"] == []
    assert "warning" not in cli("status").stderr
    srv = server_factory(["--maxmemory-policy", "allkeys-lru"])  # no maxmemory: nothing is evicted
    from rqmaint.cli.main import app

    assert json.loads(CliInvoker(app, srv.url)("status", "--json").stdout)["warnings"] == []
