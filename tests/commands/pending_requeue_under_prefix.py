"""PENDING (issue 9 item 3, rq3 + engine): requeue-abandoned under RQ 3.0's key prefix.

Not collected by pytest (file name): it needs the prefix-aware requeue engine (branch wt-engine).
Verified passing on a scratch merge of wt-rq3 + wt-engine (4 passed, redis+valkey, with the other
tests of test_key_prefix.py). After both are on main: append this test to
tests/commands/test_key_prefix.py (it uses that module's helpers), delete this file, and drop the
interim guard in Requeuer.__init__ (gone by itself if rqmaint/requeue.py is replaced by the package).
"""

from __future__ import annotations

import json

from tests.commands.test_key_prefix import ACME, _default_deployment, _others, _rqmaint
from tests.support import age_abandoned, make_abandoned, process_env, run_process
from tests.support.workers import start_worker


def test_requeue_abandoned_under_a_prefix(client, redis_url, tmp_path):
    import sys

    # Given two jobs abandoned by real RQ 3.0 workers on RQ_KEY_PREFIX={acme} (one has been failed by
    # RQ's own cleanup as AbandonedJobError), and a default-prefix deployment with its own incident
    _default_deployment(client, redis_url, tmp_path)
    ab = make_abandoned(redis_url, "default", 2, workdir=tmp_path / "acme", key_prefix=ACME)
    age_abandoned(client, "default", 200, key_prefix=ACME)
    _started, failed = ab.job_ids
    wip = f"{ACME}:wip:default"
    (member,) = (m for m in client.zrange(wip, 0, -1) if m.startswith(failed.encode()))
    client.zadd(wip, {member: 1}, xx=True)  # only this entry is older than the cut-off below
    cleanup = (
        "import sys, redis; from rq.registry import StartedJobRegistry; "
        "StartedJobRegistry('default', connection=redis.Redis.from_url(sys.argv[1])).cleanup(2)"
    )
    proc = run_process(
        [sys.executable, "-c", cleanup, redis_url], env=process_env(redis_url, {"RQ_KEY_PREFIX": ACME})
    )
    assert proc.returncode == 0, proc.stderr
    assert client.zscore(f"{ACME}:failed:default", failed) is not None
    before = _others(client)
    # When requeue-abandoned runs on the prefix (with --include-failed)
    proc = _rqmaint(redis_url, "requeue-abandoned", "--include-failed", "--json")
    # Then both are back on the prefixed queue, rqmaint's own keys follow the prefix...
    assert proc.returncode == 0, proc.stderr
    (q,) = json.loads(proc.stdout)["queues"]
    assert q["requeued"] == 2, q
    assert sorted(client.lrange(f"{ACME}:queue:default", 0, -1)) == sorted(j.encode() for j in ab.job_ids)
    assert client.zcard(f"{ACME}:wip:default") == 0 and client.zcard(f"{ACME}:failed:default") == 0
    assert [k for k in client.scan_iter("rqmaint:*") if not k.startswith(f"rqmaint:{ACME}:".encode())] == []
    # ...the other deployment is untouched, and a stock RQ 3.0 worker on the prefix runs both
    assert _others(client) == before
    env = {"RQ_KEY_PREFIX": ACME}
    py = sys.executable
    worker = start_worker(redis_url, ["default"], burst=True, log_dir=tmp_path, python=py, env=env)
    assert worker.wait(timeout=60) == 0, worker.log()
    assert sorted(ab.reruns()) == sorted(ab.job_ids)
    assert _others(client) == before
