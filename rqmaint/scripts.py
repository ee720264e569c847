"""Lua scripts shipped as package data (rqmaint/lua/*.lua), registered once per client."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any

import redis
from redis.commands.core import Script


@cache
def source(name: str) -> str:
    return resources.files("rqmaint").joinpath("lua").joinpath(f"{name}.lua").read_text(encoding="utf-8")


_registered: dict[tuple[int, str], Script] = {}


def script(client: redis.Redis, name: str) -> Script:
    """The registered script ``name`` for ``client`` (EVALSHA with automatic EVAL fallback)."""
    key = (id(client), name)
    found = _registered.get(key)
    if found is None or found.registered_client is not client:
        found = client.register_script(source(name))
        _registered[key] = found
    return found


#: Called after every script call with (script name, seconds, whether it returned); ``watch
#: --metrics-port`` sets it (rqmaint.metrics). One slot: the last setter wins.
Observer = Callable[[str, float, bool], None]
observer: Observer | None = None


def set_observer(fn: Observer | None) -> None:
    global observer
    observer = fn


def run(client: redis.Redis, name: str, keys: list[str], args: list[Any]) -> Any:
    started = time.perf_counter()
    ok = False
    try:
        result = script(client, name)(keys=keys, args=args, client=client)
        ok = True
        return result
    finally:
        if observer is not None:
            observer(name, time.perf_counter() - started, ok)
