"""The acquire -> clean -> release cycle, per queue.

"Clean" is what an RQ worker's maintenance does for a queue (the installed RQ's
``Worker.clean_registries``): FinishedJobRegistry, StartedJobRegistry (abandoned jobs -> failed or
retried, with failure callbacks and, rq >= 2.0, exception handlers), FailedJobRegistry, (rq >= 2.0)
DeferredJobRegistry and (rq >= 3.0) ReadyJobRegistry and rate-limit cleanups, the worker registry, and
the intermediate queue, in that order and with RQ's own functions and the deployment's serializer and
classes (``-S``, ``-j``, ``--queue-class``), so the resulting state is RQ's.

Between steps, and between batches of the started registry's abandoned entries (RQ's own
``cleanup(timestamp)`` called with ascending cut-offs, which is what one call does, in slices), the
lease and the stop flag are checked: a lost lock or a stop request (SIGTERM/SIGINT only set a flag;
nothing is ever raised inside RQ's code) ends the queue's work at that safe point.
"""

from __future__ import annotations

from rqmaint.clean.plan import (
    INTERMEDIATE_HEAD,
    MAX_LISTED_IDS,
    MAX_WORKERS,
    PLAN_PAGE,
    PLAN_SAMPLE,
    WORKER_SCAN,
    CleanPlan,
    plan,
)
from rqmaint.clean.run import CleanOptions, CleanRun, QueueClean, clean_queue, clean_queues
from rqmaint.clean.steps import STARTED_BATCH, STEP_PLAN, STEPS, StepAudit, run_rq_steps, steps

__all__ = [
    "INTERMEDIATE_HEAD",
    "MAX_LISTED_IDS",
    "MAX_WORKERS",
    "PLAN_PAGE",
    "PLAN_SAMPLE",
    "STARTED_BATCH",
    "STEPS",
    "STEP_PLAN",
    "WORKER_SCAN",
    "CleanOptions",
    "CleanPlan",
    "CleanRun",
    "QueueClean",
    "StepAudit",
    "clean_queue",
    "clean_queues",
    "plan",
    "run_rq_steps",
    "steps",
]
