"""Every table at 80 and 200 columns with hostile names (issue 10 item 1): names and ids whole,
no line wider than the terminal, problems marked (also under NO_COLOR), Redis data never markup,
long values shortened in tables and whole in --json."""

from __future__ import annotations

import json
import re
import time

import pytest
import redis
from rq import Queue

from rqmaint.cli.tables import Alert, Col, duration, escape, layout, tsv
from tests import jobs
from tests.support import age_abandoned

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
#: RQ allows any queue name: markup, a colon, non-ASCII, a newline, a long one
HOSTILE = ["a[/]b", "[bold red]x[/]", "tenant:42-ü", "new\nline", "q-" * 14]
WIDTHS = [80, 200]


def _terminal(cli, width: int, *args: str, no_color: bool = False):
    env = {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "0", "COLUMNS": str(width)}
    if no_color:
        env["NO_COLOR"] = "1"
    result = cli(*args, env=env)
    out = ANSI.sub("", result.stdout)
    for line in out.splitlines():
        assert len(line) <= width, f"{len(line)} > {width}: {line!r}"
        if line[:1] in "┏┃┡│└":  # rich crops a line wider than the terminal: its right border goes
            assert line[-1] in "┓┃┩│┘", f"cropped at {width}: {line!r}"
    return result, out


def _whole(out: str, *names: str) -> None:
    for name in names:
        assert escape(name) in out, f"{name!r} cut or missing in:\n{out}"


def _seed_status(client: redis.Redis) -> None:
    now = int(time.time())
    for i, name in enumerate(HOSTILE):
        Queue(name, connection=client).enqueue(jobs.add, 1, 1)
        for registry in ("failed", "finished", "deferred", "scheduled", "canceled"):
            client.zadd(f"rq:{registry}:{name}", {f"j{i}": now + 1000})
        client.zadd(f"rq:wip:{name}", {f"w{i}:e": now - 5})  # abandoned: a problem
        client.zadd(f"rq:wip:{name}", {f"s{i}:e": now + 20})  # stalled: its worker's hash is gone
        client.hset(f"rq:job:s{i}", mapping={"status": "started", "worker_name": f"gone{i}"})
    client.set(f"rq:clean_registries:{HOSTILE[0]}", "x" * 1_000_000)  # no expiry, 1 MB
    client.set(f"rq:clean_registries:{HOSTILE[2]}", "1", ex=899)


@pytest.mark.parametrize("width", WIDTHS)
def test_status_and_lock_tables(cli, client, width):
    _seed_status(client)
    result, out = _terminal(cli, width, "status")
    assert result.exit_code == 0, result.stderr
    _whole(out, *HOSTILE)
    assert "RQ registries" in out and "! 1" in out  # abandoned stands out
    assert "stalled" in out and "abandoned" in out  # stalled next to it, kept at 80 columns too
    assert re.search(r"│ +! 1 │ +! 1 │ +! (1\d|20|21)s │", out), out  # abandoned, stalled, abandoned in
    if width == 80:
        assert "not shown at 80 columns:" in out
    else:
        assert "not shown" not in out and "canceled" in out
    result, out = _terminal(cli, width, "lock", "status")
    assert result.exit_code == 0, result.stderr
    _whole(out, *HOSTILE)
    assert "! none" in out  # a lock without expiry stands out
    assert "x" * 100 not in out  # the 1 MB value is shortened...
    assert len(out) < 20_000
    if width == 200:
        assert "(1000000 chars)" in out or "chars)" in out
        assert "14m 5" in out  # RQ's 899 s lock, read as a duration
    full = json.loads(cli("lock", "status", "--json").stdout)
    assert {x["queue"]: x["holder"] for x in full["locks"]}[HOSTILE[0]] == "x" * 1_000_000  # ...whole in JSON


def test_problem_mark_survives_no_color(cli, client):
    _seed_status(client)
    result, out = _terminal(cli, 200, "status", no_color=True)
    assert not re.search(r"\x1b\[[0-9;]*3[0-9]m", result.stdout)  # no colour at all...
    assert "! 1" in out and "! other no expiry" in out  # ...the marks stay


@pytest.mark.parametrize("width", WIDTHS)
def test_requeue_and_clean_tables(cli, client, abandon, width):
    queues = ["a[/]b", "[bold]q[/bold]:ü"]
    ids = []
    for q in queues:
        ids += abandon(q, 1).job_ids
        age_abandoned(client, q, 200)
    result, out = _terminal(cli, width, "requeue-abandoned", "--dry-run", *queues)
    assert result.exit_code == 0, result.stderr
    _whole(out, *queues, *ids)
    assert "Abandoned jobs (dry run)" in out and "Would requeue (dry run)" in out
    result, out = _terminal(cli, width, "clean", "--dry-run", *queues)
    assert result.exit_code == 0, result.stderr
    _whole(out, *queues)
    assert "! 1" in out  # would go to failed: stands out
    result, out = _terminal(cli, width, "requeue-abandoned", *queues)
    assert result.exit_code == 0, result.stderr
    _whole(out, *queues)
    assert "Requeued" in out


def test_empty_dry_run_says_so_instead_of_a_header(cli, client):
    Queue("default", connection=client).enqueue(jobs.add, 1, 1)
    _, out = _terminal(cli, 80, "requeue-abandoned", "--dry-run")
    assert "no abandoned jobs" in out and "job id" not in out


def test_title_of_a_clean_that_cleaned_nothing(cli, client):
    Queue("default", connection=client).enqueue(jobs.add, 1, 1)
    client.set("rq:clean_registries:default", "1", ex=899)
    result, out = _terminal(cli, 80, "clean", "default")
    assert result.exit_code == 3
    assert "Not cleaned" in out and "! skipped-locked" in out


@pytest.mark.parametrize("width", WIDTHS)
def test_watch_dashboard(cli, client, width):
    _seed_status(client)
    result, out = _terminal(cli, width, "watch", "--max-cycles", "1")
    assert result.exit_code == 0, result.stderr
    _whole(out, *HOSTILE)


# -- the layout itself, without Redis ------------------------------------------------------------


def test_durations_read_the_same_everywhere():
    assert [duration(s) for s in (0, 1.5, 42, 90, 899, 3600, 3725, 90000)] == [
        "0s",
        "1.5s",
        "42s",
        "1m 30s",
        "14m 59s",
        "1h",
        "1h 2m",
        "1d 1h",
    ]


def test_zero_columns_fold_and_low_priority_columns_go_first():
    cols = [Col("queue", "key"), Col("big", "count", 9), Col("zero", "count", 9), Col("minor", "text", 1)]
    rows = [["q" * 60, 5, 0, "m" * 30]]
    lay = layout(cols, rows, 80)
    assert lay.zero == ["zero"] and lay.dropped == ["minor"]
    assert [cols[i].name for i in lay.shown] == ["queue", "big"]
    lay = layout(cols, [["q", 5, Alert(0), "m"]], 80)
    assert lay.zero == []  # a marked 0 is a problem, never folded away
    lay = layout(cols, [["q" * 60, 5, 0, Alert("m" * 30)]], 80)
    assert lay.dropped == ["big"]  # a column showing a problem is dropped last


def test_duration_columns_without_a_value_fold_too():
    cols = [Col("queue", "key"), Col("stalled", "count"), Col("abandoned_in", "duration"), Col("n", "count")]
    assert layout(cols, [["q", 0, None, 1], ["r", 0, None, 2]], 80).zero == ["stalled", "abandoned_in"]
    assert layout(cols, [["q", 1, 25.0, 1], ["r", 0, None, 2]], 80).zero == []


def test_tab_separated_values_are_escaped():
    out = tsv(["queue", "n"], [["a\tb\nc\\d", 1], [Alert("x"), None]])
    assert out.splitlines() == ["queue\tn", "a\\tb\\nc\\\\d\t1", "x\t-"]
