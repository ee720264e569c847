"""An exception handler that hangs, to signal rqmaint while it holds a lock mid-clean."""

from __future__ import annotations

import time
from typing import Any


def forever(job: Any, *exc_info: Any) -> bool:
    job.connection.set("test:hanging", 1)
    time.sleep(3600)
    return True


def sigterm_self(job: Any, *exc_info: Any) -> bool:
    """Send SIGTERM to the process running the handler (rqmaint), as a pod stop would, then go on."""
    import os
    import signal

    os.kill(os.getpid(), signal.SIGTERM)
    return True
