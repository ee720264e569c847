"""The README's test command on a machine without redis-server: the suite runs on Valkey alone and
says so once, at the start; in CI (CI=true) a missing redis-server fails the run instead. No test
needs redis-cli (tests/support/bin/redis-cli stands in for the runbooks' lines)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support import REPO_ROOT
from tests.support.servers import VALKEY_ONLY_NOTE

HIDDEN = (
    "redis-server",
    "redis-cli",
    "redis-sentinel",
    "redis-check-aof",
    "redis-check-rdb",
    "redis-benchmark",
)


def _path_without_redis(tmp_path: Path) -> str:
    """PATH with every tool of the current PATH but Redis' (symlinks in one directory)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for folder in reversed(os.environ["PATH"].split(os.pathsep)):
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            if name not in HIDDEN:
                link = bin_dir / name
                link.unlink(missing_ok=True)
                link.symlink_to(Path(folder) / name)
    return f"{Path(sys.executable).parent}{os.pathsep}{bin_dir}"


def _pytest(tmp_path: Path, *args: str, ci: bool) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=_path_without_redis(tmp_path))
    env.pop("CI", None)
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_suite_runs_on_valkey_alone_and_says_so_once(tmp_path):
    done = _pytest(
        tmp_path,
        "tests/commands/test_status.py::test_status_json_counts_every_registry",
        "tests/test_infrastructure.py::test_server_fixture",
        "tests/commands/test_conventions.py::test_readme_first_command_is_the_recovery",
        "-rA",
        ci=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(VALKEY_ONLY_NOTE) == 1
    assert done.stdout.splitlines()[0] == VALKEY_ONLY_NOTE  # the first line of the run
    assert "PASSED tests/test_infrastructure.py::test_server_fixture[valkey]" in done.stdout
    assert "[redis]" not in done.stdout and "3 passed" in done.stdout


def test_ci_fails_when_redis_server_is_missing(tmp_path):
    done = _pytest(tmp_path, "tests/test_infrastructure.py::test_server_fixture", ci=True)
    assert done.returncode != 0
    assert "redis-server is not on PATH" in done.stdout + done.stderr


def test_no_test_needs_redis_cli(tmp_path):
    path = _path_without_redis(tmp_path)
    shim = REPO_ROOT / "tests" / "support" / "bin" / "redis-cli"
    assert shutil.which("redis-cli", path=path) is None
    assert shutil.which("redis-cli", path=f"{path}{os.pathsep}{shim.parent}") == str(shim)
