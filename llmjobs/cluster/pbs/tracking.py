"""States of many PBS jobs from one qstat call, and of jobs qstat forgot, from the job's own sentinel files.

The job script writes ``<folder>/<job id>_pbs_started`` when it starts and ``<folder>/<job id>_pbs_exit``
(its exit code) from a trap on EXIT/TERM. A job the server no longer knows (history purged, server
rebuilt) is resolved from them: an exit code says succeeded/failed; otherwise, once it has been missing for
the grace period, it is ``lost``. The time a job was first found missing is kept in a file next to the
sentinels, because every ``llmjobs status`` is a new process.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from submitit.core.utils import JobPaths

from llmjobs.cluster.backends.base import JobState, JobStatus
from llmjobs.cluster.pbs import commands
from llmjobs.cluster.pbs import state as pbs_state

STARTED_SUFFIX = "_pbs_started"
EXIT_SUFFIX = "_pbs_exit"
MISSING_SUFFIX = "_pbs_missing"
DEFAULT_GRACE_S = 600.0


def job_folder(folder: str | Path, job_id: str) -> Path:
    return JobPaths(folder, job_id=job_id).folder


def started_path(folder: str | Path, job_id: str) -> Path:
    return job_folder(folder, job_id) / f"{job_id}{STARTED_SUFFIX}"


def exit_path(folder: str | Path, job_id: str) -> Path:
    return job_folder(folder, job_id) / f"{job_id}{EXIT_SUFFIX}"


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _started(folder: str | Path, job_id: str) -> tuple[str | None, datetime | None, str | None]:
    started = _read(started_path(folder, job_id))
    if not started:
        return None, None, None
    parts = started.split()
    started_at = datetime.fromtimestamp(float(parts[0]), UTC) if parts and _is_number(parts[0]) else None
    return started, started_at, parts[1] if len(parts) > 1 else None


def from_exit_file(folder: str | Path, job_id: str) -> JobStatus | None:
    """Succeeded/failed from the exit code the job script wrote, if it wrote one."""
    code_text = _read(exit_path(folder, job_id))
    if code_text is None or not _is_int(code_text):
        return None
    _, started_at, host = _started(folder, job_id)
    code = int(code_text)
    ended = datetime.fromtimestamp(exit_path(folder, job_id).stat().st_mtime, UTC)
    if code == 0:
        return JobStatus(JobState.SUCCEEDED, exit_code=0, nodes=host, started_at=started_at, ended_at=ended)
    reason = f"killed by {pbs_state.signal_name(code - 128)}" if 128 < code < 160 else f"exit code {code}"
    return JobStatus(JobState.FAILED, reason=f"{reason} (from the job's exit file)", exit_code=code,
                     nodes=host, started_at=started_at, ended_at=ended)


def from_sentinels(folder: str | Path, job_id: str, grace_s: float = DEFAULT_GRACE_S,
                   now: float | None = None) -> JobStatus | None:
    """State of a job qstat does not know; None while still within the grace period."""
    now = time.time() if now is None else now
    resolved = from_exit_file(folder, job_id)
    if resolved is not None:
        return resolved
    started, started_at, host = _started(folder, job_id)
    marker = job_folder(folder, job_id) / f"{job_id}{MISSING_SUFFIX}"
    first_missing = _read(marker)
    if first_missing is None or not _is_number(first_missing):
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(f"{now}\n")
        except OSError:
            pass
        first_missing = str(now)
    if now - float(first_missing) < grace_s:
        return None
    if started:
        why = f"started on {host or 'a node'} but left no exit code and PBS no longer knows it (killed hard?)"
    else:
        why = "PBS no longer knows the job and it never started"
    return JobStatus(JobState.LOST, reason=why, nodes=host, started_at=started_at)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _is_int(text: str) -> bool:
    try:
        int(text)
        return True
    except ValueError:
        return False


@dataclass
class JobKey:
    job_id: str
    folder: str | None  # the submitit folder holding the job's sentinels; None: qstat alone decides


def poll(jobs: Sequence[JobKey], grace_s: float = DEFAULT_GRACE_S,
         retry: commands.Retry | None = None) -> dict[str, JobStatus]:
    """``{job_id: JobStatus}`` for the jobs qstat (one call) or the sentinels can tell about."""
    if not jobs:
        return {}
    by_query: dict[str, list[JobKey]] = {}
    for job in jobs:
        by_query.setdefault(pbs_state.query_id(job.job_id), []).append(job)
    answer = commands.qstat(list(by_query), retry=retry)
    out: dict[str, JobStatus] = {}
    for query, keys in by_query.items():
        for job in keys:
            attrs = answer.jobs.get(job.job_id)
            if attrs is not None:
                out[job.job_id] = pbs_state.classify(attrs)
                continue
            if not job.folder:
                continue
            if query in answer.unreadable:
                # PBS knows the job but prints it unreadably: only its own exit file can end it
                resolved = from_exit_file(job.folder, job.job_id)
                if resolved is not None:
                    out[job.job_id] = resolved
                continue
            if query not in answer.answered and query not in answer.unknown:
                continue  # no usable answer for it this time: leave its state as it was
            resolved = from_sentinels(job.folder, job.job_id, grace_s=grace_s)
            if resolved is not None:
                out[job.job_id] = resolved
    return out
