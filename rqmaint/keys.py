"""Every Redis key pattern rqmaint reads or writes, in one place, built from one prefix.

RQ's templates are identical in 1.16 through 3.0 once the prefix is set (shared notes, rq-data-model
section 4; RQ 3.0 ``rq/defaults.py``): RQ 3.0 reads ``RQ_KEY_PREFIX`` (default ``rq``; letters, digits
and ``_ . : - { }``) once at import and builds every key as ``<prefix>:<kind>:...``. rqmaint follows it
exactly: :func:`configure` takes the same variable (or ``--key-prefix``), validates it the same way,
and every key below, and every key the Lua scripts build (they get :func:`prefix` and
:func:`own_prefix` as ARGV), comes from it.

rqmaint's own keys live under :func:`own_prefix`: ``rqmaint:`` for RQ's default prefix (the keys
rqmaint 0.1 wrote), else ``rqmaint:<prefix>:``. So two RQ deployments in one database never share
rqmaint's keys, and a hash-tagged prefix such as ``{rq}`` puts rqmaint's keys in RQ's slot on a
Redis Cluster.
"""

from __future__ import annotations

import os
import re

from rqmaint.errors import UsageError

DEFAULT_PREFIX = "rq"
ENV_VAR = "RQ_KEY_PREFIX"
_VALID = re.compile(r"[A-Za-z0-9_.:{}-]+")  # RQ 3.0 rq/defaults.py

_prefix: str | None = None  # set by configure(); until then the first key reads RQ_KEY_PREFIX, as RQ does


def validate_prefix(value: str, source: str = "--key-prefix") -> str:
    """RQ's own rule for RQ_KEY_PREFIX; a UsageError (exit 2) that says what to do otherwise."""
    if not _VALID.fullmatch(value):
        raise UsageError(
            f"invalid {source} {value!r}: RQ allows only letters, digits and _ . : - {{ }} "
            f"(RQ's default is {DEFAULT_PREFIX!r})"
        )
    return value


def configure(prefix: str | None = None) -> str:
    """Set the prefix for this process: ``prefix`` if given, else ``$RQ_KEY_PREFIX``, else ``rq``.

    Also exports it as ``RQ_KEY_PREFIX`` before RQ is imported (``clean`` runs RQ's code, which reads
    the variable once at import), so RQ's code and rqmaint's agree."""
    global _prefix
    if prefix is not None:
        value = validate_prefix(prefix)
    else:
        env = os.environ.get(ENV_VAR)
        value = DEFAULT_PREFIX if env is None else validate_prefix(env, ENV_VAR)
    _prefix = value
    if value != DEFAULT_PREFIX or ENV_VAR in os.environ:
        os.environ[ENV_VAR] = value
    return value


def prefix() -> str:
    """The prefix in force: the configured one, else ``$RQ_KEY_PREFIX`` (validated), else ``rq``."""
    return _prefix if _prefix is not None else configure()


def hash_tag() -> str | None:
    """The prefix's Redis Cluster hash tag (``{rq}`` -> ``rq``), if it has one."""
    p = prefix()
    start = p.find("{")
    if start < 0:
        return None
    end = p.find("}", start + 1)
    return p[start + 1 : end] if end > start + 1 else None


def own_prefix() -> str:
    """Where rqmaint's own keys live (with a trailing colon)."""
    p = prefix()
    return "rqmaint:" if p == DEFAULT_PREFIX else f"rqmaint:{p}:"


def rq(suffix: str) -> str:
    return f"{prefix()}:{suffix}"


def queues() -> str:
    """Set of every queue's key, ``<prefix>:queue:<name>``."""
    return rq("queues")


def queue_prefix() -> str:
    return rq("queue:")


def queue(name: str) -> str:
    return f"{queue_prefix()}{name}"


def queue_name_from_key(key: str) -> str | None:
    p = queue_prefix()
    return key[len(p) :] if key.startswith(p) else None


def intermediate(name: str) -> str:
    return f"{queue(name)}:intermediate"


def first_seen(name: str, job_id: str) -> str:
    return f"{intermediate(name)}:first_seen:{job_id}"


def started(name: str) -> str:
    return rq(f"wip:{name}")


def finished(name: str) -> str:
    return rq(f"finished:{name}")


def failed(name: str) -> str:
    return rq(f"failed:{name}")


def deferred(name: str) -> str:
    return rq(f"deferred:{name}")


def scheduled(name: str) -> str:
    return rq(f"scheduled:{name}")


def canceled(name: str) -> str:
    return rq(f"canceled:{name}")


def ready(name: str) -> str:
    """RQ 3.0's ReadyJobRegistry (dependents whose dependencies finished, READY_TO_ENQUEUE)."""
    return rq(f"ready:{name}")


def workers() -> str:
    return rq("workers")


def workers_of(name: str) -> str:
    return rq(f"workers:{name}")


def clean_lock(name: str) -> str:
    """RQ's own maintenance lock: RQ workers and rqmaint exclude each other through it."""
    return rq(f"clean_registries:{name}")


def job(job_id: str) -> str:
    return rq(f"job:{job_id}")


def worker_prefix() -> str:
    return rq("worker:")


def worker(name: str) -> str:
    return f"{worker_prefix()}{name}"


def worker_executions(name: str) -> str:
    """RQ 3.0: the set of ``<job_id>:<execution_id>`` a worker is running."""
    return f"{worker(name)}:executions"


def results(job_id: str) -> str:
    return rq(f"results:{job_id}")


def executions(job_id: str) -> str:
    return rq(f"executions:{job_id}")


def execution(job_id: str, execution_id: str) -> str:
    return rq(f"execution:{job_id}:{execution_id}")


def suspended() -> str:
    return rq("suspended")


def rate_limit_keys() -> str:
    """RQ 3.0: set of rate-limit keys (each ``<prefix>:rl:<key>`` with ``:allowed``/``:rate_limited``)."""
    return rq("rl-keys")


def rate_limit(key: str) -> str:
    """RQ 3.0: a rate limit's config hash (``concurrency``)."""
    return rq(f"rl:{key}")


def rate_limit_allowed(key: str) -> str:
    """RQ 3.0: zset of the job ids holding one of the rate limit's slots."""
    return f"{rate_limit(key)}:allowed"


def rate_limit_waiting(key: str) -> str:
    """RQ 3.0: zset of the job ids waiting for a slot (status ``rate_limited``)."""
    return f"{rate_limit(key)}:rate_limited"


def abandons(job_id: str) -> str:
    """rqmaint's counter of a job's abandonments (INCR, expires a week after the last one)."""
    return f"{own_prefix()}abandons:{job_id}"


def requeued(queue: str) -> str:
    """rqmaint's ledger of recent requeues from ``queue``'s registries (see rqmaint/requeue)."""
    return f"{own_prefix()}requeued:{queue}"


def audit() -> str:
    """rqmaint's audit trail: a capped stream of every change rqmaint made to RQ's data."""
    return f"{own_prefix()}audit"


def runs() -> str:
    """rqmaint's hash of when it last cleaned / requeued each queue successfully (``clean:<queue>``,
    ``requeue:<queue>`` -> epoch seconds); read by ``watch`` for its metrics."""
    return f"{own_prefix()}runs"


def requeue_calls(queue: str) -> str:
    """rqmaint's record of what each requeue call of ``queue`` wrote (read back after a lost reply)."""
    return f"{own_prefix()}calls:{queue}"
