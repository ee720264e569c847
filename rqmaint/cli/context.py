"""The shared context of a command run: the options every command takes, parsed once, the output,
and the connection, opened once.

A command is a function ``def cmd(ctx: CliContext, <its own options>) -> None`` registered with
:func:`command`; the decorator appends the global options of :data:`GLOBAL_OPTIONS` to its
signature (so every command accepts them, after its own), builds the :class:`CliContext`, and runs
the body inside :func:`rqmaint.cli.output.guard` (errors -> one line and an exit code).

To add a global option: a field in :class:`GlobalOptions` and its declaration in
:data:`GLOBAL_OPTIONS` (same name); if it changes how Redis is addressed, apply it in
:meth:`CliContext.connect`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rqmaint.cli.options import DEFAULT_TIMEOUT, MAX_SECONDS, finite
from rqmaint.cli.output import Output, guard

if TYPE_CHECKING:
    import redis


@dataclass(frozen=True)
class GlobalOptions:
    url: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    json_out: bool = False
    debug: bool = False
    # Add global options here (and in GLOBAL_OPTIONS below), e.g. key_prefix: str | None = None


#: (parameter name, annotation with its typer.Option, default), in the order shown in --help.
GLOBAL_OPTIONS: list[tuple[str, Any, Any]] = [
    (
        "url",
        Annotated[
            str | None,
            typer.Option(
                "--url",
                "-u",
                metavar="URL",
                help="Redis URL (redis://, rediss://, unix://, redis+sentinel://h1:p1,h2:p2/service/db). "
                "Default: env RQ_REDIS_URL, else REDIS_URL, "
                "else redis://localhost:6379/0.",
                show_default=False,
            ),
        ],
        None,
    ),
    (
        "timeout",
        Annotated[
            float,
            typer.Option(
                "--timeout",
                metavar="SECONDS",
                help="Connect and read timeout, in seconds.",
                min=0.001,
                max=MAX_SECONDS,
                callback=finite,
            ),
        ],
        DEFAULT_TIMEOUT,
    ),
    # the global option of the RQ key prefix goes here (before --json), e.g.
    # ("key_prefix", Annotated[str | None, typer.Option("--key-prefix", ...)], None),
    (
        "json_out",
        Annotated[
            bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else there.")
        ],
        False,
    ),
    (
        "debug",
        Annotated[
            bool, typer.Option("--debug", help="Show tracebacks on errors (passwords still redacted).")
        ],
        False,
    ),
]


class CliContext:
    """What every command shares: its global options, the output, the (lazily opened) connection."""

    def __init__(self, opts: GlobalOptions) -> None:
        self.opts = opts
        self.out = Output(opts.json_out, opts.debug)
        self._client: redis.Redis | None = None

    @property
    def json(self) -> bool:
        return self.opts.json_out

    def connect(self) -> redis.Redis:
        """The connection, opened on first use (after the options were checked) and then reused."""
        if self._client is None:
            from rqmaint.connection import connect, resolve_url

            self.out.target = resolve_url(self.opts.url)
            self._client = connect(self.out.target, self.opts.timeout)
        return self._client

    def queues(self, names: list[str] | None) -> list[str]:
        """The queues to work on: ``names`` (each must exist) or every queue in rq:queues."""
        from rqmaint import queues

        return queues.resolve(self.connect(), names)


def command(
    app: typer.Typer, name: str, *, only: tuple[str, ...] | None = None
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register ``fn(ctx, **own_options)`` as command ``name`` of ``app``, with the global options
    (``only`` those named, for a command that never connects to the deployment's Redis)."""
    assert [f.name for f in fields(GlobalOptions)] == [n for n, _, _ in GLOBAL_OPTIONS], (
        "GlobalOptions and GLOBAL_OPTIONS disagree"
    )
    taken = [(n, a, d) for n, a, d in GLOBAL_OPTIONS if only is None or n in only]
    names = [n for n, _, _ in taken]

    def register(fn: Callable[..., None]) -> Callable[..., None]:
        own = list(inspect.signature(fn, eval_str=True).parameters.values())
        assert own and own[0].name == "ctx", f"{fn.__name__} must take ctx first"
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own[1:]] + [
            inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=a) for n, a, d in taken
        ]

        @functools.wraps(fn)
        def run(**kwargs: Any) -> None:
            ctx = CliContext(GlobalOptions(**{n: kwargs.pop(n) for n in names}))
            with guard(ctx.out):
                fn(ctx, **kwargs)

        setattr(run, "__signature__", inspect.Signature(params))  # noqa: B010 (typer reads it)
        run.__annotations__ = {p.name: p.annotation for p in params}
        app.command(name)(run)
        return fn

    return register
