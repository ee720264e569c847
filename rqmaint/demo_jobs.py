"""The job ``rqmaint demo`` runs on real RQ workers (importable wherever rqmaint is installed)."""

from __future__ import annotations

import time


def render_report(name: str) -> str:
    """First run: hang (the demo kills its worker mid-job). Once requeued: finish at once.

    The first run is told apart by a key it sets with NX in the demo's private server."""
    from rq import get_current_job

    job = get_current_job()
    if job is None or not job.connection.set(f"demo:first-run:{job.id}", 1, nx=True):
        return f"report {name} rendered"
    time.sleep(3600)
    return "unreachable"
