"""rqmaint watch: dashboard, daemon cycles, clean shutdown, Redis outages, Prometheus metrics."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
import urllib.request

from rq import Queue

from tests import jobs
from tests.support import (
    REPO_ROOT,
    age_abandoned,
    clone_job,
    free_port,
    process_env,
    rqmaint_argv,
    start_server,
    wait_for,
)
from tests.support.heartbeats import silence


def _watch(redis_url: str, *args: str, env: dict[str, str | None] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        rqmaint_argv("watch", *args),
        env=process_env(redis_url, env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(proc: subprocess.Popen[str], sig: signal.Signals = signal.SIGTERM) -> tuple[int, str, str, float]:
    started = time.monotonic()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=10)
    return proc.returncode, out, err, time.monotonic() - started


def test_json_lines_off_terminal(cli, client):
    Queue("default", connection=client).enqueue(jobs.add, 1, 2)
    result = cli("watch", "--interval", "0.1", "--max-cycles", "3", "--json")
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [c["cycle"] for c in lines] == [1, 2, 3]
    assert all(c["ok"] and c["queues"][0]["queued"] == 1 for c in lines)
    assert lines[0]["cleaned"] == [] and lines[0]["requeued"] == []  # view-only by default
    plain = cli("watch", "--interval", "0.1", "--max-cycles", "1")
    assert plain.stdout.startswith("cycle 1 ok ") and "queued=1" in plain.stdout


def test_dashboard_on_terminal(cli, client):
    Queue("default", connection=client).enqueue(jobs.add, 1, 2)
    result = cli("watch", "--max-cycles", "1", env={"TTY_COMPATIBLE": "1"})
    assert result.exit_code == 0, result.stderr
    assert "rqmaint watch: redis://127.0.0.1" in result.stdout and "view only" in result.stdout


def test_daemon_requeues_and_stops_on_sigterm(client, abandon, redis_url):
    # Given abandoned jobs and a watch daemon that cleans and requeues every 0.2 s
    ab = abandon("default")
    age_abandoned(client, "default", 200)
    proc = _watch(redis_url, "--clean", "--requeue-abandoned", "--interval", "0.2", "--json")
    try:
        wait_for(
            lambda: client.lrange("rq:queue:default", 0, -1) == [ab.job_ids[0].encode()],
            timeout=30,
            what="the daemon to requeue the job",
        )
    finally:
        code, out, err, took = _stop(proc)
    # Then it exits 0 quickly with every lock released, and said what it did
    assert code == 0, err
    assert took < 5
    assert client.exists("rq:clean_registries:default") == 0
    cycles = [json.loads(line) for line in out.splitlines()]
    assert sum(c["totals"]["requeued"] for c in cycles) == 1, (out[-3000:], err)
    assert "stopped by SIGTERM" in err


def test_sigterm_mid_work_releases_the_lock(client, abandon, redis_url):
    # Given a large backlog, so a cycle is still working when the signal comes
    ab = abandon("default")
    age_abandoned(client, "default", 200)
    ids = ab.job_ids + clone_job(client, ab.job_ids[0], 30_000)
    proc = _watch(redis_url, "--requeue-abandoned", "--interval", "60")

    def holding() -> bool:
        raw = client.get("rq:clean_registries:default")
        return raw is not None and json.loads(raw)["pid"] == proc.pid

    try:
        wait_for(holding, timeout=30, interval=0.001, what="watch to hold the lock")
    finally:
        code, _out, err, took = _stop(proc, signal.SIGINT)
    assert code == 0, err
    assert took < 5
    assert client.exists("rq:clean_registries:default") == 0
    queued = client.lrange("rq:queue:default", 0, -1)
    started = {m.decode().split(":", 1)[0] for m in client.zrange("rq:wip:default", 0, -1)}
    assert len(queued) == len(set(queued))
    assert {q.decode() for q in queued} | started == set(ids) and not started & {q.decode() for q in queued}


def test_redis_outage_is_reported_and_survived(tmp_path, server):
    # Given a watch daemon on a server that goes away and comes back on the same port
    port = free_port()
    srv = start_server(server.kind, port=port, workdir=tmp_path / "a")
    url = srv.url
    srv.client().sadd("rq:queues", "rq:queue:default")
    # a short retry budget: each command gives up on the dead server after 1 s (default 30 s)
    proc = _watch(url, "--interval", "0.2", "--json", "--timeout", "0.5", env={"RQMAINT_RETRY_BUDGET": "1"})
    try:
        lines: list[dict] = []

        def read_cycle() -> dict:
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.poll() is not None else "no output"
            lines.append(json.loads(line))
            return lines[-1]

        assert read_cycle()["ok"]
        srv.stop()
        wait_for(lambda: not read_cycle()["ok"], timeout=30, what="an error cycle")
        assert proc.poll() is None, "watch died during the outage"
        srv2 = start_server(server.kind, port=port, workdir=tmp_path / "b")
        try:
            wait_for(lambda: read_cycle()["ok"], timeout=60, what="watch to recover")
        finally:
            code, _out, err, _took = _stop(proc)
            srv2.stop()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0
    assert "retrying in" in err
    errors = [c for c in lines if not c["ok"]]
    assert errors and all("Error" in c["error"] for c in errors)


def test_metrics(client, abandon, redis_url):
    ab = abandon("default")
    age_abandoned(client, "default", 200)
    client.set("rq:clean_registries:other", "1", ex=899)
    client.sadd("rq:queues", "rq:queue:other")
    port = free_port()
    proc = _watch(redis_url, "--requeue-abandoned", "--interval", "0.2", "--metrics-port", str(port))

    def scrape() -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                return resp.read().decode()
        except OSError:
            return ""

    try:
        text = wait_for(
            lambda: (t := scrape()) and 'rqmaint_jobs_requeued_total{queue="default"} 1.0' in t and t,
            timeout=30,
            what="metrics showing the requeue",
        )
    finally:
        code, _out, err, _took = _stop(proc)
    assert code == 0, err
    assert 'rqmaint_registry_jobs{queue="default",registry="queued"} 1.0' in text
    assert 'rqmaint_lock_held{holder_kind="rq-worker",queue="other"} 1.0' in text
    assert 'rqmaint_queues_skipped_locked_total{queue="other"}' in text
    assert 'rqmaint_cycles_total{result="ok"}' in text
    assert "rqmaint_cycle_duration_seconds_bucket" in text
    assert 'rqmaint_lock_ttl_seconds{queue="other"}' in text
    assert ab.job_ids[0].encode() in client.lrange("rq:queue:default", 0, -1)


def test_metrics_need_the_extra_or_a_free_port(cli, client):
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        busy = s.getsockname()[1]
        result = cli("watch", "--max-cycles", "1", "--metrics-port", str(busy))
    assert result.exit_code in (1, 2)
    assert result.stderr.startswith("rqmaint: error:") and "Traceback" not in result.stderr


def test_max_cycles_ends_even_if_redis_is_down(cli):
    # A closed port: the start-up connection fails; that failed attempt counts as a cycle
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = cli(
        "watch", "--max-cycles", "2", "--interval", "0.1", "--json", "--url", f"redis://127.0.0.1:{port}/0"
    )
    assert result.exit_code == 1
    cycles = [json.loads(line) for line in result.stdout.splitlines()]
    assert [c["ok"] for c in cycles] == [False, False]
    assert "retrying in" in result.stderr


def _families() -> dict[str, tuple[str, set[str]]]:
    """Every metric family watch serves: exposed name -> (type, label names)."""
    import prometheus_client

    from rqmaint.metrics import Metrics

    out = {}
    for metric in vars(Metrics()).values():
        if isinstance(metric, prometheus_client.metrics.MetricWrapperBase):
            family = metric.describe()[0]
            name = family.name + ("_total" if family.type == "counter" else "")
            out[name] = (family.type, set(metric._labelnames))
    return out


def test_every_metric_is_documented_in_the_readme():
    # The README's metrics table: one row per metric, with its type and its labels
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("<!-- metrics table:", 1)[1].split("\n\n", 1)[0]
    rows = {}
    for line in table.splitlines()[3:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        (name,) = re.findall(r"`([^`]+)`", cells[0])
        rows[name] = (cells[1], set(re.findall(r"`([a-z_]+)`(?:\s*\([^)]*\))?", cells[2])))
    served = _families()
    assert set(rows) == set(served), (
        f"served, not documented: {sorted(set(served) - set(rows))}; "
        f"documented, not served: {sorted(set(rows) - set(served))}"
    )
    for name, (kind, labels) in served.items():
        assert rows[name] == (kind, labels), (name, rows[name], (kind, labels))


def test_stalled_jobs_show_before_they_are_abandoned(cli, client, abandon):
    # Given a job whose worker was SIGKILLed 65 s ago (its deadline still 25 s ahead)
    ab = abandon("default")
    silence(client, "default", 65, ab.worker_names)
    # When watch looks (view-only), with RQ's default monitoring interval
    result = cli("watch", "--max-cycles", "1", "--json")
    assert result.exit_code == 0, result.stderr
    (h,) = json.loads(result.stdout)["health"]
    # Then the job is stalled, not abandoned, with its worker and the time until it is abandoned
    assert (h["stalled"], h["oldest_abandoned_age"]) == (1, None)
    (job,) = h["stalled_jobs"]
    assert (job["job_id"], job["worker"]) == (ab.job_ids[0], ab.worker_names[0])
    assert 65 <= job["silent_for"] < 95 and 0 < job["abandoned_in"] <= 26
    assert json.loads(result.stdout)["queues"][0]["abandoned"] == 0
    # And for workers monitoring every 120 s (stalled after 240 s) it is not stalled yet
    slow = cli("watch", "--max-cycles", "1", "--json", "--job-monitoring-interval", "120")
    assert json.loads(slow.stdout)["health"][0]["stalled"] == 0
    # And nothing was written: a look only
    assert client.zcard("rq:wip:default") == 1 and client.llen("rq:queue:default") == 0


def test_metrics_of_a_staged_incident(client, abandon):
    # Given one stalled and one abandoned job (workers SIGKILLed), and a foreign lock with no expiry
    from rqmaint.metrics import Metrics
    from rqmaint.watch import Watcher, WatchOptions

    stalled = abandon("emails")
    silence(client, "emails", 65, stalled.worker_names)
    abandon("default")
    age_abandoned(client, "default", 200)
    client.set("rq:clean_registries:emails", "maintenance-by-ops")
    metrics = Metrics()
    watcher = Watcher(client, WatchOptions(requeue_abandoned=True))
    # When two cycles run (the second sees the same lock again)
    for _ in range(2):
        metrics.observe(watcher.run_cycle())
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in metrics.registry.collect()
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    # Then each gauge shows it
    assert value("rqmaint_stalled_jobs", queue="emails") == 1
    assert value("rqmaint_stalled_jobs", queue="default") == 0
    assert 65 <= value("rqmaint_oldest_stalled_job_age_seconds", queue="emails") < 95
    assert 0 < value("rqmaint_next_abandonment_seconds", queue="emails") <= 26
    assert ("rqmaint_next_abandonment_seconds", (("queue", "default"),)) not in samples
    assert value("rqmaint_oldest_abandoned_job_age_seconds", queue="default") == 0  # requeued at once
    assert value("rqmaint_jobs_requeued_total", queue="default") == 1
    assert value("rqmaint_jobs_given_up_total", queue="default") == 0  # exists from 0
    assert value("rqmaint_lock_no_expiry", queue="emails", holder_kind="other") == 1
    assert value("rqmaint_lock_held_seconds", queue="emails", holder_kind="other") > 0  # since first seen
    assert value("rqmaint_lock_no_expiry", queue="default", holder_kind="none") == 0
    assert value("rqmaint_queues_skipped_locked_total", queue="emails") == 2
    assert 0 <= value("rqmaint_last_success_age_seconds", queue="default", kind="requeue") < 30
    assert ("rqmaint_last_success_age_seconds", (("kind", "requeue"), ("queue", "emails"))) not in samples
    assert value("rqmaint_script_calls_total", script="requeue_started", result="ok") >= 1
    assert value("rqmaint_script_duration_seconds_count", script="requeue_started") >= 1


def test_stalled_jobs_on_the_dashboard_and_the_cycle_line(cli, client, abandon):
    # Given a job whose worker was SIGKILLed 65 s ago
    ab = abandon("default")
    silence(client, "default", 65, ab.worker_names)
    # Then the dashboard has a stalled column and names the job, its worker and when it is abandoned
    shown = cli("watch", "--max-cycles", "1", env={"TTY_COMPATIBLE": "1"})
    assert shown.exit_code == 0, shown.stderr
    lines = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown.stdout).splitlines()  # without ANSI codes
    header = next(x for x in lines if "stalled" in x and "┃" in x)
    columns = [c.strip() for c in header.split("┃")[1:5]]
    assert columns == ["queue", "started", "stalled", "abandoned in"]  # the zero columns fold away
    row = next(x for x in lines if x.startswith("│ default "))
    assert re.search(r"│ +! 1 │ +! \d+s │", row)  # stalled, then its time to abandoned: problems, marked
    line = next(x for x in lines if x.startswith("stalled: "))
    assert f"default job {ab.job_ids[0]} (worker {ab.worker_names[0]} silent " in line
    assert re.search(r"abandoned in \d+s\)$", line)
    # And the line per cycle off a terminal counts it
    plain = cli("watch", "--max-cycles", "1")
    assert " abandoned=0 stalled=1 " in plain.stdout


def test_the_dashboard_says_how_many_stalled_jobs_it_names(cli, client):
    # Given 7 started jobs, deadlines ahead, whose worker's hash is gone (it stopped heartbeating)
    now = int(time.time())
    client.sadd("rq:queues", "rq:queue:default")
    for i in range(7):
        client.zadd("rq:wip:default", {f"job{i}:e{i}": now + 20})
        client.hset(f"rq:job:job{i}", mapping={"status": "started", "worker_name": "gone"})
    # When the dashboard shows them
    shown = cli("watch", "--max-cycles", "1", env={"TTY_COMPATIBLE": "1", "COLUMNS": "80"})
    assert shown.exit_code == 0, shown.stderr
    lines = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown.stdout).splitlines()
    # Then it names 5, says "5 of 7 shown", and durations read as everywhere else
    named = [x for x in lines if x.startswith("stalled: default job ")]
    assert len(set(named)) == 5, lines
    assert any(x.startswith("stalled jobs: 5 of 7 shown") for x in lines), lines
    assert all(re.search(r", abandoned in (\d+s|\d+m( \d+s)?)\)$", x) for x in named), named


def test_include_failed_takes_jobs_rq_failed_as_abandoned_never_raised(
    cli, client, abandon, redis_url, tmp_path
):
    from rq.registry import StartedJobRegistry

    from tests.support import start_worker

    # Given two abandoned jobs that RQ's own maintenance failed (AbandonedJobError) before watch ran,
    # and a job that failed by raising
    ab = abandon("default", 2)
    age_abandoned(client, "default", 200)
    StartedJobRegistry("default", connection=client).cleanup()
    raised = Queue("default", connection=client).enqueue(jobs.boom)
    worker = start_worker(redis_url, ["default"], burst=True, log_dir=tmp_path)
    assert worker.wait(timeout=60) == 0, worker.log()
    assert client.zcard("rq:failed:default") == 3
    # When one watch cycle requeues without --include-failed, nothing moves
    plain = cli("watch", "--requeue-abandoned", "--max-cycles", "1", "--json")
    assert plain.exit_code == 0, plain.stderr
    assert json.loads(plain.stdout.splitlines()[-1])["totals"]["requeued"] == 0
    # and one cycle with it takes exactly the abandoned ones
    result = cli("watch", "--requeue-abandoned", "--include-failed", "--max-cycles", "1", "--json")
    assert result.exit_code == 0, result.stderr
    cycle = json.loads(result.stdout.splitlines()[-1])
    assert cycle["totals"]["requeued"] == 2
    assert sorted(cycle["requeued"][0]["requeued_jobs"]) == sorted(ab.job_ids)
    assert sorted(client.lrange("rq:queue:default", 0, -1)) == sorted(j.encode() for j in ab.job_ids)
    assert [m.decode() for m in client.zrange("rq:failed:default", 0, -1)] == [raised.id]
    # And a stock RQ worker runs each of them once more
    worker = start_worker(redis_url, ["default"], burst=True, log_dir=tmp_path)
    assert worker.wait(timeout=60) == 0, worker.log()
    assert sorted(ab.reruns()) == sorted(ab.job_ids)


def test_include_failed_needs_requeue_abandoned(cli):
    result = cli("watch", "--include-failed", "--max-cycles", "1")
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert "'--include-failed': needs --requeue-abandoned" in line
