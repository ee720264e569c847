"""The retry policy of a run: a command whose connection dropped or timed out is reconnected and
re-sent with exponential backoff and jitter for at most ``RQMAINT_RETRY_BUDGET`` seconds; credentials,
permissions, certificates and interrupted MULTI/EXEC transactions are never retried."""

from __future__ import annotations

import os
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

import redis
import redis.client
from redis.backoff import NoBackoff
from redis.exceptions import AskError
from redis.retry import Retry

from rqmaint.connection.errors import wrong_node
from rqmaint.errors import UsageError

RETRY_BUDGET_ENV = "RQMAINT_RETRY_BUDGET"
DEFAULT_RETRY_BUDGET = 30.0  # seconds a command keeps retrying after its connection dropped
BACKOFF_BASE = 0.1  # seconds: the n-th retry waits random(0, 1) * BASE * 2**n, capped at CAP
BACKOFF_CAP = 2.0

T = TypeVar("T")


class RetryBudgetExhausted(redis.ConnectionError):
    """A dropped or timed-out connection still failed when the retry budget ran out."""


class TransactionInterrupted(redis.ConnectionError):
    """The connection dropped while a MULTI/EXEC transaction was in flight: not re-sent."""


_nesting = threading.local()


def _depth() -> int:
    return int(getattr(_nesting, "depth", 0))


def ssl_error(error: BaseException) -> ssl.SSLError | None:
    """The ssl.SSLError that caused ``error`` (redis-py wraps it in a ConnectionError), if any."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def retryable(error: BaseException) -> bool:
    """Worth retrying: a dropped, refused or timed-out connection, a server still loading. Never a
    refused credential, a missing permission, an untrusted certificate, or an interrupted transaction."""
    if isinstance(
        error, (redis.AuthenticationError, redis.exceptions.AuthorizationError, TransactionInterrupted)
    ):
        return False
    return not isinstance(ssl_error(error), ssl.SSLCertVerificationError)


class BudgetRetry(Retry):
    """redis-py's retry policy, bounded in time instead of in attempts.

    After a failure the operation is retried with exponential backoff and full jitter
    (``random() * base * 2**n``, capped at ``cap`` seconds) until ``budget`` seconds have passed since
    its first failure; then :class:`RetryBudgetExhausted` is raised. Once that happened, later failures
    raise it at once until a command succeeds again, so the clean-up that follows a lost connection
    (releasing the lock) does not wait out another budget. Only the outermost retrying call of a thread
    retries: redis-py nests a retrying socket connect inside a retrying command, which would otherwise
    multiply the attempts (and the time).
    """

    def __init__(self, budget: float, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> None:
        # ``retries`` is only informative for redis-py (metrics); the budget is what bounds retrying.
        nominal = max(1, int(budget / max(cap / 2, 0.001)) + 3)
        super().__init__(NoBackoff(), nominal, (redis.ConnectionError, redis.TimeoutError, socket.timeout))
        self.budget = float(budget)
        self.base = float(base)
        self.cap = float(cap)
        self.exhausted: str | None = None  # the message of the last exhaustion, until a success

    def __deepcopy__(self, memo: dict[int, Any]) -> BudgetRetry:
        return BudgetRetry(self.budget, self.base, self.cap)

    def delay(self, failures: int) -> float:
        return float(min(self.cap, random.random() * self.base * 2**failures))

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        nested = _depth() > 0
        _nesting.depth = _depth() + 1
        try:
            failures = 0
            first_failure = 0.0
            while True:
                try:
                    result = do()
                    if not nested:
                        self.exhausted = None
                    return result
                except self._supported_errors as error:
                    failures += 1
                    if with_failure_count:
                        fail(error, failures)
                    else:
                        fail(error)
                    if nested or not retryable(error) or (is_retryable and not is_retryable(error)):
                        raise
                    if self.budget <= 0:
                        raise
                    if self.exhausted is not None:
                        raise RetryBudgetExhausted(self.exhausted) from error
                    now = time.monotonic()
                    if failures == 1:
                        first_failure = now
                    wait = self.delay(failures)
                    if now + wait - first_failure > self.budget:
                        self.exhausted = (
                            f"the connection was lost and not restored within the retry budget "
                            f"({failures} attempts over {now - first_failure:.1f}s; budget {self.budget:g}s, "
                            f"env {RETRY_BUDGET_ENV}); last error: {error}"
                        )
                        raise RetryBudgetExhausted(self.exhausted) from error
                    time.sleep(wait)
        finally:
            _nesting.depth = _depth() - 1


NO_RETRY = Retry(NoBackoff(), 0)


class _Pipeline(redis.client.Pipeline):
    """A pipeline whose MULTI/EXEC transaction is sent at most once.

    redis-py re-sends a whole transaction after a dropped connection. A transaction that reached the
    server may have been applied (only its reply was lost), and re-sending it applies it twice (e.g. an
    RPUSH of RQ's retry path). So the connection is established first (that part is retried), and a
    failure after the transaction was sent raises :class:`TransactionInterrupted` instead.
    """

    _rqmaint_sent = False

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        self._rqmaint_sent = False
        try:
            return super().execute(raise_on_error)
        except AskError as exc:  # MOVED or ASK: a single-node URL of a cluster node
            raise wrong_node(exc) from exc

    def _execute_transaction(self, connection: Any, commands: Any, raise_on_error: Any) -> list[Any]:
        if self._rqmaint_sent:
            raise TransactionInterrupted(
                "the connection dropped while a MULTI/EXEC transaction was in flight; it was not re-sent "
                "because it may already have been applied: run the command again (rqmaint re-checks "
                "the state) and check the result"
            )
        connection.connect()
        self._rqmaint_sent = True
        return super()._execute_transaction(connection, commands, raise_on_error)


class RqmaintRedis(redis.Redis):
    """redis.Redis whose pipelines never re-send a transaction (see :class:`_Pipeline`), and which says
    what to do when its server is a cluster node that redirects (``MOVED``) instead of answering."""

    def execute_command(self, *args: Any, **options: Any) -> Any:
        try:
            return cast(Any, super()).execute_command(*args, **options)
        except AskError as exc:
            raise wrong_node(exc) from exc

    def set_retry(self, retry: Retry) -> None:
        super().set_retry(retry)
        retry_checkouts(self.connection_pool, retry)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> redis.client.Pipeline:
        return _Pipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)


def _ignore(_error: BaseException) -> None:
    """A failed checkout has already cleaned up after itself (redis-py releases the connection)."""


def retry_checkouts(pool: Any, retry: Retry) -> None:
    """Make ``pool.get_connection`` retry under ``retry``. redis-py checks a connection out (connect,
    handshake, the ``can_read`` probe of a pooled connection) *outside* its command retry, so a
    connection dropped at that moment failed the command at once, whatever the budget. Nothing has
    been sent to Redis yet when a checkout fails, so retrying it is always safe."""
    original = getattr(pool, "_rqmaint_checkout", None) or pool.get_connection
    pool._rqmaint_checkout = original

    def get_connection(*args: Any, **kwargs: Any) -> Any:
        return retry.call_with_retry(lambda: original(*args, **kwargs), _ignore)

    pool.get_connection = get_connection


def retry_budget(environ: Mapping[str, str] | None = None) -> float:
    """Seconds of retrying per command: ``RQMAINT_RETRY_BUDGET`` (0 disables retries), default 30."""
    env = os.environ if environ is None else environ
    raw = env.get(RETRY_BUDGET_ENV, "").strip()
    if not raw:
        return DEFAULT_RETRY_BUDGET
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise UsageError(f"{RETRY_BUDGET_ENV}={raw!r} is not a number of seconds >= 0 (0 disables retries)")
    return value
