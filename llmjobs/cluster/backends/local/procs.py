"""Process facts the local scheduler needs: which processes belong to a job's session, and ending them.

A job runs in its own session (its first process calls ``setsid``), so everything it starts shares the
session id, even a command that outlives the job's Python process. A job is alive while any process of its
session is; that is what keeps a second attempt from starting beside a lingering shell command.
"""

from __future__ import annotations

import os
import signal
import time


def sessions() -> dict[int, list[int]]:
    """Live (not zombie) processes by session id, from one scan of /proc."""
    out: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone between listdir and open
        if fields[0] in (b"Z", b"X"):
            continue
        out.setdefault(int(fields[3]), []).append(int(name))
    return out


def members(sid: int) -> list[int]:
    return sessions().get(sid, [])


def may_signal(sid: int) -> bool:
    """False for 0 and 1 (killpg(0) is the caller's own group; session 1 and the processes whose session lies
    outside this pid namespace hold the machine's init and its services) and for the caller's own session."""
    return sid > 1 and sid != os.getsid(0)


def signal_session(sid: int, sig: int) -> None:
    """Send ``sig`` to every process of the session (and its leader's process group, for a racing fork).

    Does nothing for an id that cannot be a job's session (``may_signal``), so a wrong id can never end the
    machine's other work."""
    if not may_signal(sid):
        return
    for pid in members(sid):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        os.killpg(sid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def end_sessions(sids: list[int], grace_s: float = 3.0) -> None:
    """SIGTERM every process of these sessions, then SIGKILL what is left after ``grace_s``."""
    for sid in sids:
        signal_session(sid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    left = list(sids)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        live = sessions()
        left = [sid for sid in left if sid in live]
    for sid in left:
        signal_session(sid, signal.SIGKILL)
