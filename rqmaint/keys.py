"""Every Redis key pattern rqmaint reads or writes, in one place.

RQ's templates are identical in 2.0 through 2.12 (see shared notes, rq-data-model section 4).
Keys that rqmaint adds for itself live under ``rqmaint:``.
"""

from __future__ import annotations

QUEUES = "rq:queues"  # set of "rq:queue:<name>"
QUEUE_PREFIX = "rq:queue:"
WORKER_PREFIX = "rq:worker:"

# rqmaint's own keys
RQMAINT_PREFIX = "rqmaint:"


def queue(name: str) -> str:
    return f"{QUEUE_PREFIX}{name}"


def queue_name_from_key(key: str) -> str | None:
    return key[len(QUEUE_PREFIX) :] if key.startswith(QUEUE_PREFIX) else None


def intermediate(name: str) -> str:
    return f"{QUEUE_PREFIX}{name}:intermediate"


def first_seen(name: str, job_id: str) -> str:
    return f"{QUEUE_PREFIX}{name}:intermediate:first_seen:{job_id}"


def started(name: str) -> str:
    return f"rq:wip:{name}"


def finished(name: str) -> str:
    return f"rq:finished:{name}"


def failed(name: str) -> str:
    return f"rq:failed:{name}"


def deferred(name: str) -> str:
    return f"rq:deferred:{name}"


def scheduled(name: str) -> str:
    return f"rq:scheduled:{name}"


def canceled(name: str) -> str:
    return f"rq:canceled:{name}"


def workers_of(name: str) -> str:
    return f"rq:workers:{name}"


def clean_lock(name: str) -> str:
    """RQ's own maintenance lock: RQ workers and rqmaint exclude each other through it."""
    return f"rq:clean_registries:{name}"


def job(job_id: str) -> str:
    return f"rq:job:{job_id}"


def worker(name: str) -> str:
    return f"{WORKER_PREFIX}{name}"


def results(job_id: str) -> str:
    return f"rq:results:{job_id}"


def executions(job_id: str) -> str:
    return f"rq:executions:{job_id}"


def execution(job_id: str, execution_id: str) -> str:
    return f"rq:execution:{job_id}:{execution_id}"


def abandons(job_id: str) -> str:
    """rqmaint's counter of a job's abandonments (INCR, expires a week after the last one)."""
    return f"{RQMAINT_PREFIX}abandons:{job_id}"


def requeued(queue: str) -> str:
    """rqmaint's ledger of recent requeues into ``queue`` (zset "<id>|<retries_left>" -> time)."""
    return f"{RQMAINT_PREFIX}requeued:{queue}"
