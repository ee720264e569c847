"""clean's audit trail (issue 11 item 5): right after each of RQ's cleaning steps that changed
something, one ``clean`` entry with what it changed; and the release of the run's own lease, with the
value it removed, by the command that held it."""

from __future__ import annotations

import json
import os
import time

import pytest
from rq import Queue

from rqmaint import clean, lock
from tests import jobs
from tests.support import age_abandoned, clone_job


def _history(cli, *args: str) -> list[dict]:
    result = cli("history", "--json", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)["entries"]


def _released_by_this_process(entry: dict, by: str) -> None:
    assert (entry["action"], entry["queue"], entry["job"], entry["by"]) == ("lock_release", "default", "", by)
    holder = lock.Holder.parse(entry["detail"])  # the value removed: this run's own lease
    assert holder is not None and holder.pid == os.getpid()


def test_each_step_that_changed_something_has_its_entry(cli, client, abandon):
    # Given two expired finished jobs (and one not yet expired), an abandoned started job whose worker
    # was SIGKILLed (so also a dead worker in the queue's registry)
    abandon("default")
    age_abandoned(client, "default", 200)
    now = int(time.time())
    client.zadd("rq:finished:default", {"old-1": now - 10, "old-2": now - 5, "fresh": now + 400})
    workers = client.scard("rq:workers:default")
    # When clean runs
    result = cli("clean", "-q", "default", "--json")
    assert result.exit_code == 0, result.stderr
    (q,) = json.loads(result.stdout)["queues"]
    assert q["outcome"] == "cleaned" and q["plan"]["dead_workers"] == workers >= 1
    # Then, newest first: its lock release, then one entry per step that changed something, each
    # with the measured sizes and the plan's counts for that step (failed, ready, ... changed nothing)
    release, *steps = _history(cli)
    _released_by_this_process(release, "clean")
    assert [(e["action"], e["queue"], e["job"], e["by"]) for e in steps] == [
        ("clean", "default", "", "clean")
    ] * 3
    assert [json.loads(e["detail"]) for e in reversed(steps)] == [
        {"step": "finished", "before": 2, "after": 0, "plan": {"finished_expired": 2}},
        {
            "step": "started",
            "before": 1,
            "after": 0,
            "plan": {"started_abandoned": 1, "abandoned_to_failed": 1},
        },
        {"step": "workers", "before": workers, "after": 0, "plan": {"dead_workers": workers}},
    ]
    assert client.zrange("rq:finished:default", 0, -1) == [b"fresh"]
    # And the table shows each step's change in one line
    table = cli("history", "-q", "default")
    assert table.exit_code == 0, table.stderr
    details = [row.split("\t")[5] for row in table.stdout.splitlines()[1:]]
    assert details[1:] == [
        f"workers {workers} -> 0 (plan: dead_workers {workers})",
        "started 1 -> 0 (plan: started_abandoned 1, abandoned_to_failed 1)",
        "finished 2 -> 0 (plan: finished_expired 2)",
    ]


def test_nothing_to_clean_records_only_the_lock_release(cli, client):
    Queue("default", connection=client).enqueue(jobs.add, 1, 2)
    assert cli("clean", "--dry-run").exit_code == 0
    assert _history(cli) == []  # a dry run records nothing (and takes no lock)
    assert cli("clean", "-q", "default").exit_code == 0
    (release,) = _history(cli)
    _released_by_this_process(release, "clean")


def test_requeue_abandoned_records_its_lock_release(cli, client, abandon):
    ab = abandon("default")
    age_abandoned(client, "default", 200)
    result = cli("requeue-abandoned", "--json")
    assert result.exit_code == 0, result.stderr
    release, requeue = _history(cli)
    _released_by_this_process(release, "requeue-abandoned")
    assert (requeue["action"], requeue["job"], requeue["by"]) == (
        "requeue",
        ab.job_ids[0],
        "requeue-abandoned",
    )


def test_a_step_stopped_part_way_records_what_it_changed(cli, client, abandon):
    # Given more abandoned jobs than one batch of RQ's started cleanup, with distinct deadlines
    ab = abandon("default")
    clone_job(client, ab.job_ids[0], clean.STARTED_BATCH + 9)
    age_abandoned(client, "default", 200)
    members = client.zrange("rq:wip:default", 0, -1)
    client.zadd("rq:wip:default", {m: int(time.time()) - 1000 + n for n, m in enumerate(members)})
    total = len(members)
    calls: list[int] = []

    def checkpoint() -> None:  # before finished, before started, then between two batches: stop there
        calls.append(1)
        if len(calls) == 3:
            raise lock.StopRequested

    record = clean.StepAudit(client, "default", "watch", clean.plan(client, "default"))
    # When a stop request arrives after the started step's first batch
    with pytest.raises(lock.StopRequested):
        clean.run_rq_steps(client, "default", [], "rqmaint-test", checkpoint, [], record=record)
    # Then the step's entry says what it changed before the stop, and that it stopped
    assert client.zcard("rq:wip:default") == total - clean.STARTED_BATCH
    (entry,) = _history(cli)
    assert (entry["action"], entry["by"]) == ("clean", "watch")
    assert json.loads(entry["detail"]) == {
        "step": "started",
        "before": total,
        "after": total - clean.STARTED_BATCH,
        "plan": {"started_abandoned": total, "abandoned_to_failed": total},
        "raised": "StopRequested",
    }
