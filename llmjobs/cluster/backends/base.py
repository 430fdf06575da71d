"""The one interface every scheduler backend implements (local, slurm, pbs).

The controller hands a backend one step at a time (a ``StepJob``: its shards, resources, container and the
scheduler job ids it must wait for) and later asks for the states of many jobs at once. Backends never
touch the registry; they translate between llmjobs and one scheduler.
"""

from __future__ import annotations

import abc
import enum
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from llmjobs.cluster.container import ContainerSpec
from llmjobs.jobs.task import ShardTask
from llmjobs.resources import Resources

if TYPE_CHECKING:
    from llmjobs.cluster.profiles import Profile

log = logging.getLogger("llmjobs.backend")


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    LOST = "lost"  # the scheduler forgot the job and it left no trace

    @property
    def live(self) -> bool:
        return self in (JobState.QUEUED, JobState.RUNNING)


@dataclass
class JobStatus:
    state: JobState
    reason: str | None = None  # e.g. "timeout", "node failure", "dependency failed", scheduler's words
    exit_code: int | None = None
    nodes: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None


@dataclass
class JobRef:
    """What the registry remembers of one submitted job, enough for any backend to find it again."""

    job_id: str
    folder: str  # submitit folder of the submission (logs, pickles, sentinels)
    marker: str | None = None  # the DONE marker the job writes when its shard succeeds


@dataclass
class SubmittedJob:
    job_id: str
    folder: str
    stdout: str
    stderr: str


@dataclass
class StepJob:
    """One step's submission: the shards to run now and what they wait for."""

    run_id: str
    step: str
    tasks: list[ShardTask]  # one per shard to run; an array job where the scheduler has them
    resources: Resources
    folder: Path  # submitit folder for this submission
    after: list[JobRef] = field(default_factory=list)  # jobs that must succeed first (afterok)
    container: ContainerSpec | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.run_id}.{self.step}"


class Backend(abc.ABC):
    name: ClassVar[str]

    def __init__(self, profile: Profile) -> None:
        self.profile = profile

    def validate(self, step: str, resources: Resources, shards: int, *, requeues: int = 0) -> None:
        """Refuse (``UserError``) what this cluster cannot run, before anything is queued."""

    @abc.abstractmethod
    def submit(self, job: StepJob) -> list[SubmittedJob]:
        """Queue the step's shards; one ``SubmittedJob`` per task, in order. Must not block on the jobs."""

    @abc.abstractmethod
    def poll(self, jobs: list[JobRef]) -> dict[str, JobStatus]:
        """States of many jobs with one scheduler query; jobs it cannot tell about are left out."""

    @abc.abstractmethod
    def cancel(self, jobs: list[JobRef]) -> dict[str, JobStatus] | None:
        """Ask the scheduler to stop these jobs; may return the states it reported afterwards. The controller
        polls after a cancel in any case and records what the scheduler says, never an assumed 'cancelled'."""

    def wait_ended(self, jobs: list[JobRef], wait_s: float, after: str) -> dict[str, JobStatus]:
        """Poll until the scheduler reports every job ended or ``wait_s`` passes (schedulers end cancelled
        jobs after their signal, not at once); returns the last states. ``after``: the command, for the log."""
        from llmjobs.errors import SchedulerError

        deadline = time.monotonic() + wait_s
        statuses: dict[str, JobStatus] = {}
        while True:
            try:
                statuses = self.poll(jobs)
            except SchedulerError as e:
                log.warning("after %s: %s", after, e)
            unsettled = [r.job_id for r in jobs if r.job_id not in statuses or statuses[r.job_id].state.live]
            if not unsettled:
                return statuses
            if time.monotonic() >= deadline:
                log.warning("after %s, %s still reports %d job(s) queued or running, or says nothing of them "
                            "(first: %s)", after, self.name, len(unsettled), unsettled[0])
                return statuses
            time.sleep(1.0)

    def describe(self, job: StepJob) -> str:
        """What ``submit`` would do, for ``--dry-run``: the batch script and command line."""
        return f"# {self.name}: {len(job.tasks)} task(s) of {job.name}\n"
