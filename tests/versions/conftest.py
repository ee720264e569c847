"""One virtual environment per supported RQ version, for tests that run real RQ code of that version.

Each environment (``.rqvenvs/<rq version>-<key>/`` under the repository root, git-ignored) has
``rq==<version>`` and this repository installed editable (``pip install 'rq==X' -e <repo root>``), so
``<venv>/bin/python -m rqmaint`` is the code under test running on that RQ and
``<venv>/bin/python -m rq.cli worker`` is a stock worker of that version.  ``<key>`` hashes
pyproject.toml's build system and dependencies, and the interpreter: a fresh clone (CI) builds each
environment once per run, a developer reuses them until those change (stale ones of the same
version are then removed).  A build is complete once ``<venv>/.rqmaint-venv-complete`` exists (it
holds the build log); ``rm -r .rqvenvs`` forces a rebuild.

The build starts in a background thread as soon as collection has finished (at low CPU priority,
one environment after the other: parallel pip runs were slower on 2 cores), so it overlaps with the
rest of the suite; the ``rq_env`` fixture waits for it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

#: The RQ versions rqmaint is verified against: the oldest supported (1.16.2; 1.16.0 and 1.16.1 differ
#: only in the intermediate-queue cleanup), the first 2.x, the newest 2.x, and 3.0.0.  ``RQMAINT_RQ_VERSIONS``
#: (space-separated) checks others, e.g. ``RQMAINT_RQ_VERSIONS="1.16.0 2.5.0" pytest tests/versions``.
DEFAULT_RQ_VERSIONS = ("1.16.2", "2.0.0", "2.12.0", "3.0.0")
RQ_VERSIONS = tuple(os.environ.get("RQMAINT_RQ_VERSIONS", "").split()) or DEFAULT_RQ_VERSIONS
REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_ROOT = REPO_ROOT / ".rqvenvs"
COMPLETE = ".rqmaint-venv-complete"
BUILD_TIMEOUT = 600.0


def venv_key() -> str:
    """What an environment depends on: pyproject.toml's build system and dependencies (the whole file
    where ``tomllib`` is missing) and the interpreter."""
    raw = (REPO_ROOT / "pyproject.toml").read_bytes()
    try:
        import tomllib

        doc = tomllib.loads(raw.decode())
        project = doc.get("project", {})
        raw = json.dumps(
            [doc.get("build-system"), project.get("dependencies"), project.get("requires-python")],
            sort_keys=True,
        ).encode()
    except ImportError:  # Python 3.10
        pass
    h = hashlib.sha256(raw)
    h.update(f"{platform.python_implementation()} {platform.python_version()} {sys.base_prefix}".encode())
    return h.hexdigest()[:12]


def venv_path(version: str) -> Path:
    return VENV_ROOT / f"{version}-{venv_key()}"


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    return env


def _run(argv: Sequence[str | os.PathLike[str]], log: list[str]) -> None:
    nice = shutil.which("nice")  # low priority: the tests running meanwhile keep their timing
    proc = subprocess.run(
        ([nice, "-n", "10"] if nice else []) + [os.fspath(a) for a in argv],
        env=_clean_env(),
        cwd=VENV_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    log.append(f"$ {' '.join(map(str, argv))}\n{proc.stdout}{proc.stderr}")
    if proc.returncode != 0:
        raise RuntimeError(f"exit code {proc.returncode}")


def _pip_has_python_option() -> bool:
    """pip >= 22.3 can install into another environment (``pip --python``): no pip in each venv."""
    try:
        import pip
    except ImportError:
        return False
    parts = [int(p) for p in pip.__version__.split(".")[:2] if p.isdigit()]
    return len(parts) == 2 and tuple(parts) >= (22, 3)


def build_venv(version: str) -> Path:
    """The environment for ``rq==version``, built unless a complete one exists (idempotent, and safe
    against a concurrent test run through a lock file)."""
    target = venv_path(version)
    if (target / COMPLETE).exists():
        return target
    VENV_ROOT.mkdir(exist_ok=True)
    with open(VENV_ROOT / f".{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / COMPLETE).exists():
            return target
        for stale in VENV_ROOT.glob(f"{version}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        log: list[str] = []
        python = target / "bin" / "python"
        try:
            if _pip_has_python_option():
                _run([sys.executable, "-m", "venv", "--without-pip", target], log)
                pip = [sys.executable, "-m", "pip", "--python", python]
            else:
                _run([sys.executable, "-m", "venv", target], log)
                pip = [python, "-m", "pip"]
            _run([*pip, "install", "-q", f"rq=={version}", "-e", REPO_ROOT], log)
            check = (
                "import rq, rqmaint, sys; from rq.version import VERSION; "
                f"sys.exit(0 if VERSION == {version!r} else 'rq ' + VERSION + ' installed')"
            )
            _run([python, "-c", check], log)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            shutil.rmtree(target, ignore_errors=True)
            raise RuntimeError(
                f"building the rq {version} environment {target} failed ({exc}):\n" + "\n".join(log)
            ) from None
        (target / COMPLETE).write_text("\n".join(log))
    return target


@dataclass
class _Builds:
    results: dict[str, Path | BaseException]
    done: dict[str, threading.Event]
    thread: threading.Thread | None = None


_BUILDS = _Builds({}, {})


def _build_all(versions: list[str]) -> None:
    for version in versions:
        try:
            _BUILDS.results[version] = build_venv(version)
        except BaseException as exc:  # reported by the fixture, in the test that needs it
            _BUILDS.results[version] = exc
        finally:
            _BUILDS.done[version].set()


def _wanted_versions(items: Sequence[pytest.Item]) -> list[str]:
    wanted: dict[str, None] = {}
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "rq_env" in callspec.params:
            wanted[str(callspec.params["rq_env"])] = None
    return [v for v in RQ_VERSIONS if v in wanted]


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start building the environments the collected tests need, in the background."""
    versions = _wanted_versions(session.items)
    if versions and _BUILDS.thread is None:
        _BUILDS.done = {v: threading.Event() for v in versions}
        _BUILDS.thread = threading.Thread(target=_build_all, args=(versions,), name="rq-venvs", daemon=True)
        _BUILDS.thread.start()


def _venv_for(version: str) -> Path:
    done = _BUILDS.done.get(version)
    if done is None:  # not announced at collection time
        return build_venv(version)
    done.wait(timeout=BUILD_TIMEOUT * len(_BUILDS.done))
    result = _BUILDS.results.get(version)
    if isinstance(result, Path):
        return result
    if result is None:
        raise RuntimeError(f"the rq {version} environment was not built in time")
    raise result


@dataclass(frozen=True)
class RqEnv:
    """A virtual environment with ``rq==version`` and rqmaint (editable)."""

    version: str
    path: Path

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def version_info(self) -> tuple[int, ...]:
        return tuple(int(p) for p in self.version.split("."))

    @property
    def major(self) -> int:
        return self.version_info[0]

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Repository root on PYTHONPATH (``tests.jobs``/``tests.callbacks`` import), no Redis URL."""
        env = {k: v for k, v in os.environ.items() if k not in ("RQ_REDIS_URL", "REDIS_URL", "VIRTUAL_ENV")}
        env["PYTHONPATH"] = str(REPO_ROOT)
        env["PYTHONUNBUFFERED"] = "1"
        env["COLUMNS"] = "200"
        env.update(extra or {})
        return env

    def run(self, *args: str | os.PathLike[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """``<venv python> *args`` from the repository root; text output, no check of the exit code."""
        return subprocess.run(
            [os.fspath(self.python), *(os.fspath(a) for a in args)],
            env=self.env(),
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def rqmaint(self, url: str, *args: str) -> subprocess.CompletedProcess[str]:
        """``<venv python> -m rqmaint ARGS --url URL``."""
        return self.run("-m", "rqmaint", *args, "--url", url)

    def script(self, code: str, *args: str) -> subprocess.CompletedProcess[str]:
        """``<venv python> -c CODE ARGS``, which must succeed (its stderr is shown otherwise)."""
        proc = self.run("-c", code, *args)
        assert proc.returncode == 0, f"rq {self.version} script failed:\n{proc.stderr}"
        return proc


@pytest.fixture(scope="session", params=RQ_VERSIONS, ids=[f"rq{v}" for v in RQ_VERSIONS])
def rq_env(request: pytest.FixtureRequest) -> Iterator[RqEnv]:
    """The environment of each supported RQ version (built once per session; see the module doc)."""
    version = str(request.param)
    yield RqEnv(version, _venv_for(version))
