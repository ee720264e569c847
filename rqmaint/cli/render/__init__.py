"""Every renderer of the command line: core dataclasses in, tables and lines out (a module per concern).

The commands (rqmaint/cli/<command>.py) call these after the core returned; nothing here touches
Redis. rich is imported only by what draws with it.
"""

from __future__ import annotations

from rqmaint.cli.render.common import (
    stopped,
    warn,
)
from rqmaint.cli.render.history import (
    explain_tables,
    history_table,
)
from rqmaint.cli.render.runs import (
    clean_report,
    requeue_report,
)
from rqmaint.cli.render.status import (
    lock_table,
    release_report,
    status_table,
)
from rqmaint.cli.render.watch import (
    watch_dashboard,
    watch_summary,
)

__all__ = [
    "clean_report",
    "explain_tables",
    "history_table",
    "lock_table",
    "release_report",
    "requeue_report",
    "status_table",
    "stopped",
    "warn",
    "watch_dashboard",
    "watch_summary",
]
