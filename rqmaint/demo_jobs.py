"""The job ``rqmaint demo`` runs on real RQ workers (importable wherever rqmaint is installed)."""

from __future__ import annotations

import time
from pathlib import Path


def render_report(marker: str) -> str:
    """First run: hang (the demo kills its worker mid-job). Once requeued: finish at once."""
    path = Path(marker)
    if path.exists():
        return f"report {path.name} rendered"
    path.write_text("started\n")
    time.sleep(3600)
    return "unreachable"
