"""How a table is laid out: on a terminal a rich table fitted to its width, off one tab-separated lines.

On a terminal, key columns (queue names, job ids) are never cut nor shortened; columns that are 0 in
every row fold away; when the table is still too wide, the least important columns are dropped
first (a line under the table names what was left out); long values from Redis are shortened
(whole in ``--json``); durations read ``1m 30s``; a problem cell is red and marked ``!`` (the mark
survives ``NO_COLOR``). Every cell is plain text: nothing from Redis is read as rich markup.

Off a terminal, every column and every value is printed whole, with ``\\``, tab, newline and other
control characters escaped (``\\t``, ``\\n``, ``\\x1b``), so one row stays one line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

KEY = "key"  # a queue name or a job id: never cut, never dropped
COUNT = "count"  # an int: right-aligned, folds away when 0 in every row
DURATION = "duration"  # seconds: shown as 1m 30s; folds away when none in every row
TEXT = "text"  # anything else: shortened past max_len

MARK = "!"
SHORT = "…"
#: Box-drawing overhead of a rich table: one space each side of a cell, one rule between cells.
PER_COLUMN = 3
#: A shortened text column keeps at least this many characters before it is dropped.
MIN_TEXT = 12

_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")
_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


@dataclass(frozen=True)
class Col:
    name: str
    kind: str = TEXT
    #: lower is dropped first when the terminal is too narrow; KEY columns are never dropped
    priority: int = 5
    #: TEXT: longer values are shortened on a terminal (never in --json nor off a terminal)
    max_len: int = 48


@dataclass(frozen=True)
class Alert:
    """A cell that shows a problem: red on a terminal, with a mark that survives NO_COLOR."""

    value: object


def escape(text: str, backslash: bool = True) -> str:
    """``text`` on one line: control characters escaped (``\\n``, ``\\t``, ``\\x1b``), and backslashes
    too unless ``backslash`` is False (then it reads well, but cannot be unescaped exactly)."""
    return _CONTROL.sub(
        lambda m: (
            m.group()
            if m.group() == "\\" and not backslash
            else _ESCAPES.get(m.group(), f"\\x{ord(m.group()):02x}")
        ),
        text,
    )


def duration(seconds: float | None) -> str:
    """``42s``, ``1.5s``, ``1m 30s``, ``2h 5m``, ``3d 4h``: the same everywhere a person reads one."""
    if seconds is None:
        return "-"
    if seconds < 10 and seconds != int(seconds):
        return f"{seconds:.1f}s"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s" if s % 60 else f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m" if s % 3600 // 60 else f"{s // 3600}h"
    return f"{s // 86400}d {s % 86400 // 3600}h" if s % 86400 // 3600 else f"{s // 86400}d"


def shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[: max(1, limit - 12)]}{SHORT} ({len(text)} chars)"


def columns_of(columns: Sequence[str | Col], rows: Sequence[Sequence[object]]) -> list[Col]:
    """Plain names get a kind from their data: the first column is the key, numbers are counts."""
    out = []
    for i, c in enumerate(columns):
        if isinstance(c, Col):
            out.append(c)
        elif i == 0:
            out.append(Col(c, KEY))
        elif rows and all(isinstance(_plain(r[i]), int) and not isinstance(_plain(r[i]), bool) for r in rows):
            out.append(Col(c, COUNT))
        else:
            out.append(Col(c))
    return out


def _plain(v: object) -> object:
    return v.value if isinstance(v, Alert) else v


def _raw(v: object) -> str:
    """A value as a program reads it (tab-separated lines)."""
    v = _plain(v)
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.1f}"
    return escape(str(v))


def _shown(col: Col, v: object) -> str:
    """A value as a person reads it (terminal)."""
    alert = isinstance(v, Alert)
    v = _plain(v)
    if v is None:
        text = "-"
    elif col.kind == DURATION and isinstance(v, (int, float)):
        text = duration(float(v))
    elif isinstance(v, float):
        text = f"{v:.1f}"
    else:
        text = escape(str(v))
        if col.kind == TEXT:
            text = shorten(text, col.max_len)
    return f"{MARK} {text}" if alert else text


def tsv(columns: Sequence[str | Col], rows: Sequence[Sequence[object]]) -> str:
    names = [c.name if isinstance(c, Col) else c for c in columns]
    return "\n".join(["\t".join(names)] + ["\t".join(_raw(v) for v in r) for r in rows]) + "\n"


@dataclass
class Layout:
    shown: list[int]  # indexes of the columns drawn, in order
    zero: list[str]  # folded away: 0 (a count) or none (a duration) in every row
    dropped: list[str]  # left out for the width
    cells: list[list[str]]  # every row, every column (shown or not), as displayed
    widths: list[int]  # the width each column needs whole


def _header(name: str) -> str:
    return name.replace("_", " ")


def layout(cols: list[Col], rows: Sequence[Sequence[object]], width: int) -> Layout:
    cells = [[_shown(c, r[i]) for i, c in enumerate(cols)] for r in rows]
    need = [
        max([len(_header(c.name))] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)
    ]  # whole, header on one line
    least = [
        max([max(map(len, _header(c.name).split()))] + [len(row[i]) for row in cells])
        if c.kind != TEXT
        else min(need[i], MIN_TEXT)
        for i, c in enumerate(cols)
    ]  # header words wrapped, text shortened further
    zero = [
        i
        for i, c in enumerate(cols)
        if rows
        and not any(isinstance(r[i], Alert) for r in rows)
        and (
            (c.kind == COUNT and all(_plain(r[i]) == 0 for r in rows))
            or (c.kind == DURATION and all(r[i] is None for r in rows))
        )
    ]
    shown = [i for i in range(len(cols)) if i not in zero]

    def total(idx: list[int]) -> int:
        return sum(least[i] for i in idx) + PER_COLUMN * len(idx) + 1

    dropped: list[int] = []

    def rank(i: int) -> tuple[int, int, int]:  # a column showing a problem goes last
        return (any(isinstance(r[i], Alert) for r in rows), cols[i].priority, -i)

    by_priority = sorted((i for i in shown if cols[i].kind != KEY), key=rank)
    for i in by_priority:
        if total(shown) <= width:
            break
        shown.remove(i)
        dropped.append(i)
    return Layout(shown, [cols[i].name for i in zero], [cols[i].name for i in sorted(dropped)], cells, need)


def renderable(
    title: str | None,
    columns: Sequence[str | Col],
    rows: Sequence[Sequence[object]],
    width: int,
    empty: str | None = None,
) -> Any:
    """The rich renderable of a table fitted to ``width`` columns (with its notes under it)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    cols = columns_of(columns, rows)
    if not rows and empty is not None:
        parts: list[Any] = [Text(title, style="bold")] if title else []
        return Group(*parts, Text(empty))
    lay = layout(cols, rows, width)
    table = Table()  # the title goes above it, unwrapped: a narrow table would fold it
    for i in lay.shown:
        c = cols[i]
        fixed = c.kind != TEXT
        table.add_column(
            Text(_header(c.name)),
            justify="right" if c.kind in (COUNT, DURATION) else "left",
            # a key that fits is never wrapped; one wider than the terminal folds (never cut)
            no_wrap=c.kind in (COUNT, DURATION)
            or (c.kind == KEY and lay.widths[i] + PER_COLUMN + 1 <= width),
            overflow="fold",
            min_width=min(lay.widths[i], width - PER_COLUMN - 1) if fixed else None,
        )
    for r, row in zip(rows, lay.cells, strict=True):
        table.add_row(*(Text(row[i], style="bold red" if isinstance(r[i], Alert) else "") for i in lay.shown))
    notes = []
    if lay.zero:
        notes.append(f"0 or none in every row: {', '.join(lay.zero)}")
    if lay.dropped:
        notes.append(f"not shown at {width} columns: {', '.join(lay.dropped)} (--json has every field)")
    head = [Text(title, style="italic")] if title else []
    return Group(*head, table, *(Text(n, style="dim") for n in notes))
