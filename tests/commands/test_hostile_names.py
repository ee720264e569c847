"""Names from Redis cannot break a line: tab-separated output and one-line errors escape them."""

from __future__ import annotations

from rq import Queue

from tests import jobs

NASTY = "evil\tname\nwith\\lines"


def test_tab_separated_rows_stay_one_line(cli, client):
    Queue(NASTY, connection=client).enqueue(jobs.add, 1, 1)
    Queue("plain", connection=client).enqueue(jobs.add, 1, 1)
    lines = cli("status").stdout.splitlines()
    assert len(lines) == 3  # header + one line per queue
    rows = {ln.split("\t")[0]: ln.split("\t") for ln in lines[1:]}
    assert "evil\\tname\\nwith\\\\lines" in rows
    assert len(rows["evil\\tname\\nwith\\\\lines"]) == len(lines[0].split("\t"))
    lock_lines = cli("lock", "status").stdout.splitlines()
    assert len(lock_lines) == 3


def test_error_about_a_hostile_name_is_one_line(cli, client):
    Queue("plain", connection=client).enqueue(jobs.add, 1, 1)
    result = cli("status", "-q", "no\nsuch")
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
