"""Start-up cost: ``requeue-abandoned`` imports neither rq nor rich (nor redis for ``--help``)."""

from __future__ import annotations

import json
import sys

import pytest

from tests.support import process_env, run_process

PROBE = """
import json, sys
sys.argv = ["rqmaint", *json.loads(sys.argv[1])]
from rqmaint.cli.main import main
try:
    main()
except SystemExit as exc:
    code = exc.code
roots = sorted({m.split(".")[0] for m in sys.modules})
sys.stderr.write("\\nMODULES " + json.dumps({"code": code, "roots": roots}) + "\\n")
"""


def _loaded(url: str, *args: str) -> tuple[int, set[str], str]:
    done = run_process([sys.executable, "-c", PROBE, json.dumps(args)], env=process_env(url))
    line = [ln for ln in done.stderr.splitlines() if ln.startswith("MODULES ")][-1]
    doc = json.loads(line[len("MODULES ") :])
    return doc["code"], set(doc["roots"]), done.stdout


def test_help_imports_no_rq_rich_or_redis():
    code, roots, out = _loaded("redis://127.0.0.1:1/0", "requeue-abandoned", "--help")
    assert code == 0 and "--dry-run" in out
    assert not roots & {"rq", "rich", "redis"}, roots & {"rq", "rich", "redis"}


@pytest.mark.parametrize("extra", [(), ("--json",), ("--dry-run",)], ids=["table", "json", "dry-run"])
def test_requeue_run_imports_neither_rq_nor_rich(client, redis_url, abandon, extra):
    abandon("default", 2)
    code, roots, out = _loaded(redis_url, "requeue-abandoned", "-q", "default", *extra)
    assert code in (0, None), out
    assert "default" in out
    assert "redis" in roots  # it did talk to Redis
    assert not roots & {"rq", "rich"}, roots & {"rq", "rich"}
