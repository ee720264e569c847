"""Linux process helpers: identify processes by (pid, start time), list a session, kill it.

Reading ``/proc`` keeps this independent of ``ps`` and of who reaps orphans: an RQ work horse
whose worker was SIGKILLed is re-parented to PID 1, which reaps it whenever it likes, so a dead
horse may linger as a zombie.  A zombie counts as gone here (it runs no code, holds no lock).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .waiting import wait_for


@dataclass(frozen=True)
class ProcStat:
    """The fields of ``/proc/<pid>/stat`` the tests need."""

    pid: int
    state: str
    ppid: int
    pgid: int
    sid: int
    start_time: int  # clock ticks since boot: with pid, identifies a process even after pid reuse


def read_stat(pid: int) -> ProcStat | None:
    """Return the stat of ``pid``, or None if no such process exists."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name is in parentheses and may contain spaces or ')': split on the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return ProcStat(
        pid=pid,
        state=fields[0],
        ppid=int(fields[1]),
        pgid=int(fields[2]),
        sid=int(fields[3]),
        start_time=int(fields[19]),
    )


def is_running(pid: int, start_time: int | None = None) -> bool:
    """True if ``pid`` exists and is not a zombie (and, if given, still has ``start_time``)."""
    stat = read_stat(pid)
    if stat is None or stat.state in ("Z", "X", "x"):
        return False
    return start_time is None or stat.start_time == start_time


def session_members(sid: int) -> list[ProcStat]:
    """Every live (non-zombie) process whose session id is ``sid``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = read_stat(int(entry))
        if stat is not None and stat.sid == sid and stat.state not in ("Z", "X", "x"):
            members.append(stat)
    return members


def _session_and_descendants(sid: int) -> list[ProcStat]:
    """Live members of session ``sid`` plus their live descendants in other sessions (RQ 1.16's work
    horse calls ``os.setsid()``: it leaves the worker's session but stays its child)."""
    live: dict[int, ProcStat] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = read_stat(int(entry))
            if stat is not None and stat.state not in ("Z", "X", "x"):
                live[stat.pid] = stat
    found = {pid: s for pid, s in live.items() if s.sid == sid}
    grew = True
    while grew:
        grew = False
        for pid, s in live.items():
            if pid not in found and s.ppid in found:
                found[pid] = s
                grew = True
    return list(found.values())


def kill_session(leader: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float = 10.0) -> list[int]:
    """SIGKILL every process of the session led by ``leader`` and reap the leader.

    Models a Kubernetes pod's death: the leader (an ``rq worker`` started with
    ``start_new_session=True``) and everything in its session, including RQ's work horse, which
    puts itself into a process group of its own (``os.setpgrp()`` in ``fork_work_horse``), so
    killing the leader's process group alone would leave the horse running.  The leader's group
    is killed first, so the worker never sees its horse die (no "Work-horse terminated
    unexpectedly" handling).  Descendants that left the session are killed too (RQ 1.16's horse
    calls ``os.setsid()``).  Returns the pids that were killed; waits until none runs.
    """
    sid = leader.pid
    members = _session_and_descendants(sid)
    groups = [sid, *sorted({m.pgid for m in members} - {sid})]
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    # Anything forked between the listing and the kill (there should be nothing).
    for m in _session_and_descendants(sid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(m.pid, signal.SIGKILL)
    leader.wait(timeout=timeout)
    wait_for(
        lambda: not any(is_running(m.pid, m.start_time) for m in members) and not session_members(sid),
        timeout=timeout,
        what=f"every process of session {sid} to die",
    )
    return [m.pid for m in members]
