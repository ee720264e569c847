"""How long-running core work reports progress, without printing: the CLI passes an object that
renders it (rich's progress on a terminal's stderr), everyone else gets :data:`NULL`."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, label: str, total: int | None) -> None:
        """A new task: ``label`` (e.g. the queue name), ``total`` items if known."""

    def advance(self, n: int = 1) -> None:
        """``n`` more items of the current task are done."""

    def finish(self) -> None:
        """The current task is over (done, stopped or failed)."""


class NullProgress:
    def start(self, label: str, total: int | None) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def finish(self) -> None:
        pass


NULL: Progress = NullProgress()
