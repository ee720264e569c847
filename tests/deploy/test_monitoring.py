"""deploy/prometheus and deploy/grafana: generated from deploy/generate.py (drift-tested), checked and
unit-tested with the real ``promtool``, and every metric and label they query is served by a real
``rqmaint watch --metrics-port`` during a staged incident (RQ workers SIGKILLed mid-job).

``promtool`` comes from Debian's ``prometheus`` package (``.ci/run`` installs it when missing).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

import kubernetes_validate
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from rq import Queue

from tests import jobs
from tests.support import REPO_ROOT, age_abandoned, free_port, process_env, rqmaint_argv, wait_for
from tests.support.heartbeats import silence

DEPLOY = REPO_ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
TESTS_FILE = PROMETHEUS / "rqmaint-alerts.test.yaml"
RUNBOOKS = REPO_ROOT / "docs" / "runbooks.md"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rqmaint_deploy_generate", DEPLOY / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


GEN = _generator()


def _promtool(*args: str | Path, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: apt-get install prometheus (.ci/run does)"
    return subprocess.run([tool, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120)


# -- one source ------------------------------------------------------------------------------------------


def test_generated_files_match_their_source():
    for path, text in GEN.artefacts().items():
        assert path.read_text(encoding="utf-8") == text, f"{path} is stale: run python deploy/generate.py"
    # the ConfigMap holds exactly the dashboard JSON file
    configmap = yaml.safe_load(GEN.DASHBOARD_CONFIGMAP.read_text(encoding="utf-8"))
    assert configmap["data"][GEN.DASHBOARD.name] == GEN.DASHBOARD.read_text(encoding="utf-8")
    assert GEN.main(["--check"]) == 0


def test_prometheus_rule_holds_the_rules_file():
    rules = yaml.safe_load(GEN.RULES_FILE.read_text(encoding="utf-8"))
    manifest = yaml.safe_load(GEN.PROMETHEUS_RULE.read_text(encoding="utf-8"))
    assert (manifest["apiVersion"], manifest["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert manifest["metadata"]["name"] == "rqmaint"
    assert manifest["spec"]["groups"] == rules["groups"]


# -- promtool ---------------------------------------------------------------------------------------------


def test_promtool_check_rules(tmp_path: Path):
    checked = _promtool("check", "rules", GEN.RULES_FILE)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(GEN.ALERTS)} rules found" in checked.stdout
    # the PrometheusRule's spec is the same rules file
    spec = yaml.safe_load(GEN.PROMETHEUS_RULE.read_text(encoding="utf-8"))["spec"]
    (tmp_path / "from-manifest.yaml").write_text(yaml.safe_dump(spec))
    checked = _promtool("check", "rules", tmp_path / "from-manifest.yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_promtool_test_rules():
    tested = _promtool("test", "rules", TESTS_FILE.name)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_is_unit_tested_firing_and_not_firing():
    doc = yaml.safe_load(TESTS_FILE.read_text(encoding="utf-8"))
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in doc["tests"]:
        for check in case["alert_rule_test"]:
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {a.name for a in GEN.ALERTS}
    assert fired == names, f"no firing case: {names - fired}"
    assert quiet == names, f"no not-firing case: {names - quiet}"


def _sections(markdown: str) -> dict[str, str]:
    """Each heading's GitHub anchor (lower case, punctuation dropped, spaces to hyphens) -> the text
    up to the next heading."""
    out: dict[str, str] = {}
    current = ""
    for line in markdown.splitlines():
        if m := re.match(r"^#{1,6}\s+(.*)$", line):
            current = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            out[current] = ""
        elif current:
            out[current] += line + "\n"
    return out


def test_alerts_have_summary_description_and_runbook():
    sections = _sections(RUNBOOKS.read_text(encoding="utf-8"))
    for group in yaml.safe_load(GEN.RULES_FILE.read_text(encoding="utf-8"))["groups"]:
        for rule in group["rules"]:
            ann = rule["annotations"]
            assert ann["summary"] and ann["description"], rule["alert"]
            assert rule["labels"]["severity"] in ("warning", "critical")
            if re.search(r"by \([^)]*\bqueue\b", rule["expr"]):
                assert "{{ $labels.queue }}" in ann["summary"] + ann["description"], rule["alert"]
            base, _, anchor = ann["runbook_url"].partition("#")
            assert base.endswith("/docs/runbooks.md"), ann["runbook_url"]
            assert anchor in sections, f"{rule['alert']}: no section #{anchor} in docs/runbooks.md"
            # and that section names the alert: the runbook says which alert brings you there
            assert rule["alert"] in sections[anchor], f"section #{anchor} never names {rule['alert']}"


# -- the dashboard ----------------------------------------------------------------------------------------


def _dashboard_exprs() -> list[str]:
    board = json.loads(GEN.DASHBOARD.read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in board["templating"]["list"] if v.get("definition")]
    assert exprs
    return exprs


def _as_promql(expr: str) -> str:
    """A dashboard query with Grafana's variables filled in (label_values() is Grafana's, not PromQL)."""
    if m := re.fullmatch(r"label_values\((\w+), \w+\)", expr):
        return m.group(1)
    return expr.replace("$__rate_interval", "5m").replace("$queue", ".*")


def test_dashboard_queries_are_valid_promql(tmp_path: Path):
    rules = [
        {"record": f"rqmaint:dashboard_query_{n}", "expr": _as_promql(e)}
        for n, e in enumerate(_dashboard_exprs())
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = _promtool("check", "rules", path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_dashboard_shape():
    board = json.loads(GEN.DASHBOARD.read_text(encoding="utf-8"))
    assert board["uid"] == "rqmaint" and board["panels"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    text = " ".join(_dashboard_exprs())
    for needed in (  # issue 11 item 3: what the dashboard must show
        "rqmaint_registry_jobs",
        "rqmaint_abandoned_jobs",
        "rqmaint_stalled_jobs",
        "rqmaint_oldest_abandoned_job_age_seconds",
        "rqmaint_oldest_stalled_job_age_seconds",
        "rqmaint_jobs_requeued_total",
        "rqmaint_jobs_given_up_total",
        "rqmaint_lock_held",
        "rqmaint_cycle_duration_seconds_bucket",
        "rqmaint_redis_up",
        "up{",
    ):
        assert needed in text, needed


@pytest.mark.parametrize("version", ["1.30"])
def test_dashboard_configmap_is_a_valid_configmap(version: str):
    doc = yaml.safe_load(GEN.DASHBOARD_CONFIGMAP.read_text(encoding="utf-8"))
    kubernetes_validate.validate(doc, version, strict=True)
    assert doc["metadata"]["labels"]["grafana_dashboard"] == "1"
    json.loads(doc["data"][GEN.DASHBOARD.name])


# -- every metric and label they use is served -----------------------------------------------------------

_SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?")
_MATCHER = re.compile(r'(\w+)\s*(=~|!=|!~|=)\s*"([^"]*)"')
_GROUPING = re.compile(r"\b(?:by|on|without|ignoring)\s*\(([^)]*)\)")


def _uses(expr: str) -> tuple[list[tuple[str, list[tuple[str, str, str]]]], set[str]]:
    """The rqmaint_* selectors of ``expr`` with their matchers, and the labels it groups by."""
    selectors = [
        (name, _MATCHER.findall(braces or ""))
        for name, braces in _SELECTOR.findall(expr)
        if name.startswith("rqmaint_")
    ]
    grouping = {
        label.strip() for group in _GROUPING.findall(expr) for label in group.split(",") if label.strip()
    }
    return selectors, grouping


def _queries() -> list[tuple[str, str]]:
    out = [(f"alert {a.name}", a.expr) for a in GEN.ALERTS]
    return out + [(f"dashboard {e}", e) for e in _dashboard_exprs()]


def _stage_incident(client: Any, abandon: Any) -> None:
    """default: two jobs abandoned (workers SIGKILLed, deadlines passed); emails: one stalled job (its
    worker SIGKILLed 65 s ago, deadline ahead); reports: an RQ lock "1" with no expiry."""
    abandon("default", 2)
    age_abandoned(client, "default", 200)
    stalled = abandon("emails", 1)
    silence(client, "emails", 65, stalled.worker_names)
    Queue("reports", connection=client).enqueue(jobs.add, 1, 2)
    client.set("rq:clean_registries:reports", "1")


def _scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            return str(resp.read().decode())
    except OSError:
        return ""


def test_every_queried_metric_is_served_during_an_incident(client, abandon, redis_url):
    # Given a staged incident, and a real watch daemon cleaning and requeueing, with its metrics port
    _stage_incident(client, abandon)
    port = free_port()
    proc = subprocess.Popen(
        rqmaint_argv(
            "watch", "--clean", "--requeue-abandoned", "--interval", "0.5", "--metrics-port", str(port)
        ),
        env=process_env(redis_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        text = wait_for(
            lambda: (
                (t := _scrape(port))
                and 'rqmaint_jobs_requeued_total{queue="default"} 2.0' in t
                and 'rqmaint_stalled_jobs{queue="emails"} 1.0' in t
                and 'rqmaint_lock_no_expiry{holder_kind="rq-worker",queue="reports"} 1.0' in t
                and t
            ),
            timeout=60,
            what="the watcher's metrics to show the incident",
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    served: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            served.setdefault(sample.name, []).append(dict(sample.labels))
    # Then every metric an alert or the dashboard queries is served, with every label it matches on
    # (and every literal value it matches), and every label it groups by
    for where, expr in _queries():
        selectors, grouping = _uses(expr)
        labels_in_expr: set[str] = set()
        for name, matchers in selectors:
            assert name in served, f"{where}: {name} is not served"
            present = {k for series in served[name] for k in series}
            labels_in_expr |= present
            for label, op, value in matchers:
                assert label in present, f"{where}: {name} has no label {label} (has {present})"
                if op == "=" and "$" not in value:
                    values = {s.get(label) for s in served[name]}
                    assert value in values, f"{where}: {name}{{{label}={value!r}}} not served ({values})"
        if selectors:
            assert grouping <= labels_in_expr | {"instance", "job"}, (
                f"{where}: groups by {grouping - labels_in_expr} that no metric of it has"
            )
    # And the incident shows in the values the alerts read
    assert 'rqmaint_oldest_stalled_job_age_seconds{queue="emails"}' in text
    assert re.search(r'rqmaint_lock_held_seconds\{holder_kind="rq-worker",queue="reports"\} \d', text)
    assert 'rqmaint_last_success_age_seconds{kind="clean",queue="default"}' in text
    assert 'rqmaint_script_calls_total{result="ok",script="requeue_started"}' in text
