"""Requeue abandoned jobs: jobs whose worker died mid-job (started registry, deadline passed, worker not
alive and busy with them), jobs stuck in the intermediate list, and optionally jobs that RQ's own
maintenance already failed as abandoned.

* :mod:`.abandoned` -- what "abandoned" means, defined once (status, clean, watch, metrics import it);
* :mod:`.outcome` -- the :class:`Outcome` enum of the scripts;
* :mod:`.bindings` -- the scripts' KEYS/ARGV and reply (``rqmaint/lua/requeue_*.lua``);
* :mod:`.runner` -- :class:`Requeuer`, :func:`requeue_queue`, :func:`explain_job`;
* :mod:`.report` -- :class:`QueueRequeue`, :class:`JobLine`.
"""

from rqmaint.requeue.abandoned import ABANDONED_MARK, INTERMEDIATE_GRACE, abandoned_marker, due, due_range
from rqmaint.requeue.bindings import COUNTER_TTL, give_up_reasons, rq_time
from rqmaint.requeue.outcome import PROBLEMS, SETTLED, STAYS, Outcome
from rqmaint.requeue.report import MAX_LISTED, JobLine, QueueRequeue
from rqmaint.requeue.runner import (
    DEFAULT_BATCH,
    DEFAULT_MAX_REQUEUES,
    RECONCILE_WINDOW,
    RequeueOptions,
    Requeuer,
    explain_job,
    redis_now,
    requeue_queue,
)

__all__ = [
    "ABANDONED_MARK",
    "COUNTER_TTL",
    "DEFAULT_BATCH",
    "DEFAULT_MAX_REQUEUES",
    "INTERMEDIATE_GRACE",
    "MAX_LISTED",
    "PROBLEMS",
    "RECONCILE_WINDOW",
    "SETTLED",
    "STAYS",
    "JobLine",
    "Outcome",
    "QueueRequeue",
    "RequeueOptions",
    "Requeuer",
    "abandoned_marker",
    "due",
    "due_range",
    "explain_job",
    "give_up_reasons",
    "redis_now",
    "requeue_queue",
    "rq_time",
]
