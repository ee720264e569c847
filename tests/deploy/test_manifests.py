"""deploy/: the Kubernetes manifests and the Docker image for rqmaint.

Every YAML document under deploy/kubernetes is validated offline against the Kubernetes JSON schemas
bundled with kubernetes-validate (strict: unknown fields fail), the properties the deployment relies
on are asserted, and every container's command line is checked against the real CLI's ``--help``,
so renaming an option breaks this test. No Redis server is needed.
"""

from __future__ import annotations

import json
import re
import shlex
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version
from typer.main import get_command
from typer.testing import CliRunner

from rqmaint.cli.main import app

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "kubernetes"
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
DOCKERIGNORE = REPO / "deploy" / "docker" / "Dockerfile.dockerignore"
KUSTOMIZATION = "kustomization.yaml"
#: Shipped as an example only; deliberately not applied by the kustomization (see its header).
EXAMPLE_SECRET = "secret-example.yaml"
#: The oldest Kubernetes the manifests target, and the newest the installed kubernetes-validate ships.
K8S_VERSIONS = sorted({"1.30", ".".join(latest_version().split(".")[:2])}, key=lambda v: int(v.split(".")[1]))
#: Exit codes that a retry cannot fix and that must fail the Job at once (see deploy/README.md).
NO_RETRY_EXIT_CODES = {2, 3, 4}


# --- loading ------------------------------------------------------------------------------------


def _documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                docs.append((path.name, doc))
    return docs


DOCUMENTS = _documents()
OBJECTS = [(name, doc) for name, doc in DOCUMENTS if doc.get("kind") != "Kustomization"]
WORKLOADS = [(name, doc) for name, doc in OBJECTS if doc.get("kind") in ("CronJob", "Deployment")]
#: The example RQ worker Deployment runs ``rq worker -w rqmaint.worker.Worker``, not the rqmaint CLI.
WORKER_DEPLOYMENT = "deployment-worker.yaml"
CLI_WORKLOADS = [(name, doc) for name, doc in WORKLOADS if name != WORKER_DEPLOYMENT]


def _id(name: str, doc: dict[str, Any]) -> str:
    return f"{name}:{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def _one(file: str, kind: str) -> dict[str, Any]:
    found = [doc for name, doc in DOCUMENTS if name == file and doc.get("kind") == kind]
    assert len(found) == 1, f"{file}: expected exactly one {kind}, found {len(found)}"
    return found[0]


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def _container(doc: dict[str, Any]) -> dict[str, Any]:
    containers = _pod_spec(doc)["containers"]
    assert len(containers) == 1, f"{doc['metadata']['name']}: expected one container"
    return containers[0]


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a continued instruction"
    return out


def _dockerfile(keyword: str) -> list[str]:
    return [rest for kw, rest in _dockerfile_instructions() if kw == keyword]


def _image_uid() -> int:
    user = _dockerfile("USER")[-1].split(":")[0]
    assert user.isdigit(), f"USER {user}: use a numeric uid, so Kubernetes' runAsNonRoot can verify it"
    return int(user)


def _argv(doc: dict[str, Any]) -> list[str]:
    """The container's full command line: its command (else the image's ENTRYPOINT) + args."""
    container = _container(doc)
    command = container.get("command")
    if command is None:
        command = json.loads(_dockerfile("ENTRYPOINT")[-1])
    argv = [*command, *container.get("args", [])]
    assert all(isinstance(a, str) for a in argv), f"{argv}: every argument must be a YAML string"
    return argv


def _option_value(argv: list[str], option: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == option:
            assert i + 1 < len(argv), f"{option} has no value in {argv}"
            return argv[i + 1]
        if arg.startswith(option + "="):
            return arg.partition("=")[2]
    return None


def _schedule_period_seconds(schedule: str) -> int:
    match = re.fullmatch(r"\*/(\d+) \* \* \* \*", schedule)
    assert match, f"schedule {schedule!r}: expected '*/N * * * *'"
    return int(match.group(1)) * 60


# --- offline schema validation ------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Any attempt to open a connection or resolve a name fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield


def test_the_manifests_are_there():
    files = {name for name, _ in DOCUMENTS}
    expected = {
        "cronjob-clean.yaml",
        "cronjob-requeue-abandoned.yaml",
        "deployment-watch.yaml",
        WORKER_DEPLOYMENT,
        "service-watch.yaml",
        EXAMPLE_SECRET,
        KUSTOMIZATION,
    }
    assert expected <= files, f"missing under deploy/kubernetes: {sorted(expected - files)}"


@pytest.mark.usefixtures("no_network")
@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(("name", "doc"), OBJECTS, ids=[_id(n, d) for n, d in OBJECTS])
def test_valid_against_the_kubernetes_schemas(name: str, doc: dict[str, Any], version: str):
    problem = None
    try:
        validated = kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        where = ".".join(str(p) for p in e.path)
        problem = f"{_id(name, doc)} is invalid for Kubernetes {version}: {where}: {e.message}"
    except kubernetes_validate.SchemaNotFoundError as e:
        problem = f"{_id(name, doc)}: {e.message}"
    if problem:
        pytest.fail(problem, pytrace=False)
    assert validated == version


# --- kustomization ------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest_but_the_example_secret():
    kustomization = _one(KUSTOMIZATION, "Kustomization")
    resources = kustomization["resources"]
    assert len(resources) == len(set(resources)), resources
    for resource in resources:
        assert (K8S / resource).is_file(), f"{KUSTOMIZATION} lists a missing file: {resource}"
    expected = {name for name, _ in OBJECTS} - {EXAMPLE_SECRET}
    assert set(resources) == expected
    # Applying must never overwrite the real Secret with the CHANGE-ME placeholder.
    assert EXAMPLE_SECRET not in resources


def test_kustomization_labels_and_images():
    kustomization = _one(KUSTOMIZATION, "Kustomization")
    pairs = {k: v for entry in kustomization["labels"] for k, v in entry["pairs"].items()}
    assert pairs.get("app.kubernetes.io/name") == "rqmaint", pairs
    # Selectors are immutable on live objects: common labels must stay out of them.
    assert not any(entry.get("includeSelectors") for entry in kustomization["labels"])
    image_names = {entry["name"] for entry in kustomization["images"]}
    for name, doc in WORKLOADS:
        image = _container(doc)["image"]
        assert image.rsplit(":", 1)[0] in image_names, (
            f"{_id(name, doc)}: {image} not in images: {KUSTOMIZATION}"
        )
    for entry in kustomization["images"]:
        assert entry.get("newTag") not in (None, "", "latest"), entry


def test_example_secret_is_marked_and_feeds_every_workload():
    secret = _one(EXAMPLE_SECRET, "Secret")
    text = (K8S / EXAMPLE_SECRET).read_text(encoding="utf-8")
    assert "EXAMPLE" in text.upper().split("APIVERSION")[0], "the example Secret must say so up front"
    assert secret["stringData"] == {"url": "redis://:CHANGE-ME@redis:6379/0"}
    for name, doc in WORKLOADS:
        ref = _redis_url_secret_ref(name, doc)
        assert ref["name"] == secret["metadata"]["name"], f"{_id(name, doc)} reads another Secret"
        assert ref["key"] in secret["stringData"], f"{_id(name, doc)} reads a key the Secret lacks"


# --- CronJobs -----------------------------------------------------------------------------------

CRONJOBS = [("cronjob-clean.yaml", "clean"), ("cronjob-requeue-abandoned.yaml", "requeue-abandoned")]


def _redis_url_secret_ref(name: str, doc: dict[str, Any]) -> dict[str, Any]:
    env = {e["name"]: e for e in _container(doc).get("env", [])}
    assert "RQ_REDIS_URL" in env, f"{_id(name, doc)}: no RQ_REDIS_URL"
    entry = env["RQ_REDIS_URL"]
    assert "value" not in entry, f"{_id(name, doc)}: RQ_REDIS_URL must come from a Secret, not a literal"
    ref: dict[str, Any] = entry["valueFrom"]["secretKeyRef"]
    assert ref.get("name") and ref.get("key"), ref
    assert not ref.get("optional"), f"{_id(name, doc)}: the Secret must not be optional"
    return ref


@pytest.mark.parametrize(("file", "subcommand"), CRONJOBS)
def test_cronjob(file: str, subcommand: str):
    cron = _one(file, "CronJob")
    spec = cron["spec"]
    job = spec["jobTemplate"]["spec"]
    pod = _pod_spec(cron)

    assert spec["concurrencyPolicy"] == "Forbid"
    period = _schedule_period_seconds(spec["schedule"])
    # The controller checks schedules every 10 s: a shorter deadline can miss runs altogether.
    assert 10 < spec["startingDeadlineSeconds"] < period
    assert spec["successfulJobsHistoryLimit"] >= 1
    assert spec["failedJobsHistoryLimit"] >= 1
    # A stuck run is stopped (SIGTERM, locks released) before the next one is due.
    assert 0 < job["activeDeadlineSeconds"] + pod["terminationGracePeriodSeconds"] <= period
    assert isinstance(job["backoffLimit"], int)
    assert 0 <= job["backoffLimit"] <= 5
    assert pod["restartPolicy"] == "Never"

    # 2 (usage), 3 (lock held) and 4 (needs attention) fail the Job without retries: a retry that
    # exited 0 would turn a "needs attention" into a completed Job.
    fail_job = [r for r in job["podFailurePolicy"]["rules"] if r["action"] == "FailJob"]
    codes = {
        c
        for rule in fail_job
        for c in rule["onExitCodes"]["values"]
        if rule["onExitCodes"]["operator"] == "In"
    }
    assert codes == NO_RETRY_EXIT_CODES
    assert all(rule["onExitCodes"]["containerName"] == _container(cron)["name"] for rule in fail_job)

    argv = _argv(cron)
    assert argv[:2] == ["rqmaint", subcommand]
    assert "--json" in argv[2:]
    wait = _option_value(argv, "--wait")
    assert wait is not None, f"{file}: give a busy lock a few seconds (--wait)"
    assert 0 < float(wait) < job["activeDeadlineSeconds"]
    if subcommand == "clean":
        # Without it, clean fails abandoned jobs (RQ's semantics) while the requeue-abandoned
        # CronJob requeues them: whichever ran first would decide.
        assert "--requeue-abandoned" in argv
    _redis_url_secret_ref(file, cron)


# --- Deployment and Service ---------------------------------------------------------------------


def _metrics_port(container: dict[str, Any]) -> int:
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    assert "metrics" in ports, container.get("ports")
    return int(ports["metrics"])


def test_watch_deployment():
    deployment = _one("deployment-watch.yaml", "Deployment")
    spec = deployment["spec"]
    template = spec["template"]
    container = _container(deployment)

    assert spec["replicas"] == 1
    assert spec["strategy"]["type"] == "Recreate"
    assert spec["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()

    argv = _argv(deployment)
    assert argv[:2] == ["rqmaint", "watch"]
    assert {"--clean", "--requeue-abandoned", "--json"} <= set(argv)
    port = _metrics_port(container)
    assert _option_value(argv, "--metrics-port") == str(port)
    assert _option_value(argv, "--metrics-host") == "0.0.0.0"
    assert _option_value(argv, "--interval") is not None

    for probe_name in ("livenessProbe", "readinessProbe"):
        probe = container[probe_name]["httpGet"]
        assert probe["path"] == "/metrics", probe_name
        assert probe["port"] in ("metrics", port), probe_name

    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"
    # watch exits 0 within 5 s of SIGTERM; the grace period must leave it that time.
    assert template["spec"]["terminationGracePeriodSeconds"] >= 5


def test_watch_service_reaches_the_metrics_port():
    deployment = _one("deployment-watch.yaml", "Deployment")
    service = next(doc for _, doc in OBJECTS if doc["kind"] == "Service")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    port = _metrics_port(_container(deployment))
    targets = [p.get("targetPort", p["port"]) for p in service["spec"]["ports"]]
    assert any(t in ("metrics", port) for t in targets), targets


# --- every workload: hardening, resources, image --------------------------------------------------


@pytest.mark.parametrize(("name", "doc"), WORKLOADS, ids=[_id(n, d) for n, d in WORKLOADS])
def test_workload_hardening(name: str, doc: dict[str, Any]):
    pod = _pod_spec(doc)
    container = _container(doc)
    uid = _image_uid()

    pod_sc = pod["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc.get("runAsUser", uid) == uid, "runAsUser must match the image's USER"
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert not sc["capabilities"].get("add")
    assert sc.get("seccompProfile", pod_sc["seccompProfile"]) == {"type": "RuntimeDefault"}
    assert not sc.get("privileged")

    resources = container["resources"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= resources[kind].keys(), f"{kind}: {resources[kind]}"
    assert isinstance(pod["terminationGracePeriodSeconds"], int)

    image = container["image"]
    assert ":" in image, f"{image}: pin a tag"
    assert not image.endswith(":latest"), image
    _redis_url_secret_ref(name, doc)
    # No literal Redis URL (with its password) anywhere in the workload.
    assert "redis://" not in json.dumps(doc)


# --- every command line against the real CLI ------------------------------------------------------

OPTION_LINE = re.compile(r"^  (?P<names>-[\w-]+(?:(?:, | / )-[\w-]+)*)(?: (?P<metavar>\S+))?(?: {2,}|$)")


def _cli_options(subcommand: str) -> dict[str, bool]:
    """Option name -> takes a value, read from ``rqmaint <subcommand> --help`` run in-process."""
    result = CliRunner().invoke(app, [subcommand, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, f"rqmaint has no command {subcommand!r}:\n{result.output}"
    options: dict[str, bool] = {}
    in_options = False
    for line in result.output.splitlines():
        if line.strip() == "Options:":
            in_options = True
            continue
        if in_options and line and not line.startswith(" "):
            in_options = False
        match = OPTION_LINE.match(line) if in_options else None
        if match:
            for name in re.split(r", | / ", match.group("names")):
                options[name] = match.group("metavar") is not None
    assert {"--help", "--json"} <= options.keys(), f"could not read the options of {subcommand!r}: {options}"
    return options


@pytest.mark.parametrize(("name", "doc"), CLI_WORKLOADS, ids=[_id(n, d) for n, d in CLI_WORKLOADS])
def test_command_line_matches_the_cli(name: str, doc: dict[str, Any]):
    argv = _argv(doc)
    assert argv[0] == "rqmaint", argv
    assert json.loads(_dockerfile("ENTRYPOINT")[-1]) == ["rqmaint"]
    subcommand, args = argv[1], argv[2:]
    options = _cli_options(subcommand)

    i = 0
    while i < len(args):
        arg = args[i]
        assert arg.startswith("-"), f"{_id(name, doc)}: unexpected argument {arg!r} in {argv}"
        option, has_inline_value, _ = arg.partition("=")
        assert option in options, (
            f"{_id(name, doc)}: rqmaint {subcommand} has no option {option!r}; it has {sorted(options)}"
        )
        if options[option] and not has_inline_value:
            assert i + 1 < len(args), f"{_id(name, doc)}: {option} needs a value"
            assert not args[i + 1].startswith("--"), f"{_id(name, doc)}: {option} needs a value"
            i += 1
        elif not options[option]:
            assert not has_inline_value, f"{_id(name, doc)}: {option} is a flag and takes no value"
        i += 1

    # And the real parser accepts the values (types, ranges) without running anything.
    command = get_command(app).commands[subcommand]  # type: ignore[attr-defined]
    with command.make_context(f"rqmaint {subcommand}", list(args)) as ctx:
        assert ctx.params


# --- the Docker image -----------------------------------------------------------------------------


def test_dockerfile():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))

    froms = _dockerfile("FROM")
    assert froms, "no FROM"
    for ref in froms:
        image = ref.split()[0]
        assert "@sha256:" in image or re.fullmatch(r"[\w./-]+:[\w.-]+", image), f"{image}: pin a tag"
        assert not image.endswith(":latest"), image
    base = froms[-1].split()[0]
    match = re.fullmatch(r"python:(\d+)\.(\d+)-slim(?:-\w+)?", base)
    assert match, f"{base}: expected a python:X.Y-slim base"
    minimum = re.search(r"(\d+)\.(\d+)", pyproject["project"]["requires-python"])
    assert minimum is not None
    assert (int(match[1]), int(match[2])) >= (int(minimum[1]), int(minimum[2]))

    assert _dockerfile("USER"), "no USER: the image would run as root"
    assert _image_uid() != 0, "the image must not run as root"

    assert json.loads(_dockerfile("ENTRYPOINT")[-1]) == ["rqmaint"]
    assert "rqmaint" in pyproject["project"]["scripts"]
    assert json.loads(_dockerfile("CMD")[-1]) == ["--help"]

    copied: list[str] = []
    for rest in _dockerfile("COPY") + _dockerfile("ADD"):
        words = shlex.split(rest)
        assert not any(w.startswith("--from") for w in words), "copies from the build context only"
        copied += [w for w in words if not w.startswith("--")][:-1]
    assert copied, "the Dockerfile copies nothing from the repository"
    for source in copied:
        assert (REPO / source).exists(), f"the Dockerfile copies {source}, which is not in the repository"
    for needed in ("pyproject.toml", pyproject["project"]["readme"], "rqmaint"):
        assert needed in {s.rstrip("/") for s in copied}, f"the build needs {needed}"

    installs = [r for r in _dockerfile("RUN") if "pip install" in r]
    assert any("--no-cache-dir" in r and "'.[metrics]'" in r for r in installs), installs
    assert "metrics" in pyproject["project"]["optional-dependencies"]

    # BuildKit's Dockerfile-specific ignore file must let every copied path through.
    ignore = {line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()}
    for source in copied:
        assert f"!{source.rstrip('/')}" in ignore or f"!{source}" in ignore, f"{source} is ignored"

    deployment = _one("deployment-watch.yaml", "Deployment")
    assert str(_metrics_port(_container(deployment))) in " ".join(_dockerfile("EXPOSE")).split()


def test_worker_deployment_runs_the_rqmaint_worker_class():
    doc = _one(WORKER_DEPLOYMENT, "Deployment")
    container = _container(doc)
    argv = [*container["command"], *container["args"]]
    assert argv[:4] == ["rq", "worker", "--worker-class", "rqmaint.worker.Worker"], argv
    from rqmaint.worker import WorkerSettings

    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert {k for k in env if k.startswith("RQMAINT_")} == {
        "RQMAINT_LEASE_TTL",
        "RQMAINT_MAX_REQUEUES",
        "RQMAINT_REQUEUE",
    }
    WorkerSettings.resolve(env)  # the example's settings are valid
