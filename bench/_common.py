"""Shared helpers for the rqmaint benchmarks in bench/.

* A private ``redis-server`` per benchmark: a free loopback port, ``--save '' --appendonly no``, its own
  temporary directory; stopped (SIGTERM, then SIGKILL) when the benchmark ends, also on errors and on
  SIGINT/SIGTERM. Nothing else is ever contacted.
* Whole-process measurement of one child: wall clock from just before it is started to the moment it
  is reaped, and its peak RSS, exact per run. The peak RSS is NOT read with ``os.wait4`` or
  ``getrusage`` from this process, nor by a ``python -c`` wrapper that reports its own ``ru_maxrss``:
  Linux seeds a process's ``ru_maxrss`` at ``execve`` with the high-water RSS of the memory image it
  replaces, and Python's subprocess starts children with vfork (the parent's own image). A child of a
  benchmark that holds a 600,000-key list would be reported at the benchmark's peak (checked: ``python
  -c pass`` started from a process that once touched 300 MiB "peaks" at 311 MiB via wait4, 10 MiB via
  GNU time). So each child is started through GNU ``/usr/bin/time -f %M -o FILE`` (Debian package
  ``time``): a small C process that fork()s its own small image and execs the command, then reports the
  command's ``ru_maxrss`` (KiB) from wait4. Without ``/usr/bin/time`` a tiny launcher process, started
  while this process is still small (see ``_Launcher``), does the same fork/exec/wait4. Neither tool
  forks children of its own in the measured commands (an ``rq worker`` is never measured), so the figure
  is the CLI's own peak. Output goes to temporary files, not pipes, so a chatty child cannot block and
  no reader thread competes for the 2 CPUs.
* Identical data for every run: a data set is built once in a *template* DB, its key names are listed
  once, and before every run the *work* DB is FLUSHDB'd and every key is copied into it with pipelined
  server-side ``COPY key key DB <work>`` (keeps values and TTLs byte for byte, no round trip of the
  values through Python). The restore is never part of a timed interval.
* Results: JSON on stdout and in bench/results/<name>.json; a human summary on stderr.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
VENV_BIN = Path(os.environ.get("BENCH_VENV_BIN", "/tmp/venv/bin"))
PYTHON = str(VENV_BIN / "python")
RQMAINT = str(VENV_BIN / "rqmaint")
RQ = str(VENV_BIN / "rq")
REDIS_SERVER = os.environ.get("BENCH_REDIS_SERVER") or shutil.which("redis-server") or "/usr/bin/redis-server"


def text(value: Any) -> str:
    """A Redis reply as text (bytes are decoded as UTF-8, undecodable bytes replaced)."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


LOAD_AT_START = os.getloadavg()


def add_nice_option(ap: Any) -> None:
    ap.add_argument(
        "--nice",
        type=int,
        default=0,
        help="change this benchmark's scheduling priority (inherited by redis-server and every measured "
        "child), e.g. -10 on a machine where other work competes for the 2 CPUs; negative needs root",
    )


def apply_nice(value: int) -> int:
    if value:
        os.nice(value)
    return os.getpriority(os.PRIO_PROCESS, 0)


def warn_if_busy() -> None:
    """The machine has 2 CPUs: anything else running (tests, builds) skews whole-process timings."""
    load = os.getloadavg()[0]
    if load > 0.5:
        log(f"warning: 1-minute load average is {load:.2f}: other processes compete for the CPUs")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- private redis-server ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A throw-away redis-server on 127.0.0.1:<free port>, no persistence."""

    def __init__(self, databases: int = 16) -> None:
        self.databases = databases
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.dir = ""
        self.version = ""

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, db: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, db=db, socket_timeout=600)

    def start(self) -> RedisServer:
        self.dir = tempfile.mkdtemp(prefix="rqmaint-bench-redis-")
        for _attempt in range(5):
            self.port = _free_port()
            argv = [
                REDIS_SERVER,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", self.dir,
                "--databases", str(self.databases),
                "--daemonize", "no",
                "--logfile", os.path.join(self.dir, "redis.log"),
            ]  # fmt: skip
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break  # port taken in the meantime: try another
                try:
                    info = self.client(0).info("server")
                    self.version = str(info.get("redis_version", ""))
                    atexit.register(self.stop)
                    return self
                except redis.ConnectionError:
                    time.sleep(0.05)
            self.stop()
        raise RuntimeError(f"could not start {REDIS_SERVER} (see {self.dir}/redis.log)")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.dir and proc is not None:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def install_signal_exit() -> None:
    """Turn SIGTERM into SystemExit so ``with RedisServer()`` and atexit stop the server."""

    def _handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _handler)


# -- identical data for every run -------------------------------------------------------------------------


class Snapshot:
    """The keys of a template DB, copied into a work DB before each run (server side, pipelined)."""

    def __init__(self, server: RedisServer, template_db: int) -> None:
        self.server = server
        self.template_db = template_db
        src = server.client(template_db)
        self.keys: list[bytes] = list(src.scan_iter(count=10000))
        self.dbsize = int(src.dbsize())
        assert len(self.keys) == self.dbsize, "template changed while listing it"

    def restore(self, work_db: int, chunk: int = 20000) -> float:
        t0 = time.perf_counter()
        self.server.client(work_db).flushdb()
        src = self.server.client(self.template_db)
        for i in range(0, len(self.keys), chunk):
            pipe = src.pipeline(transaction=False)
            for k in self.keys[i : i + chunk]:
                pipe.execute_command("COPY", k, k, "DB", work_db)  # type: ignore[no-untyped-call]
            replies = pipe.execute()
            if not all(r == 1 for r in replies):
                raise RuntimeError("COPY into the work DB failed for some key")
        got = int(self.server.client(work_db).dbsize())
        if got != self.dbsize:
            raise RuntimeError(f"restore copied {got} keys, expected {self.dbsize}")
        return time.perf_counter() - t0


# -- measured child processes -----------------------------------------------------------------------------


@dataclass
class Measured:
    argv: list[str]
    wall: float  # seconds, start to reaped
    maxrss_kb: int  # peak resident set of this child alone, KiB
    returncode: int
    stdout: bytes
    stderr: bytes
    cpu: float = 0.0  # user + system CPU seconds of the child (context: is the machine contended?)

    def check(self, ok_codes: Sequence[int] = (0,)) -> Measured:
        if self.returncode not in ok_codes:
            raise RuntimeError(
                f"{' '.join(self.argv)} exited {self.returncode}\n"
                f"stdout: {self.stdout[-2000:]!r}\nstderr: {self.stderr[-2000:]!r}"
            )
        return self


GNU_TIME = "/usr/bin/time"

_LAUNCHER = r"""
import json, os, sys, time
for line in sys.stdin:
    job = json.loads(line)
    out = os.open(job["stdout"], os.O_WRONLY)
    err = os.open(job["stderr"], os.O_WRONLY)
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            os.dup2(out, 1)
            os.dup2(err, 2)
            if job["cwd"]:
                os.chdir(job["cwd"])
            os.execve(job["argv"][0], job["argv"], job["env"])
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    os.close(out)
    os.close(err)
    reply = {"wall": wall, "maxrss": usage.ru_maxrss, "rc": os.waitstatus_to_exitcode(status),
             "cpu": usage.ru_utime + usage.ru_stime}
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
"""


class _Launcher:
    """Fallback without /usr/bin/time: a small Python process that fork/exec/wait4s each command.

    It must be started while the benchmark is still small (``measurement_setup()`` at the top of
    main()); its own image (~10 MiB) is then the floor of what a child can be reported at.
    """

    proc: subprocess.Popen[str] | None = None

    @classmethod
    def start(cls) -> None:
        if cls.proc is None:
            cls.proc = subprocess.Popen(
                [sys.executable, "-c", _LAUNCHER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
            atexit.register(cls.proc.kill)

    @classmethod
    def run(cls, argv: list[str], env: dict[str, str], cwd: str | None, out: str, err: str) -> dict[str, Any]:
        cls.start()
        assert cls.proc is not None and cls.proc.stdin is not None and cls.proc.stdout is not None
        job = {"argv": argv, "env": env, "cwd": cwd, "stdout": out, "stderr": err}
        cls.proc.stdin.write(json.dumps(job) + "\n")
        cls.proc.stdin.flush()
        reply: dict[str, Any] = json.loads(cls.proc.stdout.readline())
        return reply


def measurement_method() -> str:
    return "gnu-time" if os.access(GNU_TIME, os.X_OK) else "launcher"


def measurement_setup() -> str:
    """Call first thing in main(): starts the fallback launcher while this process is small."""
    method = measurement_method()
    if method == "launcher":
        _Launcher.start()
    return method


def run_measured(
    argv: list[str], env: dict[str, str] | None = None, cwd: str | None = None, timeout: float = 900
) -> Measured:
    env = dict(os.environ) if env is None else env
    with tempfile.TemporaryDirectory(prefix="rqmaint-bench-run-") as tmp:
        out, err, rss_file = (os.path.join(tmp, n) for n in ("stdout", "stderr", "maxrss"))
        for path in (out, err, rss_file):
            open(path, "wb").close()
        if measurement_method() == "launcher":
            reply = _Launcher.run(argv, env, cwd, out, err)
            wall, maxrss, rc = float(reply["wall"]), int(reply["maxrss"]), int(reply["rc"])
            cpu = float(reply["cpu"])
        else:
            with open(out, "wb") as fo, open(err, "wb") as fe:
                t0 = time.perf_counter()
                proc = subprocess.Popen(
                    [GNU_TIME, "-f", "%M %U %S", "-o", rss_file, *argv],
                    stdin=subprocess.DEVNULL,
                    stdout=fo,
                    stderr=fe,
                    env=env,
                    cwd=cwd,
                )
                try:
                    rc = proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    raise
                wall = time.perf_counter() - t0
            with open(rss_file, encoding="utf-8") as fr:
                # the last line is "%M %U %S"; "Command exited with non-zero status N" may precede it
                last = (fr.read().strip().splitlines() or [""])[-1].split()
            try:
                maxrss, cpu = int(last[0]), float(last[1]) + float(last[2])
            except (IndexError, ValueError):
                maxrss, cpu = -1, -1.0
        with open(out, "rb") as fo, open(err, "rb") as fe:
            return Measured(argv, wall, maxrss, rc, fo.read(), fe.read(), cpu)


def freeze_rqmaint() -> tuple[str, dict[str, Any]]:
    """Copy rqmaint/ to a temporary directory that the children import instead of the working tree.

    The package may be edited while a benchmark runs (it is someone else's working tree); every run of a
    benchmark must measure the same code. The copy is byte-compiled, as pip does when it installs a
    wheel (this environment sets PYTHONDONTWRITEBYTECODE=1, so the editable working tree is otherwise
    compiled from source by every process). Returns the directory to put first on PYTHONPATH and the
    fingerprint of the copied sources.
    """
    import compileall

    fingerprint = rqmaint_fingerprint()
    root = tempfile.mkdtemp(prefix="rqmaint-bench-src-")
    atexit.register(shutil.rmtree, root, True)
    shutil.copytree(BENCH_DIR.parent / "rqmaint", os.path.join(root, "rqmaint"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))  # fmt: skip
    compileall.compile_dir(os.path.join(root, "rqmaint"), quiet=1)
    copied = rqmaint_fingerprint(Path(root))
    if copied["rqmaint_sha256"] != fingerprint["rqmaint_sha256"]:
        raise RuntimeError("rqmaint/ changed while it was being copied; run the benchmark again")
    return root, fingerprint


def check_frozen_import(env: dict[str, str], root: str) -> None:
    """The console scripts must import rqmaint from the frozen copy, not from the working tree."""
    m = run_measured([RQMAINT, "--version"], env=env)
    probe = subprocess.run(
        [PYTHON, "-c", "import rqmaint.cli.main as m; print(m.__file__)"],
        env=env, cwd=root, capture_output=True, text=True, check=True,
    )  # fmt: skip
    where = probe.stdout.strip()
    if m.returncode != 0 or not where.startswith(root):
        raise RuntimeError(f"children import rqmaint from {where!r}, not from the frozen copy {root}")


def bench_env(frozen_root: str | None = None) -> dict[str, str]:
    """The children's environment: no Redis URL from the caller's environment can leak in; bench/ (job
    functions) and the frozen rqmaint copy first on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("RQ_REDIS_URL", "REDIS_URL")}
    paths = [p for p in (frozen_root, str(BENCH_DIR), env.get("PYTHONPATH")) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.setdefault("COLUMNS", "120")
    return env


# -- statistics and reporting -----------------------------------------------------------------------------


@dataclass
class Series:
    name: str
    walls: list[float] = field(default_factory=list)
    rss_kb: list[int] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    parts: dict[str, list[float]] = field(default_factory=dict)  # per-process walls of a multi-step route

    def add(self, wall: float, rss_kb: int, parts: dict[str, float] | None = None) -> None:
        parts = dict(parts or {})
        self.cpu.append(parts.pop("cpu", -1.0))
        self.walls.append(wall)
        self.rss_kb.append(rss_kb)
        for k, v in (parts or {}).items():
            self.parts.setdefault(k, []).append(v)

    @property
    def median(self) -> float:
        return statistics.median(self.walls)

    def as_dict(self) -> dict[str, Any]:
        return {
            "runs": len(self.walls),
            "median_s": round(self.median, 4),
            "min_s": round(min(self.walls), 4),
            "max_s": round(max(self.walls), 4),
            "walls_s": [round(w, 4) for w in self.walls],
            "peak_rss_kb_median": int(statistics.median(self.rss_kb)),
            "peak_rss_kb_max": max(self.rss_kb),
            "peak_rss_kb": list(self.rss_kb),
            "parts_median_s": {k: round(statistics.median(v), 4) for k, v in self.parts.items()},
            "child_cpu_s_median": round(statistics.median(self.cpu), 3),
        }


def alternate(
    routes: Sequence[tuple[Series, Callable[[], tuple[float, int, dict[str, float]]]]],
    runs: int,
    before_each: Callable[[], None],
    label: str = "",
) -> None:
    """``runs`` rounds; in each round every route runs once (A, B, A, B, ...), data restored before each."""
    for i in range(runs):
        for series, fn in routes:
            before_each()
            wall, rss, parts = fn()
            series.add(wall, rss, parts)
            log(
                f"  {label}run {i + 1}/{runs} {series.name:<8} {wall:8.3f} s  peak RSS {rss / 1024:6.1f} MiB"
                f"  cpu {series.cpu[-1]:6.2f} s  load {os.getloadavg()[0]:.2f}"
            )


def rqmaint_fingerprint(root: Path | None = None) -> dict[str, Any]:
    """Which rqmaint was measured: git HEAD, whether rqmaint/ had uncommitted changes, and a sha256 of
    every .py and .lua file under rqmaint/."""
    import hashlib

    root = BENCH_DIR.parent if root is None else root
    digest = hashlib.sha256()
    for path in sorted((root / "rqmaint").rglob("*")):
        if path.is_file() and path.suffix in (".py", ".lua"):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    if root != BENCH_DIR.parent:
        return {"rqmaint_sha256": digest.hexdigest()[:16]}
    return {
        "git_head": git("rev-parse", "--short", "HEAD"),
        "rqmaint_dirty": bool(git("status", "--porcelain", "--", "rqmaint")),
        "rqmaint_sha256": digest.hexdigest()[:16],
    }


@functools.cache
def measured_rq_version() -> str:
    """The RQ of the measured venv (BENCH_VENV_BIN), which need not be this interpreter's."""
    argv = [PYTHON, "-c", "import rq; print(rq.__version__)"]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


def environment() -> dict[str, Any]:
    import platform

    return {
        "loadavg_1_5_15_at_start": [round(x, 2) for x in LOAD_AT_START],
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "loadavg_1_5_15_at_end": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "rq": measured_rq_version(),
        "redis_py": redis.__version__,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "kernel": platform.release(),
    }


def emit(name: str, doc: dict[str, Any]) -> None:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    text = json.dumps(doc, indent=2, sort_keys=False)
    (RESULTS_DIR / f"{name}.json").write_text(text + "\n", encoding="utf-8")
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
