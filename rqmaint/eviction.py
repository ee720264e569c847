"""Whether the server may evict RQ's keys: RQ's data (job hashes, registries, queue lists) is only safe
under ``maxmemory-policy noeviction`` once ``maxmemory`` is set. Read from ``INFO memory``."""

from __future__ import annotations

from dataclasses import dataclass

import redis

SAFE_POLICY = "noeviction"


@dataclass(frozen=True)
class EvictionRisk:
    policy: str
    maxmemory: int  # bytes

    def message(self) -> str:
        scope = (
            "any key"
            if self.policy.startswith("allkeys")
            else "keys with a TTL (RQ's finished jobs, results)"
        )
        return (
            f"the server's maxmemory-policy is {self.policy} (maxmemory {self.maxmemory} bytes): when memory "
            f"runs out it evicts {scope}, so jobs and registries can vanish; RQ needs {SAFE_POLICY}"
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": "maxmemory-policy",
            "policy": self.policy,
            "maxmemory": self.maxmemory,
            "message": self.message(),
        }


def eviction_risk(client: redis.Redis) -> EvictionRisk | None:
    """The server's eviction policy if it can evict RQ's keys; None if it cannot, or if the user may
    not run ``INFO`` (a read-only ACL user): a warning is not worth failing a command for."""
    try:
        info = client.info("memory")
    except (redis.exceptions.NoPermissionError, redis.ResponseError):
        return None
    policy = str(info.get("maxmemory_policy", SAFE_POLICY))
    maxmemory = int(info.get("maxmemory", 0) or 0)
    if policy == SAFE_POLICY or maxmemory == 0:
        return None
    return EvictionRisk(policy, maxmemory)
