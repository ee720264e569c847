"""Whole-database snapshots and readable diffs, for differential tests; DB copies.

:func:`snapshot` reads every key with raw commands (no unpickling: ``data``/``meta`` stay
opaque bytes) into ``{key: KeyState(type, value, ttl)}``.  With ``normalize=True`` (default),
values that legitimately differ by a few milliseconds between two runs compare equal within
``tolerance`` seconds: timestamp fields of hashes and stream entries, zset scores and TTLs become
:class:`Approx`, and stream entry ids are replaced by their index.  Compare snapshots with ``==``
or, for a readable report, :func:`diff_snapshots`.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Collection, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any, NamedTuple

import redis

from ._util import as_bytes, as_text

#: Hash / stream-entry fields holding a time (RQ's ``%Y-%m-%dT%H:%M:%S.%fZ`` or float epoch).
TIMESTAMP_FIELDS: frozenset[bytes] = frozenset(
    {
        b"enqueued_at",
        b"started_at",
        b"ended_at",
        b"last_heartbeat",
        b"created_at",
        b"birth",
        b"death",
        b"shutdown_requested_date",
        b"execution_started_at",
        b"execution_ended_at",
    }
)

DEFAULT_TOLERANCE = 5.0


class Approx:
    """A number (epoch time, zset score or TTL in seconds) equal to others within a tolerance."""

    __slots__ = ("kind", "raw", "tolerance", "value")

    def __init__(self, value: float, tolerance: float, kind: str = "time", raw: bytes | None = None) -> None:
        self.value = value
        self.tolerance = tolerance
        self.kind = kind  # "time" (a hash/stream field), "score" or "ttl"
        self.raw = raw

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Approx):
            return NotImplemented
        if self.value == other.value:
            return True
        if math.isinf(self.value) or math.isinf(other.value):
            return False
        return abs(self.value - other.value) <= max(self.tolerance, other.tolerance)

    def __hash__(self) -> int:
        raise TypeError("Approx is unhashable: its equality is not transitive")

    def __repr__(self) -> str:
        if self.kind == "ttl":
            return f"~{self.value:.1f}s"
        if math.isfinite(self.value) and 1e9 < self.value < 1e10:
            stamp = datetime.fromtimestamp(self.value, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")
            return f"~{stamp[:-3]}Z"
        return f"~{self.value:g}"


class KeyState(NamedTuple):
    """One key of a snapshot.  ``value`` by type:

    string: bytes; hash: ``{field: value}``; list: tuple; set: frozenset; zset:
    ``{member: score}``; stream: tuple of ``(entry_id, {field: value})`` (entry id replaced by
    ``"#<index>"`` when normalized).  ``ttl``: None if persistent, else seconds.
    """

    type: str
    value: Any
    ttl: Any


def parse_timestamp(raw: bytes) -> float | None:
    """Epoch seconds of an RQ timestamp (``2026-11-27T17:14:41.635701Z`` or ``1764263681.63``)."""
    text = raw.decode("ascii", "replace").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def _norm_fields(
    fields: Mapping[Any, Any], normalize: bool, tolerance: float, timestamp_fields: Collection[bytes]
) -> dict[bytes, Any]:
    out: dict[bytes, Any] = {}
    for name, value in fields.items():
        name_b, value_b = as_bytes(name), as_bytes(value)
        if normalize and name_b in timestamp_fields:
            stamp = parse_timestamp(value_b)
            if stamp is not None:
                out[name_b] = Approx(stamp, tolerance, "time", value_b)
                continue
        out[name_b] = value_b
    return out


def snapshot(
    client: redis.Redis,
    pattern: str = "*",
    *,
    normalize: bool = True,
    tolerance: float = DEFAULT_TOLERANCE,
    timestamp_fields: Collection[bytes] = TIMESTAMP_FIELDS,
    chunk_size: int = 1000,
) -> dict[str, KeyState]:
    """Read every key matching ``pattern`` in the client's DB into ``{key: KeyState}``.

    Raw values (bytes).  ``normalize=False`` keeps stream ids, timestamps as bytes, scores as
    floats and TTLs as float seconds, for exact comparisons.  Keys that expire while being read
    are left out.
    """
    keys = sorted({as_text(k) for k in client.scan_iter(match=pattern, count=chunk_size)})
    result: dict[str, KeyState] = {}
    for start in range(0, len(keys), chunk_size):
        chunk = keys[start : start + chunk_size]
        with client.pipeline(transaction=False) as pipe:
            for key in chunk:
                pipe.type(key)
                pipe.pttl(key)
            meta = pipe.execute()
        types = [as_text(t) for t in meta[0::2]]
        ttls = [int(t) for t in meta[1::2]]
        with client.pipeline(transaction=False) as pipe:
            for key, kind in zip(chunk, types, strict=True):
                if kind == "string":
                    pipe.get(key)
                elif kind == "hash":
                    pipe.hgetall(key)
                elif kind == "list":
                    pipe.lrange(key, 0, -1)
                elif kind == "set":
                    pipe.smembers(key)
                elif kind == "zset":
                    pipe.zrange(key, 0, -1, withscores=True)
                elif kind == "stream":
                    pipe.xrange(key, "-", "+")
                else:  # "none" (expired meanwhile) or a type RQ never uses
                    pipe.echo(kind)
            values = pipe.execute()
        for key, kind, pttl, raw in zip(chunk, types, ttls, values, strict=True):
            if kind == "none" or pttl == -2:
                continue
            value: Any
            if kind == "string":
                if raw is None:
                    continue
                value = as_bytes(raw)
            elif kind == "hash":
                value = _norm_fields(raw, normalize, tolerance, timestamp_fields)
            elif kind == "list":
                value = tuple(as_bytes(v) for v in raw)
            elif kind == "set":
                value = frozenset(as_bytes(v) for v in raw)
            elif kind == "zset":
                value = {
                    as_bytes(m): (Approx(float(s), tolerance, "score") if normalize else float(s))
                    for m, s in raw
                }
            elif kind == "stream":
                value = tuple(
                    (
                        f"#{i}" if normalize else as_text(entry_id),
                        _norm_fields(fields, normalize, tolerance, timestamp_fields),
                    )
                    for i, (entry_id, fields) in enumerate(raw)
                )
            else:
                value = f"<unsupported type {kind}>"
            ttl: Any = None
            if pttl >= 0:
                ttl = Approx(pttl / 1000, tolerance, "ttl") if normalize else pttl / 1000
            result[key] = KeyState(kind, value, ttl)
    return result


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _ignored(path: str, ignore: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(path, pat) for pat in ignore)


def _diff_mapping(key: str, a: Mapping[Any, Any], b: Mapping[Any, Any], ignore: Collection[str]) -> list[str]:
    out = []
    for name in sorted(set(a) | set(b)):
        if _ignored(f"{key}#{as_text(name)}", ignore):
            continue
        if name not in b:
            out.append(f"{key}#{as_text(name)}: only in a ({_short(a[name])})")
        elif name not in a:
            out.append(f"{key}#{as_text(name)}: only in b ({_short(b[name])})")
        elif a[name] != b[name]:
            out.append(f"{key}#{as_text(name)}: {_short(a[name])} != {_short(b[name])}")
    return out


def diff_snapshots(
    a: Mapping[str, KeyState],
    b: Mapping[str, KeyState],
    ignore: Collection[str] = (),
) -> list[str]:
    """Differences between two snapshots as readable lines; empty means identical.

    ``ignore`` holds ``fnmatch`` patterns (case-sensitive) matched against:
    ``<key>`` (the whole key), ``<key>#<field>`` (a hash field, a field of every stream entry, or
    a zset member), and ``<key>@ttl`` (the key's TTL).  Example:
    ``ignore=["rq:workers*", "rq:job:*#enqueued_at", "rq:results:*#exc_string", "*@ttl"]``.
    """
    out: list[str] = []
    for key in sorted(set(a) | set(b)):
        if _ignored(key, ignore):
            continue
        if key not in b:
            out.append(f"{key}: only in a ({a[key].type}: {_short(a[key].value)})")
            continue
        if key not in a:
            out.append(f"{key}: only in b ({b[key].type}: {_short(b[key].value)})")
            continue
        sa, sb = a[key], b[key]
        if sa.type != sb.type:
            out.append(f"{key}: type {sa.type} != {sb.type}")
            continue
        if sa.ttl != sb.ttl and not _ignored(f"{key}@ttl", ignore):
            ta = "persistent" if sa.ttl is None else repr(sa.ttl)
            tb = "persistent" if sb.ttl is None else repr(sb.ttl)
            out.append(f"{key}@ttl: {ta} != {tb}")
        if sa.type in ("hash", "zset"):
            out += _diff_mapping(key, sa.value, sb.value, ignore)
        elif sa.type == "set":
            for member in sorted(sa.value - sb.value):
                if not _ignored(f"{key}#{as_text(member)}", ignore):
                    out.append(f"{key}: member {_short(member)} only in a")
            for member in sorted(sb.value - sa.value):
                if not _ignored(f"{key}#{as_text(member)}", ignore):
                    out.append(f"{key}: member {_short(member)} only in b")
        elif sa.type == "stream":
            if len(sa.value) != len(sb.value):
                out.append(f"{key}: {len(sa.value)} entries != {len(sb.value)} entries")
            for (ida, fa), (idb, fb) in zip(sa.value, sb.value, strict=False):
                if ida != idb:
                    out.append(f"{key}: entry id {ida} != {idb}")
                out += [f"{line} (entry {ida})" for line in _diff_mapping(key, fa, fb, ignore)]
        elif sa.value != sb.value:
            out.append(f"{key} ({sa.type}): {_short(sa.value)} != {_short(sb.value)}")
    return out


def db_client(client: redis.Redis, db: int) -> redis.Redis:
    """A new client like ``client`` (same server, credentials, decoding) for database ``db``."""
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, "db": db}
    return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs))


def copy_db(client: redis.Redis, src_db: int, dst_db: int, *, chunk_size: int = 1000) -> int:
    """Make database ``dst_db`` an identical copy of ``src_db`` on the same server.

    ``FLUSHDB``s ``dst_db``, then ``COPY key key DB dst_db`` for every key (Redis >= 6.2 and
    Valkey; values and TTLs are kept).  Returns the number of keys copied.  ``client`` may be
    connected to any DB.
    """
    if src_db == dst_db:
        raise ValueError("src_db and dst_db must differ")
    src, dst = db_client(client, src_db), db_client(client, dst_db)
    try:
        dst.flushdb()
        copied = 0
        batch: list[Any] = []

        def flush() -> int:
            with src.pipeline(transaction=False) as pipe:
                for key in batch:
                    pipe.copy(key, key, destination_db=str(dst_db), replace=True)
                done = sum(1 for ok in pipe.execute() if ok)
            batch.clear()
            return done

        for key in src.scan_iter(count=chunk_size):
            batch.append(key)
            if len(batch) >= chunk_size:
                copied += flush()
        if batch:
            copied += flush()
        return copied
    finally:
        src.close()
        dst.close()
