"""Which queues exist: RQ registers every queue it enqueues to in ``rq:queues``."""

from __future__ import annotations

import redis

from rqmaint import keys
from rqmaint.errors import UnknownQueue
from rqmaint.lock import decode


def known_queues(client: redis.Redis) -> list[str]:
    names = []
    for member in client.smembers(keys.queues()):
        name = keys.queue_name_from_key(decode(member) or "")
        if name:
            names.append(name)
    return sorted(names)


def resolve(client: redis.Redis, requested: list[str] | None) -> list[str]:
    """``requested`` in the order given (duplicates dropped), or every known queue when none is given.

    A requested name that RQ does not know is an error naming it and the known queues.
    """
    known = known_queues(client)
    if not requested:
        return known
    wanted = list(dict.fromkeys(requested))
    unknown = [q for q in wanted if q not in set(known)]
    if unknown:
        raise UnknownQueue(unknown, known)
    return wanted
