"""Progress on a terminal: rich's progress bars on stderr (counts and rate), only when stderr is a
terminal and the run is not ``--json``; everything else gets :data:`rqmaint.progress.NULL`.

:class:`TerminalProgress` implements :class:`rqmaint.progress.Progress` (``start``/``advance``/
``finish``, what the core may call), plus one overall task over the queues of the run.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any

from rqmaint.progress import NULL, Progress

#: A status over fewer queues than this is over before a bar would help.
STATUS_MIN_QUEUES = 20


class TerminalProgress:
    def __init__(self, unit: str) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            ProgressColumn,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.progress import Progress as RichProgress
        from rich.text import Text

        class Rate(ProgressColumn):
            def render(self, task: Any) -> Text:
                speed = task.finished_speed or task.speed
                return Text(f"{speed:,.0f} {task.fields.get('unit', '')}/s" if speed else "", style="dim")

        self.unit = unit
        self._bars = RichProgress(
            SpinnerColumn(),
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            Rate(),
            TimeElapsedColumn(),
            console=Console(stderr=True, highlight=False),
            transient=True,
        )
        self._overall: Any = None
        self._task: Any = None

    # -- the run over its queues ---------------------------------------------------------------------

    def __enter__(self) -> TerminalProgress:
        self._bars.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._bars.stop()

    def queues(self, total: int, label: str) -> None:
        self._overall = self._bars.add_task(label, total=total, unit="queues")

    def queue_done(self) -> None:
        if self._overall is not None:
            self._bars.advance(self._overall)

    def note(self, text: str) -> None:
        """A log line (stderr), printed above the bars."""
        self._bars.console.print(text, markup=False, highlight=False)

    # -- rqmaint.progress.Progress ---------------------------------------------------------------------

    def start(self, label: str, total: int | None) -> None:
        self.finish()
        self._task = self._bars.add_task(label, total=total, unit=self.unit)

    def advance(self, n: int = 1) -> None:
        if self._task is not None:
            self._bars.advance(self._task, n)

    def finish(self) -> None:
        if self._task is not None:
            self._bars.remove_task(self._task)
            self._task = None


class NoProgress:
    """Off a terminal or with --json: nothing at all."""

    def __enter__(self) -> NoProgress:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        pass

    def queues(self, total: int, label: str) -> None:
        pass

    def queue_done(self) -> None:
        pass

    def note(self, text: str) -> None:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def start(self, label: str, total: int | None) -> None:
        NULL.start(label, total)

    def advance(self, n: int = 1) -> None:
        pass

    def finish(self) -> None:
        pass


def for_run(json_mode: bool, unit: str) -> TerminalProgress | NoProgress:
    """Bars when stderr is a terminal and stdout is not JSON; else nothing."""
    if json_mode or not sys.stderr.isatty():
        return NoProgress()
    return TerminalProgress(unit)


def _check_protocol(p: TerminalProgress | NoProgress) -> Progress:
    return p  # mypy: both implement rqmaint.progress.Progress
