"""Slurm backend on submitit's SlurmExecutor.

A sharded step becomes one array job; upstream steps become ``--dependency=afterok:...``, so the cluster
runs the whole DAG with no llmjobs process alive. ``poll`` asks ``sacct`` once for every job it is given.
``validate`` asks Slurm itself (``sbatch --test-only`` on the very script ``submit`` would queue), so what
is refused carries Slurm's own reason.

Profile options (``scheduler:`` in the cluster profile)::

    scheduler:
      partition: gpu          # --partition
      account: mygroup        # --account
      qos: normal             # --qos
      constraint: h100        # --constraint
      array_parallelism: 64   # at most this many array tasks run at once (--array=...%N)
      signal_delay_s: 120     # checkpoint signal this long before the walltime (kinds that requeue)
      sbatch: {mail-type: END, exclusive: true}   # any other sbatch option, verbatim
      srun_args: [--cpu-bind=none]
      python: /shared/venv/bin/python   # interpreter on the nodes when no container (default: this one)
      cancel_wait_s: 15       # after scancel, wait up to this long for sacct to report the jobs ended
"""

from __future__ import annotations

import logging
import math
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmjobs.cluster.backends.base import Backend, JobRef, JobState, JobStatus, StepJob, SubmittedJob
from llmjobs.cluster.cancel_groups import BATCH, cancel_groups
from llmjobs.cluster.container import ContainerSpec, container_env, env_prefix, python_command
from llmjobs.errors import SchedulerError, UserError
from llmjobs.resources import Resources

log = logging.getLogger("llmjobs.slurm")

SACCT_FIELDS = ("JobID", "State", "Reason", "ExitCode", "NodeList", "Start", "End")


class SlurmOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    array_parallelism: int | None = Field(None, ge=1, description="cap on concurrently running array tasks")
    signal_delay_s: int = Field(90, ge=0, description="timeout signal this long before the walltime")
    sbatch: dict[str, Any] = Field(default_factory=dict, description="extra sbatch options, verbatim")
    srun_args: list[str] = Field(default_factory=list)
    python: str | None = Field(None, description="python on the nodes when no container")
    cancel_wait_s: float = Field(15.0, ge=0, description="after scancel, wait this long for the jobs to end")


# Slurm's terminal states that are failures, and the reason the registry keeps for each
_FAILED = {
    "FAILED": None,  # reason from the exit code
    "TIMEOUT": "timeout",
    "NODE_FAIL": "node failure",
    "BOOT_FAIL": "node failure",
    "PREEMPTED": "preempted",
    "OUT_OF_MEMORY": "out of memory",
    "DEADLINE": "deadline",
}
_QUEUED = {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD", "SPECIAL_EXIT"}
_RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "STOPPED", "RESIZING", "SIGNALING",
            "STAGE_OUT", "POWER_UP_NODE", "UPDATE_DB"}
_NEVER = {"DependencyNeverSatisfied", "InvalidDependency"}  # a pending job whose dependency cannot be met


def job_status(state: str, reason: str = "", exit_code: str = "", nodes: str = "", start: str = "",
               end: str = "") -> JobStatus:
    """One sacct row as a ``JobStatus``: Slurm's state mapped, its words kept as the reason."""
    word = state.split()[0] if state.strip() else "UNKNOWN"
    reason = "" if reason in ("None", "") else reason
    node_list = None if nodes in ("", "None assigned", "(null)") else nodes
    code = _exit_code(exit_code)
    common = {"nodes": node_list, "started_at": _time(start), "ended_at": _time(end), "exit_code": code}
    if reason in _NEVER:
        return JobStatus(JobState.FAILED, reason="dependency failed", **common)
    if word == "COMPLETED":
        return JobStatus(JobState.SUCCEEDED, **common)
    if word in _FAILED:
        why = _FAILED[word] or (f"exit code {code}" if code else reason or "failed")
        return JobStatus(JobState.FAILED, reason=why, **common)
    if word == "CANCELLED":
        by = state.split(maxsplit=1)[1] if " " in state.strip() else ""
        # --kill-on-invalid-dep: Slurm, not a user ("CANCELLED by UID"), ended a job that never started;
        # its reason reads Dependency, or None when the dependency had failed before the job was queued
        if not by and node_list is None and (reason.startswith("Dependency") or not reason):
            return JobStatus(JobState.FAILED, reason="dependency failed", **common)
        return JobStatus(JobState.CANCELLED, reason=f"cancelled {by}".strip(), **common)
    if word in _QUEUED:
        return JobStatus(JobState.QUEUED, reason=reason or (word.lower() if word != "PENDING" else None),
                         **common)
    if word in _RUNNING:
        return JobStatus(JobState.RUNNING, reason=None if word == "RUNNING" else word.lower(), **common)
    return JobStatus(JobState.LOST, reason=f"slurm state {state}", **common)


def _exit_code(text: str) -> int | None:
    code, _, sig = text.partition(":")
    if not code.isdigit():
        return None
    return int(code) or (128 + int(sig) if sig.isdigit() and int(sig) else 0)


def _time(text: str) -> datetime | None:
    """sacct's times are in the local zone of the machine running it (TZ honoured): stored as UTC."""
    try:
        local = datetime.fromisoformat(text)
    except ValueError:  # "Unknown", "None"
        return None
    return local.astimezone(UTC)


def _mem(mem_gb: float) -> str:
    return f"{int(mem_gb)}G" if mem_gb == int(mem_gb) else f"{math.ceil(mem_gb * 1024)}M"


class SlurmBackend(Backend):
    name = "slurm"

    def __init__(self, profile) -> None:
        super().__init__(profile)
        try:
            self.options = SlurmOptions.model_validate(profile.scheduler or {})
        except ValidationError as e:
            from llmjobs.cluster.profiles import format_validation

            where = profile.source or f"profile {profile.name!r}"
            raise UserError(f"{where}: invalid slurm options:\n{format_validation(e, 'scheduler.')}") from None

    # -- what is submitted ---------------------------------------------------------------------------

    def sbatch_parameters(self, resources: Resources, *, name: str, shards: int = 1,
                          after: list[JobRef] | None = None, container: ContainerSpec | None = None,
                          env: dict[str, str] | None = None, requeue: bool = False) -> dict[str, Any]:
        """submitit SlurmExecutor parameters (sbatch names) for one step."""
        o = self.options
        extra: dict[str, Any] = {"requeue" if requeue else "no-requeue": True}
        extra.update(o.sbatch)
        params: dict[str, Any] = {
            "job_name": name,
            "time": max(1, math.ceil(resources.walltime_seconds / 60)),
            "nodes": resources.nodes,
            "ntasks_per_node": 1,  # one task per node: the step's ranks are its nodes
            "cpus_per_task": resources.cpus,
            "signal_delay_s": o.signal_delay_s,
            "additional_parameters": extra,
            "setup": self._setup_lines(container, env or {}),
        }
        if resources.gpus_per_node:
            params["gpus_per_node"] = resources.gpus_per_node
        if resources.mem_gb:
            params["mem"] = _mem(resources.mem_gb)
        for key in ("partition", "account", "qos", "constraint"):
            if getattr(o, key):
                params[key] = getattr(o, key)
        if o.array_parallelism:
            params["array_parallelism"] = o.array_parallelism
        if o.srun_args:
            params["srun_args"] = list(o.srun_args)
        if after:
            params["dependency"] = "afterok:" + ":".join(_dependency_ids(after))
            # a failed upstream job ends this one at once (CANCELLED, reason Dependency) instead of leaving
            # it pending forever; sacct then tells it apart from a user's cancel ("CANCELLED by UID")
            extra.setdefault("kill-on-invalid-dep", "yes")
        if shards > 1:
            params["map_count"] = shards
        return params

    def _setup_lines(self, container: ContainerSpec | None, env: dict[str, str]) -> list[str]:
        # variables travel in the batch script, so jobs see them whatever the submitting shell had;
        # with a container they become SINGULARITYENV_* so the image's own environment cannot shadow them
        # (names that already carry the prefix, as the controller passes them, are kept as they are)
        prefix = env_prefix(container) if container else None
        ready = {k: v for k, v in env.items() if prefix and k.startswith(prefix)}
        plain = {**self.profile.env, **{k: v for k, v in env.items() if k not in ready}}
        exported = {**container_env(container, plain), **ready}
        lines = list(self.profile.setup)
        lines += [f"export {k}={shlex.quote(str(v))}" for k, v in exported.items()]
        return lines

    def _python(self, container: ContainerSpec | None) -> str:
        if container is not None:
            return python_command(container)
        return self.options.python or shlex.quote(sys.executable)

    def _command(self, folder: Path | str, container: ContainerSpec | None) -> str:
        return " ".join([self._python(container), "-u -m submitit.core._submit", shlex.quote(str(folder))])

    def batch_script(self, job: StepJob) -> str:
        from submitit.slurm.slurm import _make_sbatch_string

        params = self._job_parameters(job)
        return _make_sbatch_string(command=self._command(job.folder, job.container), folder=job.folder, **params)

    def _job_parameters(self, job: StepJob) -> dict[str, Any]:
        return self.sbatch_parameters(job.resources, name=job.name, shards=len(job.tasks), after=job.after,
                                      container=job.container, env=job.env,
                                      requeue=any(t.requeues > 0 for t in job.tasks))

    def describe(self, job: StepJob) -> str:
        kind = f"array of {len(job.tasks)} tasks" if len(job.tasks) > 1 else "1 job"
        shards = ",".join(str(t.shard) for t in job.tasks)
        return (f"# step {job.step}: {kind} (shards {shards}); submitted as:\n"
                f"#   sbatch {job.folder}/<jobid>_submission.sh\n"
                f"{self.batch_script(job)}")

    # -- the interface -------------------------------------------------------------------------------

    def validate(self, step: str, resources: Resources, shards: int, *, requeues: int = 0) -> None:
        """Ask Slurm whether it would accept the step (``sbatch --test-only``), before anything is queued."""
        from submitit.slurm.slurm import _make_sbatch_string

        if shutil.which("sbatch") is None:
            raise UserError(f"step {step!r}: cluster profile {self.profile.name!r} uses Slurm, "
                            "but sbatch is not on PATH here; submit from a Slurm login node")
        params = self.sbatch_parameters(resources, name=f"validate.{step}", shards=shards)
        with tempfile.TemporaryDirectory(prefix="llmjobs-validate-") as tmp:
            script = Path(tmp) / "test.sh"
            script.write_text(_make_sbatch_string(command="true", folder=tmp, **params))
            proc = subprocess.run(["sbatch", "--test-only", str(script)], capture_output=True, text=True,
                                  timeout=60, check=False)
        if proc.returncode != 0:
            said = " ".join((proc.stderr or proc.stdout).split())
            said = re.sub(r"^(sbatch: error: |allocation failure: )", "", said)
            asked = ", ".join(f"{k}={v}" for k in ("partition", "account", "qos", "constraint")
                              if (v := params.get(k)))
            raise UserError(
                f"step {step!r}: Slurm refuses {resources.nodes} node(s) x {resources.gpus_per_node} GPU(s), "
                f"{resources.cpus} CPU(s), walltime {resources.walltime}"
                f"{', ' + asked if asked else ''}: {said}")

    def submit(self, job: StepJob) -> list[SubmittedJob]:
        import submitit

        if not job.tasks:
            return []
        from llmjobs.jobs.runner import run_shard

        params = self._job_parameters(job)
        params.pop("map_count", None)  # submitit sets it itself when it makes the array
        executor = submitit.SlurmExecutor(folder=job.folder, python=self._python(job.container),
                                          max_num_timeout=max(t.requeues for t in job.tasks))
        executor.update_parameters(**params)
        try:
            jobs = executor.map_array(run_shard, job.tasks)
        except (subprocess.CalledProcessError, submitit.core.utils.FailedJobError,
                submitit.core.utils.FailedSubmissionError) as e:
            raise SchedulerError(f"sbatch refused step {job.step!r}: {_said(e)}") from None
        return [SubmittedJob(job_id=j.job_id, folder=str(job.folder), stdout=str(j.paths.stdout),
                             stderr=str(j.paths.stderr)) for j in jobs]

    def poll(self, jobs: list[JobRef]) -> dict[str, JobStatus]:
        if not jobs:
            return {}
        from submitit.slurm.slurm import read_job_id

        # one sacct for all: ask for each array as a whole, it answers for every task
        bases = sorted({ref.job_id.split("_")[0] for ref in jobs})
        cmd = ["sacct", "--noheader", "--parsable2", "--allocations", "--format", ",".join(SACCT_FIELDS),
               "--jobs", ",".join(bases)]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
            raise SchedulerError(f"sacct failed: {_said(e)}") from None
        rows: dict[str, JobStatus] = {}
        last_start: dict[str, datetime | None] = {}  # per array: the latest start of any of its tasks
        pending_range: set[str] = set()  # arrays that still have a "12_[3-5]" row of pending tasks
        for line in out.splitlines():
            fields = line.split("|")
            if len(fields) != len(SACCT_FIELDS) or not fields[0] or "." in fields[0]:
                continue
            status = job_status(*fields[1:])
            try:
                parts = read_job_id(fields[0])
            except ValueError:
                continue
            base = parts[0][0]
            started = status.started_at
            if base not in last_start or (started and (last_start[base] is None or started > last_start[base])):
                last_start[base] = started or last_start.get(base)
            if "[" in fields[0]:
                pending_range.add(base)
            for part in parts:  # "12_[3-5%2]" stands for tasks 3, 4 and 5
                if len(part) == 3:
                    for i in range(int(part[1]), int(part[2]) + 1):
                        rows[f"{part[0]}_{i}"] = status
                else:
                    rows["_".join(part[:2])] = status
        result = {}
        for ref in jobs:
            if ref.job_id in rows:
                result[ref.job_id] = rows[ref.job_id]
            elif _cancelled_while_pending(ref, last_start, pending_range):
                result[ref.job_id] = JobStatus(JobState.CANCELLED, reason="cancelled before it started")
        return result

    def cancel(self, jobs: list[JobRef]) -> dict[str, JobStatus]:
        """scancel whole arrays by their array job id, one per call, plain jobs batched (the rule that keeps a
        buggy PBS server alive, kept here too), then what sacct says: never assume the jobs are gone.

        The controller cancels a step's live shards together, and they are one array. Jobs end some seconds
        after their signal, so sacct is asked until none is queued or running, for up to ``cancel_wait_s``.
        """
        if not jobs:
            return {}
        failed: list[str] = []
        groups = scancel_groups([ref.job_id for ref in jobs])
        for group in groups:
            try:
                proc = subprocess.run(["scancel", *group], capture_output=True, text=True, timeout=120,
                                      check=False)
            except (subprocess.TimeoutExpired, OSError) as e:
                failed.append(f"{' '.join(group)} ({e})")
                continue
            if proc.returncode != 0 and "Invalid job id" not in proc.stderr:
                failed.append(f"{' '.join(group)} ({' '.join(proc.stderr.split())})")
        # nothing deleted (every call failed): one look, no wait for ends that will not come
        statuses = self.wait_ended(jobs, self.options.cancel_wait_s if len(failed) < len(groups) else 0, "scancel")
        if failed:
            raise SchedulerError(f"scancel failed for {'; '.join(failed)}; those jobs may still be queued or "
                                 "running: check with `llmjobs status` and cancel again")
        return statuses


def scancel_groups(job_ids: list[str], batch: int = BATCH) -> list[list[str]]:
    """The scancel calls for these jobs: an array task (``123_4``) stands for its whole array (``123``), alone
    in its call; plain jobs go together (the rule of ``llmjobs.cluster.cancel_groups``)."""
    return cancel_groups(job_ids, lambda job_id: job_id.partition("_")[0] if "_" in job_id else None, batch)


def _dependency_ids(after: list[JobRef]) -> list[str]:
    """Array tasks are waited for as their whole array (``afterok:123``, not ``afterok:123_4``).

    Slurm counts a dependency on an array task that was cancelled while pending as met (the task no longer
    exists), so the downstream step would run without it; a dependency on the array fails instead. It
    asks no more than the tasks: an array job is one submission of shards that were all still to do, and
    the ones already finished have finished well or are waited for anyway.
    """
    ids: list[str] = []
    for ref in after:
        base, _, index = ref.job_id.partition("_")
        job = base if index.isdigit() else ref.job_id
        job = re.sub(r"^<(.+)\[\d+\]>$", r"<\1>", job)  # --dry-run's placeholder for a shard's job
        if job not in ids:
            ids.append(job)
    return ids


# a task that starts gets its own accounting row within moments; until then it may be in no row at all
_SPLIT_GRACE_S = 60


def _cancelled_while_pending(ref: JobRef, last_start: dict[str, datetime | None], pending_range: set[str]) -> bool:
    """An array task that Slurm dropped before it started (``scancel 12_4`` while pending) leaves no sacct
    row: its array answers, no pending range holds it, it never opened its log, and no task of its array
    started recently (a task being started can be missing for a moment)."""
    from submitit.core.utils import JobPaths

    base, _, index = ref.job_id.partition("_")
    if not index.isdigit() or base not in last_start or base in pending_range:
        return False
    if ref.folder and JobPaths(ref.folder, job_id=ref.job_id, task_id=0).stdout.exists():
        return False
    latest = last_start[base]
    return latest is None or (datetime.now(UTC) - latest).total_seconds() > _SPLIT_GRACE_S


def _said(e: BaseException) -> str:
    for attr in ("stderr", "output"):
        value = getattr(e, attr, None)
        if value:
            return " ".join((value.decode() if isinstance(value, bytes) else str(value)).split())
    return str(e)
