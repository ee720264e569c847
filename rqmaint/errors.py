"""Typed errors and the exit codes they map to. The CLI turns these into one line on stderr."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0  # done
    ERROR = 1  # connection, authentication, timeout, Redis error
    USAGE = 2  # bad option, unknown queue, refusal without --yes
    LOCK_HELD = 3  # a queue's lock was held by another holder; that queue was skipped
    ATTENTION = 4  # done, but some items need attention (e.g. corrupt jobs skipped, poison jobs)
    INTERRUPTED = 130  # stopped by SIGINT or SIGTERM after releasing every lock it held


class RqmaintError(Exception):
    """Base class: ``str(err)`` is the one line shown to the operator (what failed, what to do)."""

    exit_code: ExitCode = ExitCode.ERROR


class ConnectionFailed(RqmaintError):
    exit_code = ExitCode.ERROR


class RedisCommandError(RqmaintError):
    exit_code = ExitCode.ERROR


class UsageError(RqmaintError):
    exit_code = ExitCode.USAGE


class UnknownQueue(UsageError):
    def __init__(self, unknown: list[str], known: list[str]) -> None:
        self.unknown = unknown
        self.known = known
        known_txt = ", ".join(known) if known else "(none: rq:queues is empty)"
        names = ", ".join(repr(q) for q in unknown)
        word = "queue" if len(unknown) == 1 else "queues"
        super().__init__(
            f"unknown {word} {names}: RQ knows {known_txt}; check the name (rqmaint status lists them)"
        )


class Refused(UsageError):
    pass


class Interrupted(RqmaintError):
    exit_code = ExitCode.INTERRUPTED

    def __init__(self, signame: str) -> None:
        super().__init__(f"stopped by {signame}; every lock this run held was released")
