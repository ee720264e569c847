"""An exception handler that blocks RQ's cleanup of the started registry until the test says go, so a
test can steal rqmaint's lock or stall its renewals while ``clean`` holds the lock mid-run."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

GO_FILE_ENV = "RQMAINT_TEST_GO_FILE"


def waiting_marker(go: Path) -> Path:
    """The file the handler creates once it waits (no Redis key: the ACL tests' users may not write one)."""
    return go.with_name(go.name + ".waiting")


def wait_for_go(job: Any, *exc_info: Any) -> bool:
    go = Path(os.environ[GO_FILE_ENV])
    waiting_marker(go).touch()
    deadline = time.monotonic() + 120
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return True
