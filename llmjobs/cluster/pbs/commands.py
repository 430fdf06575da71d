"""qsub, qstat and qdel, with the retries a busy PBS server needs, and the one-query poll of many jobs.

A failed qstat is never a job failure: after its retries it yields "no information this time", and the
jobs keep their last known state. qsub is retried only on errors that say the request did not reach the
server (connection refused, cannot connect, server busy); not on a timeout or a dropped connection, after
which the job may already be queued and a retry could queue it twice.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmjobs.cluster.cancel_groups import BATCH, cancel_groups
from llmjobs.cluster.pbs import state as pbs_state

log = logging.getLogger("llmjobs.pbs")

# qstat exit codes that still carry a valid answer: 153 unknown id (the others are in stdout),
# 35 finished job asked without -x
QSTAT_OK_CODES = frozenset({0, 153, 35})

TRANSIENT_QSUB = re.compile(
    r"cannot connect|connection refused|could not connect|no route to host|server busy|try again"
    r"|resource temporarily unavailable",
    re.IGNORECASE,
)


class PBSCommandError(RuntimeError):
    def __init__(self, argv: Sequence[str], code: int, stdout: str, stderr: str) -> None:
        msg = " ".join((stderr or stdout).split()) or f"exit code {code}"
        super().__init__(msg if msg.startswith(f"{argv[0]}:") else f"{argv[0]}: {msg}")
        self.argv, self.code, self.stdout, self.stderr = list(argv), code, stdout, stderr


@dataclass
class Retry:
    """How often and how patiently a PBS command is retried (exponential backoff)."""

    attempts: int = 4
    first_delay_s: float = 2.0
    max_delay_s: float = 30.0
    timeout_s: float = 120.0

    def delays(self) -> Iterable[float]:
        delay = self.first_delay_s
        for _ in range(self.attempts - 1):
            yield delay
            delay = min(delay * 2, self.max_delay_s)


def env_retry() -> Retry:
    """Defaults, overridable by ``LLMJOBS_PBS_RETRIES`` / ``LLMJOBS_PBS_RETRY_DELAY`` (tests make them short)."""
    r = Retry()
    if os.environ.get("LLMJOBS_PBS_RETRIES"):
        r.attempts = max(1, int(os.environ["LLMJOBS_PBS_RETRIES"]))
    if os.environ.get("LLMJOBS_PBS_RETRY_DELAY"):
        r.first_delay_s = float(os.environ["LLMJOBS_PBS_RETRY_DELAY"])
    return r


class PBSNotFound(PBSCommandError):
    """The PBS commands are not on PATH: this machine is no PBS login node. Never retried."""


def _run(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise PBSNotFound(argv, 127, "", f"{argv[0]} is not on PATH: run this on a login node of the "
                                         "PBS cluster") from None


# --- qsub ---------------------------------------------------------------------------------------------------

_QSUB_ID = re.compile(r"^\d+(?:\[\])?(?:\.\S+)?$")


def job_id_from_qsub(stdout: str) -> str:
    """The id exactly as qsub printed it (``1234.pbs1``, ``1234[].pbs1``)."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    for line in reversed(lines):
        if _QSUB_ID.match(line):
            return line
    raise PBSCommandError(["qsub"], 0, stdout, f"could not find a job id in qsub's output {stdout!r}")


def qsub(script: Path | str, args: Sequence[str] = (), retry: Retry | None = None) -> str:
    retry = retry or env_retry()
    argv = ["qsub", *args, str(script)]
    delays = iter(retry.delays())
    while True:
        try:
            proc = _run(argv, retry.timeout_s)
        except subprocess.TimeoutExpired:
            # the request may have reached the server: retrying could queue the job twice
            raise PBSCommandError(argv, -1, "", f"qsub did not answer within {retry.timeout_s:.0f}s") from None
        if proc.returncode == 0:
            return job_id_from_qsub(proc.stdout)
        err = PBSCommandError(argv, proc.returncode, proc.stdout, proc.stderr)
        delay = next(delays, None)
        if delay is None or not TRANSIENT_QSUB.search(proc.stderr + proc.stdout):
            raise err
        log.warning("qsub failed (%s); retrying in %.0fs", err, delay)
        time.sleep(delay)


# --- qdel ---------------------------------------------------------------------------------------------------

def qdel_groups(job_ids: Sequence[str], batch: int = BATCH) -> list[list[str]]:
    """The qdel calls that delete these jobs without crashing a stock OpenPBS 23.06 server: each array whole
    by its array id (``1234[].pbs1``) alone, plain jobs batched (see ``llmjobs.cluster.cancel_groups``).
    Text that is no PBS id is passed through as a plain id."""
    return cancel_groups(job_ids, _array_to_delete, batch)


def _array_to_delete(job_id: str) -> str | None:
    try:
        index = pbs_state.split_job_id(job_id)[1]
        return pbs_state.array_parent(job_id) or (job_id if index == "" else None)
    except ValueError:
        return None


def qdel(job_ids: Sequence[str], retry: Retry | None = None) -> None:
    """Delete jobs; unknown (153) or already finished (35) ids are not errors."""
    if not job_ids:
        return
    retry = retry or env_retry()
    argv = ["qdel", *job_ids]
    delays = iter(retry.delays())
    while True:
        try:
            proc = _run(argv, retry.timeout_s)
            if proc.returncode in (0, 153, 35) or "has finished" in proc.stderr:
                return
            err: Exception = PBSCommandError(argv, proc.returncode, proc.stdout, proc.stderr)
        except subprocess.TimeoutExpired as e:
            err = e
        delay = next(delays, None)
        if delay is None:
            raise err
        log.warning("qdel failed (%s); retrying in %.0fs", err, delay)
        time.sleep(delay)


# --- qstat --------------------------------------------------------------------------------------------------

@dataclass
class QstatResult:
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    unknown: set[str] = field(default_factory=set)  # ids the server said it does not know
    answered: set[str] = field(default_factory=set)  # queried ids with a usable answer; only those can vanish
    unreadable: set[str] = field(default_factory=set)  # ids whose own answer cannot be parsed even alone
    calls: int = 0


def _qstat_once(ids: Sequence[str], retry: Retry) -> tuple[int, str, str] | None:
    argv = ["qstat", "-x", "-f", "-F", "json"]
    if any("[" in i for i in ids):
        argv.append("-t")
    argv += list(ids)
    delays = iter(retry.delays())
    while True:
        try:
            proc = _run(argv, retry.timeout_s)
            if proc.returncode in QSTAT_OK_CODES:
                return proc.returncode, proc.stdout, proc.stderr
            why = (proc.stderr or proc.stdout).strip() or f"exit code {proc.returncode}"
        except PBSNotFound as e:
            log.warning("%s; states not updated", e)
            return None
        except (subprocess.TimeoutExpired, OSError) as e:
            why = str(e)
        delay = next(delays, None)
        if delay is None:
            log.warning("qstat failed (%s); states not updated this time", why)
            return None
        log.warning("qstat failed (%s); retrying in %.0fs", why, delay)
        time.sleep(delay)


def qstat(ids: Sequence[str], retry: Retry | None = None) -> QstatResult:
    """One ``qstat -x -f -F json [-t] IDS`` for all ids; one id at a time only if the answer is unreadable."""
    retry = retry or env_retry()
    ids = list(dict.fromkeys(ids))
    result = QstatResult()
    if not ids:
        return result
    answer = _qstat_once(ids, retry)
    result.calls += 1
    if answer is None:
        return result
    _, stdout, stderr = answer
    try:
        result.jobs = pbs_state.jobs_from_qstat(stdout)
        result.unknown = pbs_state.unknown_ids(stderr)
        result.answered = set(ids)
        return result
    except ValueError as e:
        log.warning("qstat printed JSON that cannot be read even after repair (%s); asking one id at a time", e)
    for job_id in ids:
        answer = _qstat_once([job_id], retry)
        result.calls += 1
        if answer is None:
            continue
        try:
            result.jobs.update(pbs_state.jobs_from_qstat(answer[1]))
        except ValueError as e:
            log.warning("qstat JSON for %s is unreadable (%s); its state is not updated", job_id, e)
            result.unreadable.add(job_id)
            continue
        result.answered.add(job_id)
        result.unknown |= pbs_state.unknown_ids(answer[2])
    return result


def count_unfinished(user: str, retry: Retry | None = None) -> int:
    """The user's jobs PBS has not finished (an array counts once): what ABCI's per-user limit counts."""
    retry = retry or env_retry()
    answer = _qstat_all(retry)
    count = 0
    for job_id, attrs in answer.items():
        owner = str(attrs.get("Job_Owner", "")).split("@", 1)[0]
        if owner != user or str(attrs.get("job_state", "")) in pbs_state.FINISHED_STATES:
            continue
        try:
            if pbs_state.array_parent(job_id) is not None:
                continue  # a subjob: its array is counted
        except ValueError:
            continue
        count += 1
    return count


def _qstat_all(retry: Retry) -> dict[str, dict[str, Any]]:
    argv = ["qstat", "-f", "-F", "json"]
    delays = iter(retry.delays())
    while True:
        try:
            proc = _run(argv, retry.timeout_s)
            if proc.returncode in QSTAT_OK_CODES:
                return pbs_state.jobs_from_qstat(proc.stdout)
            err: Exception = PBSCommandError(argv, proc.returncode, proc.stdout, proc.stderr)
        except PBSNotFound:
            raise
        except (subprocess.TimeoutExpired, OSError) as e:
            err = e
        delay = next(delays, None)
        if delay is None:
            raise err
        time.sleep(delay)
