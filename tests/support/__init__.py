"""Test helpers for rqmaint: real servers, real RQ workers, abandoned jobs, DB snapshots.

Everything here talks to real processes; nothing is mocked.  See each module for details.
"""

from .cli import CliInvoker, cli_env, process_env, rqmaint_argv, run_process
from .clone import clone_job, locate_job
from .procs import ProcStat, is_running, kill_session, read_stat, session_members
from .servers import SERVER_KINDS, ServerInfo, free_port, server_binary, start_server
from .snapshot import (
    TIMESTAMP_FIELDS,
    Approx,
    KeyState,
    copy_db,
    db_client,
    diff_snapshots,
    parse_timestamp,
    snapshot,
)
from .waiting import wait_for
from .workers import (
    REPO_ROOT,
    Abandoned,
    AgeReport,
    WorkerProcess,
    age_abandoned,
    make_abandoned,
    start_worker,
    stop_started_workers,
    worker_env,
)

__all__ = [
    "REPO_ROOT",
    "SERVER_KINDS",
    "TIMESTAMP_FIELDS",
    "Abandoned",
    "AgeReport",
    "Approx",
    "CliInvoker",
    "KeyState",
    "ProcStat",
    "ServerInfo",
    "WorkerProcess",
    "age_abandoned",
    "cli_env",
    "clone_job",
    "copy_db",
    "db_client",
    "diff_snapshots",
    "free_port",
    "is_running",
    "kill_session",
    "locate_job",
    "make_abandoned",
    "parse_timestamp",
    "process_env",
    "read_stat",
    "rqmaint_argv",
    "run_process",
    "server_binary",
    "session_members",
    "snapshot",
    "start_server",
    "start_worker",
    "stop_started_workers",
    "wait_for",
    "worker_env",
]
