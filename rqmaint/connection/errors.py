"""Errors of the cluster layer. They are ``redis.RedisError`` subclasses so that code handling Redis
failures handles them too; ``str()`` is a whole sentence saying what to do."""

from __future__ import annotations

import redis
from redis.exceptions import AskError


class ClusterError(redis.RedisError):
    """A cluster-level failure that redis-py reports outside of its RedisError tree (no node reachable,
    keys of one transaction in several slots, ...), or a cluster used the wrong way."""


class WrongClusterNode(ClusterError):
    """A single-node URL points at a Redis Cluster node that does not serve the key's slot."""

    def __init__(self, slot: int, address: str) -> None:
        self.slot = slot
        self.address = address
        super().__init__(
            f"this server is a Redis Cluster node that does not serve hash slot {slot} (node {address} "
            f"does): connect with redis+cluster://{address} so that rqmaint follows the cluster through "
            "slot migrations and failovers"
        )


def wrong_node(exc: AskError) -> WrongClusterNode:
    return WrongClusterNode(int(exc.slot_id), f"{exc.host}:{exc.port}")
