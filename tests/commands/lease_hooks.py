"""An exception handler that blocks RQ's cleanup of the started registry until the test says go, so a
test can steal rqmaint's lock or stall its renewals while ``clean`` holds the lock mid-run."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

GO_FILE_ENV = "RQMAINT_TEST_GO_FILE"


def wait_for_go(job: Any, *exc_info: Any) -> bool:
    job.connection.set("test:hanging", 1)
    go = Path(os.environ[GO_FILE_ENV])
    deadline = time.monotonic() + 120
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return True
