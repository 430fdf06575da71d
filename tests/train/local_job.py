"""The process of a job the local backend runs, for tests that signal it as a scheduler or a crash would.

A local job id is a row of the local queue (1, 2, ...), not a process id: the job's pid is in the pid file the
backend keeps beside the job's logs. Never signal a job id itself: ``killpg(3)`` ends whatever process group 3
is on the test machine (on a CI runner, the runner).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from llmjobs.cluster.backends.local import procs
from llmjobs.cluster.backends.local.queue import pid_path


def job_pid(attempt: dict) -> int:
    """The job's first process (its session leader, where the dispatcher sends the checkpoint signal)."""
    pid = int(pid_path(Path(attempt["stdout"]).parent, attempt["job_id"]).read_text().split()[0])
    assert pid > 1 and os.getsid(pid) == pid, f"pid {pid} of job {attempt['job_id']} leads no session of its own"
    assert os.getsid(pid) != os.getsid(0), "the job shares the test's session"
    return pid


def kill_job(attempt: dict) -> None:
    """SIGKILL every process of the job's session: the job and its trainer with it, as a node crash would."""
    procs.signal_session(job_pid(attempt), signal.SIGKILL)
