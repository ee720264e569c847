"""Real ``rq worker`` processes, abandoned jobs, and honest time travel.

Workers run the stock RQ CLI (``python -m rq.cli worker``) from the repository root with the
root on ``PYTHONPATH``, so job functions are importable as ``tests.jobs.<name>``.  Every worker
gets a session of its own (``start_new_session=True``): killing that session is how a test
models a pod's death (see :func:`tests.support.procs.kill_session`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from rq import Queue

from tests import jobs

from ._util import as_bytes, as_text, zmembers
from .procs import is_running, kill_session, read_stat, session_members
from .waiting import wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Every worker started by :func:`start_worker` in this process, in order.  The test session
#: (conftest) kills the ones still running after each test and prints their logs on failure.
STARTED_WORKERS: list[WorkerProcess] = []


class WorkerProcess(subprocess.Popen[bytes]):
    """``Popen`` of an ``rq worker``, plus its name, queues, URL and log file."""

    name: str
    queues: list[str]
    url: str
    log_path: Path

    def log(self) -> str:
        """The worker's combined stdout/stderr so far."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "<no worker log>"
        return f"--- rq worker {self.name} (pid {self.pid}) log {self.log_path} ---\n{text}"

    def kill_session(self) -> list[int]:
        """SIGKILL the worker and every process of its session (the work horse too), reap it."""
        return kill_session(self)


def worker_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for RQ subprocesses: the repo root first on PYTHONPATH, unbuffered output."""
    env = dict(os.environ)
    for var in ("RQ_REDIS_URL", "REDIS_URL"):
        env.pop(var, None)
    pythonpath = [str(REPO_ROOT)]
    if env.get("PYTHONPATH"):
        pythonpath.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(pythonpath)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def start_worker(
    url: str,
    queues: Sequence[str],
    *,
    name: str | None = None,
    burst: bool = False,
    extra_args: Sequence[str] = (),
    log_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    python: str | os.PathLike[str] | None = None,
) -> WorkerProcess:
    """Start ``python -m rq.cli worker --url URL --name NAME [--burst] EXTRA... QUEUES...``.

    The worker is a stock forking ``rq.worker.Worker`` in a new session, cwd = repository root,
    stdout+stderr to ``<log_dir>/worker-<name>.log`` (a temp dir by default).  ``name`` defaults
    to a unique ``rqm-test-<hex>``.  Returns at once: wait for what you need with ``wait_for``
    (e.g. ``client.exists(f"rq:worker:{w.name}")``).  A burst worker exits by itself
    (``w.wait(timeout=...)``); otherwise stop it with ``w.kill_session()`` or ``w.terminate()``.
    ``python``: the interpreter to run (default ``sys.executable``), e.g. a virtual environment's
    with another RQ version (see tests/versions).
    """
    name = name or f"rqm-test-{uuid.uuid4().hex[:12]}"
    if log_dir is None:
        log_dir = Path(tempfile.mkdtemp(prefix="rqmaint-worker-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"worker-{name}.log"
    argv = [os.fspath(python or sys.executable), "-m", "rq.cli", "worker", "--url", url, "--name", name]
    if burst:
        argv.append("--burst")
    argv += [*extra_args, *queues]
    with open(log_path, "ab") as log:
        proc = WorkerProcess(
            argv,
            cwd=REPO_ROOT,
            env=worker_env(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    proc.name = name
    proc.queues = list(queues)
    proc.url = url
    proc.log_path = log_path
    STARTED_WORKERS.append(proc)
    return proc


def stop_started_workers() -> list[WorkerProcess]:
    """Kill (whole session) every worker from :data:`STARTED_WORKERS` that still runs; clear it.

    Returns the workers that were started since the last call (for their logs).
    """
    started = list(STARTED_WORKERS)
    STARTED_WORKERS.clear()
    for proc in started:
        if proc.poll() is None or session_members(proc.pid):
            kill_session(proc)
    return started


@dataclass
class Abandoned:
    """Jobs left ``started`` by workers that were SIGKILLed mid-job (lists are in job order)."""

    queue: str
    job_ids: list[str]
    worker_names: list[str]
    execution_ids: list[str]
    worker_pids: list[int]
    horse_pids: list[int]
    markers: list[Path] = field(default_factory=list)
    workers: list[WorkerProcess] = field(repr=False, default_factory=list)

    @property
    def wip_members(self) -> list[str]:
        """The ``rq:wip:<queue>`` members, ``<job_id>:<execution_id>`` (RQ 1.16: ``<job_id>``)."""
        return [f"{j}:{e}" if e else j for j, e in zip(self.job_ids, self.execution_ids, strict=True)]

    def reruns(self) -> list[str]:
        """Ids of the jobs that ran again after being abandoned (one line per run, any order).

        A requeued abandoned job (or a clone of one) does not hang when it runs again: it appends
        its id to ``<marker>.reruns`` (see :func:`tests.jobs.block`).  ``sorted(ab.reruns()) ==
        sorted(ab.job_ids)`` proves each job ran exactly once more.
        """
        ids: list[str] = []
        for marker in self.markers:
            path = Path(f"{marker}.reruns")
            if path.exists():
                ids += path.read_text().split()
        return ids


def _wip_member(client: redis.Redis, queue: str, job_id: str, key_prefix: str = "rq") -> str | None:
    """The job's ``rq:wip`` member: ``<job_id>:<execution_id>`` (RQ >= 2.0) or ``<job_id>`` (1.16)."""
    prefix = f"{job_id}:".encode()
    for member in client.zrange(f"{key_prefix}:wip:{queue}", 0, -1):
        raw = as_bytes(member)
        if raw.startswith(prefix) or raw == job_id.encode():
            return as_text(member)
    return None


#: Run by another interpreter (another RQ version): enqueue jobs with that version's own Queue.
#: argv: url, queue, JSON list of [func dotted path, args, kwargs]; prints the JSON list of ids.
#: kwargs: ``retry`` N -> ``Retry(max=N)``; ``on_failure``/``on_success`` dotted path -> the function.
_ENQUEUE_SCRIPT = """
import importlib, json, sys
from redis import Redis
from rq import Queue, Retry
url, queue, specs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
def resolve(path):
    module, _, attr = path.rpartition(".")
    return getattr(importlib.import_module(module), attr)
classes = {k: resolve(v) for k, v in json.loads(sys.argv[4]).items()} if len(sys.argv) > 4 else {}
q = Queue(queue, connection=Redis.from_url(url), **classes)
ids = []
for func, args, kwargs in specs:
    if "retry" in kwargs:
        kwargs["retry"] = Retry(max=kwargs["retry"])
    for name in ("on_failure", "on_success"):
        if name in kwargs:
            kwargs[name] = resolve(kwargs[name])
    ids.append(q.enqueue(func, *args, **kwargs).id)
print(json.dumps(ids))
"""


def enqueue_with(
    python: str | os.PathLike[str],
    url: str,
    queue: str,
    specs: Sequence[tuple[str, Sequence[Any], Mapping[str, Any]]],
    env: Mapping[str, str] | None = None,
    classes: Mapping[str, str] | None = None,
) -> list[str]:
    """Enqueue jobs with the RQ of another interpreter (``python -c``, repo root on PYTHONPATH), so the
    job hashes are written by that RQ version.  ``specs``: ``(func dotted path, args, kwargs)``, JSON
    values only (see ``_ENQUEUE_SCRIPT`` for ``retry``/``on_failure``).  ``classes``: ``Queue`` keyword
    arguments given as dotted paths (``serializer``, ``job_class``).  Returns the job ids."""
    argv = [os.fspath(python), "-c", _ENQUEUE_SCRIPT, url, queue, json.dumps([list(s) for s in specs])]
    proc = subprocess.run(
        [*argv, json.dumps(dict(classes or {}))],
        cwd=REPO_ROOT,
        env=worker_env(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"enqueue with {python} failed:\n{proc.stderr}")
    return [str(j) for j in json.loads(proc.stdout.strip().splitlines()[-1])]


def make_abandoned(
    url: str,
    queue: str,
    n: int = 1,
    *,
    workers: int | None = None,
    workdir: Path | None = None,
    job_kwargs: Mapping[str, Any] | None = None,
    timeout: float = 30.0,
    python: str | os.PathLike[str] | None = None,
    key_prefix: str = "rq",
    serializer: str | None = None,
    job_class: str | None = None,
) -> Abandoned:
    """Enqueue ``n`` :func:`tests.jobs.block` jobs on ``queue`` and abandon them for real.

    Returns an :class:`Abandoned` (job ids, worker names, execution ids, pids, marker files).

    Runs them on real ``rq worker`` processes, ``workers`` at a time (default: all ``n`` in
    parallel; one worker runs one job at a time, so fewer workers mean sequential rounds).  In
    each round it waits until every job of the round has written its marker file, has status
    ``started`` and its ``<id>:<execution_id>`` is in ``rq:wip:<queue>``; then it SIGKILLs each
    worker's whole session (worker and work horse, like a pod's death), reaps the workers and
    checks that neither the workers nor the horses run any more.

    Left behind (RQ 2.12): the job hash (``status started``, ``worker_name``, ``started_at``, no
    TTL), the ``rq:wip`` member with score start+90 (heartbeat TTL), ``rq:execution:<id>:<e>``
    (TTL 90), ``rq:executions:<id>`` (TTL 150), the worker hash ``rq:worker:<name>`` (TTL ~90,
    ``state busy``, ``current_job``) and its membership of ``rq:workers`` / ``rq:workers:<q>``.
    The jobs are not abandoned in RQ's eyes until that deadline passes: see :func:`age_abandoned`.

    ``job_kwargs`` are passed to every ``Queue.enqueue`` (e.g. ``retry``, ``failure_ttl``,
    ``meta``, ``job_timeout``).  Marker files and worker logs go to ``workdir`` (a temp dir by
    default).

    ``python``: another interpreter (a virtual environment with another RQ version, see
    tests/versions): the jobs are then enqueued by that RQ (:func:`enqueue_with`; ``job_kwargs``
    must be JSON values) and run by its ``rq worker``.  RQ 1.16 has no executions: its ``rq:wip``
    member is the plain job id and ``execution_ids`` holds ``""``.

    ``key_prefix``: RQ 3.0's ``RQ_KEY_PREFIX`` for the enqueuing process and the workers (a prefix
    other than ``rq`` always enqueues in a subprocess, ``python`` or this interpreter).
    ``serializer``/``job_class``: dotted paths, for the enqueuing ``Queue`` and the workers (``-S``,
    ``-j``); they too enqueue in a subprocess.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    per_round = n if workers is None else max(1, workers)
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="rqmaint-abandon-"))
    workdir.mkdir(parents=True, exist_ok=True)
    client = redis.Redis.from_url(url)
    try:
        markers: dict[str, Path] = {}
        paths = [workdir / f"block-{uuid.uuid4().hex}.started" for _ in range(n)]
        env = {"RQ_KEY_PREFIX": key_prefix} if key_prefix != "rq" else None
        classes = {k: v for k, v in (("serializer", serializer), ("job_class", job_class)) if v}
        worker_args = [
            a
            for k, flag in (("serializer", "-S"), ("job_class", "-j"))
            if k in classes
            for a in (flag, classes[k])
        ]
        if (env is not None or classes) and python is None:
            python = sys.executable
        if python is None:
            q = Queue(queue, connection=client)
            for marker in paths:
                job = q.enqueue(jobs.block, str(marker), **dict(job_kwargs or {}))
                markers[job.id] = marker
        else:
            spec = [("tests.jobs.block", [str(m)], dict(job_kwargs or {})) for m in paths]
            ids = enqueue_with(python, url, queue, spec, env=env, classes=classes)
            markers = dict(zip(ids, paths, strict=True))
        job_ids = list(markers)

        result = Abandoned(queue, job_ids, [], [], [], [], markers=[markers[j] for j in job_ids])
        for start in range(0, n, per_round):
            batch = job_ids[start : start + per_round]
            procs = [
                start_worker(url, [queue], log_dir=workdir, python=python, env=env, extra_args=worker_args)
                for _ in batch
            ]
            result.workers += procs

            def batch_started(batch: list[str] = batch) -> bool:
                for job_id in batch:
                    if not markers[job_id].exists():
                        return False
                    if as_bytes(client.hget(f"{key_prefix}:job:{job_id}", "status")) != b"started":
                        return False
                    if _wip_member(client, queue, job_id, key_prefix) is None:
                        return False
                return True

            wait_for(
                batch_started,
                timeout=timeout,
                what=f"{len(batch)} block job(s) on queue {queue!r} to be started",
                diagnostics=lambda procs=procs: "\n".join(p.log() for p in procs),  # type: ignore[misc]
            )
            horses = {job_id: int(markers[job_id].read_text()) for job_id in batch}
            horse_stats = {job_id: read_stat(pid) for job_id, pid in horses.items()}
            for proc in procs:
                proc.kill_session()
            for proc in procs:
                assert proc.returncode is not None, f"worker {proc.name} was not reaped"
                assert not is_running(proc.pid), f"worker {proc.name} pid {proc.pid} still runs"
            for job_id, pid in horses.items():
                stat = horse_stats[job_id]
                start_time = stat.start_time if stat is not None else None
                assert not is_running(pid, start_time), f"work horse {pid} of job {job_id} still runs"
            for job_id in batch:
                member = _wip_member(client, queue, job_id, key_prefix)
                assert member is not None, f"job {job_id} left rq:wip:{queue} when its worker died"
                raw_worker = client.hget(f"{key_prefix}:job:{job_id}", "worker_name") or b""
                result.worker_names.append(as_text(raw_worker))
                result.execution_ids.append(member.split(":", 1)[1] if ":" in member else "")
                result.horse_pids.append(horses[job_id])
            result.worker_pids += [p.pid for p in procs]
        return result
    finally:
        client.close()


@dataclass
class AgeReport:
    """What :func:`age_abandoned` changed."""

    shifted: dict[str, float]  # rq:wip member -> new score
    deleted: list[str]  # keys removed because their TTL would have run out


def age_abandoned(
    client: redis.Redis,
    queue: str,
    seconds: float = 200,
    *,
    keep_worker_hashes: bool = False,
    key_prefix: str = "rq",
) -> AgeReport:
    """Pretend ``seconds`` have passed since the jobs of ``rq:wip:<queue>`` were last heartbeated.

    Time travel, not a real wait.  RQ (2.x) treats a started job as abandoned once its
    ``rq:wip:<queue>`` score (a deadline: last heartbeat + ~90 s) is in the past; a tool that also
    checks the owning worker's liveness additionally needs the dead worker's ``rq:worker:<name>``
    hash to be gone (its TTL is ~90 s during a job).  Instead of waiting, this:

    * unless ``keep_worker_hashes``: deletes every ``rq:worker:*``, ``rq:execution:*`` and
      ``rq:executions:*`` key (whole DB, any queue) whose remaining TTL is below ``seconds``,
      exactly the keys Redis itself would have expired by then;
    * then subtracts ``seconds`` from every finite score in ``rq:wip:<queue>``.

    Not simulated: surviving keys keep their TTLs, and timestamps inside hashes
    (``last_heartbeat``, ``started_at``…) are unchanged; other expiring keys (results, finished
    jobs, locks) are left alone; the ``rq:workers`` sets keep the dead worker (as in real life).
    With ``keep_worker_hashes=True`` only the scores move: the worker still looks alive, which is
    what a live-worker guard must refuse to touch.  ``key_prefix``: RQ 3.0's ``RQ_KEY_PREFIX``.
    """
    wip = f"{key_prefix}:wip:{queue}"
    shifted: dict[str, float] = {}
    for member, score in zmembers(client, wip):
        if score in (float("inf"), float("-inf")):
            continue
        shifted[as_text(member)] = score - seconds
    deleted: list[str] = []
    if not keep_worker_hashes:
        limit_ms = int(seconds * 1000)
        for pattern in (f"{key_prefix}:worker:*", f"{key_prefix}:execution:*", f"{key_prefix}:executions:*"):
            keys = list(client.scan_iter(match=pattern, count=1000))
            if not keys:
                continue
            with client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.pttl(key)
                ttls = pipe.execute()
            doomed = [k for k, ttl in zip(keys, ttls, strict=True) if 0 <= int(ttl) < limit_ms]
            if doomed:
                client.delete(*doomed)
                deleted += [as_text(k) for k in doomed]
    # The scores move last: a maintenance cycle running meanwhile (rqmaint workers clean every second
    # in some tests) must never see a due entry whose dead worker's hash is still there, a state real
    # time does not produce (the hash expires first), in which RQ's own cleanup fails the job while
    # rqmaint's live-worker guard leaves it.
    if shifted:
        client.zadd(wip, shifted, xx=True)
    return AgeReport(shifted, sorted(deleted))
