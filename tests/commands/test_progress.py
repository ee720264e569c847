"""Progress on a terminal (issue 10 item 2): rich's bars on stderr, with counts, for requeue-abandoned
(and its dry run) and for status over many queues; nothing of it off a terminal or with --json."""

from __future__ import annotations

import os
import pty
import subprocess
import threading

import pytest
from rq import Queue

from tests import jobs
from tests.support import age_abandoned, clone_job, process_env, rqmaint_argv

QUEUES = ("first", "second")


def _with_terminal_stderr(argv: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run ``argv`` with stderr on a pseudo-terminal (stdout a pipe); returns code, stdout, stderr."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain)
    reader.start()
    out, _ = proc.communicate(timeout=120)
    reader.join(timeout=30)
    os.close(master)
    return proc.returncode, out.decode(), b"".join(chunks).decode(errors="replace")


def _incident(client, abandon, n: int = 300) -> None:
    for q in QUEUES:
        ab = abandon(q)
        age_abandoned(client, q, 200)
        clone_job(client, ab.job_ids[0], n - 1)


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "real"])
def test_requeue_shows_progress_on_a_terminal(client, abandon, redis_url, dry_run):
    _incident(client, abandon)
    argv = rqmaint_argv(
        "requeue-abandoned", *QUEUES, "--batch-size", "5", *(["--dry-run"] if dry_run else [])
    )
    code, out, err = _with_terminal_stderr(argv, process_env(redis_url, {"COLUMNS": "120"}))
    assert code == 0, err
    assert "queues" in err and "/2" in err  # the run over its queues, counted
    assert f"{'dry run' if dry_run else 'requeue'} first" in err and "batches" not in out
    assert "\x1b[" not in out  # stdout stays data


def test_no_progress_off_a_terminal_or_with_json(client, abandon, redis_url):
    _incident(client, abandon, n=50)
    plain = subprocess.run(
        rqmaint_argv("requeue-abandoned", *QUEUES, "--dry-run"),
        env=process_env(redis_url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert plain.returncode == 0, plain.stderr
    assert plain.stderr.splitlines() == [f"looking at queue {q!r}" for q in QUEUES]
    code, out, err = _with_terminal_stderr(
        rqmaint_argv("requeue-abandoned", *QUEUES, "--dry-run", "--json"), process_env(redis_url)
    )
    assert code == 0 and out.startswith("{")
    assert err == ""  # --json: no bars, no lines


def test_status_over_many_queues_shows_progress(client, redis_url):
    for i in range(25):
        Queue(f"q{i}", connection=client).enqueue(jobs.add, 1, 1)
    code, _, err = _with_terminal_stderr(rqmaint_argv("status"), process_env(redis_url))
    assert code == 0, err
    assert "reading 25 queues" in err
    code, _, err = _with_terminal_stderr(rqmaint_argv("status", "q1", "q2"), process_env(redis_url))
    assert code == 0 and "reading" not in err  # a few queues: over before a bar would help


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "real"])
def test_clean_over_many_queues_shows_progress_on_a_terminal(client, redis_url, dry_run):
    # Given 25 queues, each with an expired finished job
    for i in range(25):
        job = Queue(f"q{i}", connection=client).enqueue(jobs.add, 1, 1)
        client.lrem(f"rq:queue:q{i}", 0, job.id)
        client.zadd(f"rq:finished:q{i}", {job.id: 1})
    argv = rqmaint_argv("clean", *(["--dry-run"] if dry_run else []))
    # When clean runs with stderr on a terminal
    code, out, err = _with_terminal_stderr(argv, process_env(redis_url, {"COLUMNS": "120"}))
    # Then stderr has the bars: the queues counted, the queue being cleaned named
    assert code == 0, err
    assert "queues" in err and "/25" in err
    assert f"{'plan' if dry_run else 'clean'} q" in err
    assert "\x1b[" not in out and out.splitlines()[0].startswith("queue\t")  # stdout stays data


def test_clean_shows_no_progress_off_a_terminal_or_with_json(client, redis_url):
    for i in range(3):
        Queue(f"q{i}", connection=client).enqueue(jobs.add, 1, 1)
    plain = subprocess.run(
        rqmaint_argv("clean", "--dry-run"),
        env=process_env(redis_url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert plain.returncode == 0, plain.stderr
    assert plain.stderr.splitlines() == [f"planning queue 'q{i}'" for i in range(3)]
    code, out, err = _with_terminal_stderr(
        rqmaint_argv("clean", "--dry-run", "--json"), process_env(redis_url)
    )
    assert code == 0 and out.startswith("{")
    assert err == ""  # --json: no bars, no lines
