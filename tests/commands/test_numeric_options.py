"""Issue 10 item 7: every numeric option rejects what is not a finite number in its range.

Each bad value must end in exit 2 with one line on stderr naming the option (``rqmaint: error: ...;
see 'rqmaint <cmd> -h'``), no traceback, and before anything touches Redis: the real server sees no new
connection.
"""

from __future__ import annotations

import pytest
import redis

from tests.support.cli import CliInvoker

BAD = [
    ("status", "--timeout", "inf"),
    ("status", "--timeout", "nan"),
    ("status", "--timeout", "1e300"),
    ("status", "--timeout", "-1"),
    ("lock", "status", "--timeout", "nan"),
    ("clean", "--lock-ttl", "inf"),
    ("clean", "--lock-ttl", "nan"),
    ("clean", "--lock-ttl", "1e300"),
    ("clean", "--wait", "inf"),
    ("clean", "--wait", "nan"),
    ("clean", "--wait", "-1"),
    ("clean", "--max-requeues", "-1"),
    ("requeue-abandoned", "--timeout", "inf"),
    ("requeue-abandoned", "--wait", "inf"),
    ("requeue-abandoned", "--lock-ttl", "nan"),
    ("requeue-abandoned", "--limit", "0"),
    ("requeue-abandoned", "--limit", "1e300"),
    ("requeue-abandoned", "--limit", "99999999999999999999999"),
    ("requeue-abandoned", "--max-requeues", "99999999999999999999999"),
    ("requeue-abandoned", "--batch-size", "inf"),
    ("watch", "--interval", "nan"),
    ("watch", "--interval", "inf"),
    ("watch", "--interval", "-5"),
    ("watch", "--max-cycles", "0"),
    ("watch", "--max-cycles", "nan"),
    ("watch", "--lock-ttl", "inf"),
]


def _connections(client: redis.Redis) -> int:
    return int(client.info("stats")["total_connections_received"])


@pytest.mark.parametrize("argv", BAD, ids=[" ".join(a) for a in BAD])
def test_bad_number_is_a_usage_error_before_redis(
    cli: CliInvoker, client: redis.Redis, argv: tuple[str, ...]
) -> None:
    client.ping()
    before = _connections(client)
    result = cli(*argv, "--json")
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.output
    option, command = argv[-2], " ".join(argv[:-2])
    (line,) = result.stderr.splitlines()  # one line: no Usage box, no "Try ... for help"
    assert line.startswith("rqmaint: error: Invalid value for ") and option in line, line
    assert line.endswith(f"; see 'rqmaint {command} -h'"), line
    assert result.stdout == ""
    assert _connections(client) == before, "the CLI connected to Redis before rejecting the option"


@pytest.mark.parametrize(
    "argv",
    [
        ("status", "--timeout", "2.5"),
        ("clean", "--dry-run", "--wait", "0", "--lock-ttl", "30"),
        ("requeue-abandoned", "--dry-run", "--limit", "5", "--max-requeues", "0"),
        ("watch", "--interval", "0.1", "--max-cycles", "1"),
    ],
)
def test_finite_numbers_in_range_still_work(cli: CliInvoker, argv: tuple[str, ...]) -> None:
    result = cli(*argv, "--json")
    assert result.exit_code == 0, (result.stdout, result.stderr)
