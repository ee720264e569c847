"""Lua scripts shipped as package data (rqmaint/lua/*.lua), registered once per client.

The requeue scripts are assembled here: ``requeue_lib.lua`` (shared helpers, KEYS/ARGV layout) followed
by one mode's file (``requeue_started.lua``, ``requeue_intermediate.lua``, ``requeue_failed.lua``,
``requeue_reconcile.lua``). Each comes in two variants:

* the write variant (no shebang: Redis's classic script semantics), run with ``EVALSHA``;
* the dry-run variant, whose first line is ``#!lua flags=no-writes``, run with ``EVALSHA_RO`` (or
  ``EVAL_RO`` when the server does not know it yet and the user may not ``SCRIPT LOAD``): the server
  itself refuses any write, so a dry run is the real run's code with writes off, and a read-only ACL
  user (``+evalsha_ro +eval_ro``) can run it.

Redis 6.2 has neither command nor script flags: there the dry run falls back to the write variant with
its writes switched off by ARGV (``write()`` in the library does nothing), which needs ``+evalsha`` --
the read-only ACL rule set cannot dry-run on 6.2 (see README).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any

import redis
from redis.commands.core import Script

REQUEUE_MODES = ("started", "intermediate", "failed", "reconcile")
NO_WRITES = "#!lua flags=no-writes\n"


@cache
def source(name: str) -> str:
    return resources.files("rqmaint").joinpath("lua").joinpath(f"{name}.lua").read_text(encoding="utf-8")


@cache
def requeue_source(mode: str, read_only: bool) -> str:
    """The requeue script of ``mode``: the library, then the mode's file; the dry-run variant flagged."""
    if mode not in REQUEUE_MODES:
        raise ValueError(f"unknown requeue mode {mode!r}")
    body = source("requeue_lib") + "\n" + source(f"requeue_{mode}")
    return (NO_WRITES + body) if read_only else body


@cache
def sha1(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


_registered: dict[tuple[int, str], Script] = {}
_read_only_ok: dict[int, bool] = {}  # per client: does the server know EVALSHA_RO / script flags?
force_no_read_only = False  # tests: behave as on Redis 6.2 (no EVALSHA_RO)


def _script(client: redis.Redis, name: str, text: str) -> Script:
    key = (id(client), name)
    found = _registered.get(key)
    if found is None or found.registered_client is not client:
        found = client.register_script(text)
        _registered[key] = found
    return found


def script(client: redis.Redis, name: str) -> Script:
    """The registered script ``name`` for ``client`` (EVALSHA with automatic EVAL fallback)."""
    return _script(client, name, source(name))


#: Called after every script call with (script name, seconds, whether it returned); ``watch
#: --metrics-port`` sets it (rqmaint.metrics). One slot: the last setter wins.
Observer = Callable[[str, float, bool], None]
observer: Observer | None = None


def set_observer(fn: Observer | None) -> None:
    global observer
    observer = fn


def _observed(name: str, call: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    ok = False
    try:
        result = call()
        ok = True
        return result
    finally:
        if observer is not None:
            observer(name, time.perf_counter() - started, ok)


def run(client: redis.Redis, name: str, keys: list[str], args: list[Any]) -> Any:
    return _observed(name, lambda: script(client, name)(keys=keys, args=args, client=client))


def read_only_supported(client: redis.Redis) -> bool | None:
    """Whether dry runs on ``client`` get the server's no-writes guarantee (None: not tried yet)."""
    if force_no_read_only:
        return False
    return _read_only_ok.get(id(client))


def _unknown_command(error: redis.ResponseError) -> bool:
    text = str(error).lower()
    return "unknown command" in text or "unknown subcommand" in text


def _write_variant(client: redis.Redis, mode: str) -> Script:
    return _script(client, f"requeue_{mode}", requeue_source(mode, False))


def run_requeue(client: redis.Redis, mode: str, keys: list[str], args: list[Any], *, dry_run: bool) -> Any:
    """One call of the requeue script of ``mode``. A dry run (``args`` then carry the dry flag too)
    goes through ``EVALSHA_RO`` on the no-writes variant where the server has it."""
    return _observed(f"requeue_{mode}", lambda: _run_requeue(client, mode, keys, args, dry_run=dry_run))


def _run_requeue(client: redis.Redis, mode: str, keys: list[str], args: list[Any], *, dry_run: bool) -> Any:
    if not dry_run:
        return _script(client, f"requeue_{mode}", requeue_source(mode, False))(
            keys=keys, args=args, client=client
        )
    if read_only_supported(client) is not False:
        text = requeue_source(mode, True)
        try:
            try:
                reply = client.evalsha_ro(sha1(text), len(keys), *keys, *args)
            except redis.exceptions.NoScriptError:
                reply = client.eval_ro(text, len(keys), *keys, *args)  # also caches it server-side
        except redis.exceptions.NoPermissionError:
            raise
        except redis.ResponseError as error:
            if not _unknown_command(error):
                raise
            _read_only_ok[id(client)] = False  # Redis 6.2: fall back below
        else:
            _read_only_ok[id(client)] = True
            return reply
    # No EVALSHA_RO (Redis 6.2): the write variant, with every write switched off by the dry flag.
    return _script(client, f"requeue_{mode}", requeue_source(mode, False))(
        keys=keys, args=args, client=client
    )
