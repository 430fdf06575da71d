"""PBS Professional backend (ABCI 3.0 and other PBS clusters), on the submitit plugin in ``cluster/pbs``.

A sharded step becomes one array job (``-J 0-N``); upstream steps become ``-W depend=afterok:...``, so the
cluster runs the DAG with no llmjobs process alive. ``poll`` asks ``qstat -x -f -F json`` once for all
jobs; jobs PBS forgot are resolved from the sentinel files the job script writes.

A step's abstract resources are mapped onto the profile's resource types (on ABCI the queues ``rt_HC``,
``rt_HG``, ``rt_HF``): the first type in the profile's list that fits is used, so list them smallest first.

Profile options::

    scheduler:
      group: gaa12345            # -P, required on ABCI (or $LLMJOBS_PBS_GROUP)
      reservation: R1234         # optional: -q R1234 -v RTYPE=<type>
      queue: null                # force a queue instead of the matched type's name
      launcher: mpirun           # multi-node: mpirun | pdsh | ssh (pdsh/ssh add -v USE_SSH=1)
      launcher_args: null        # default: mpirun -npernode 1; ssh -o BatchMode=yes ...
      select_resources: false    # add :ncpus=:ngpus=:mem= to -l select (ABCI: no, the type says it)
      max_walltime: "168:00:00"
      max_array_tasks: 75000
      max_unfinished_jobs: 1000  # your queued+running jobs plus the run's steps must fit
      variables: {}              # more -v variables (one combined -v is emitted)
      python: null               # interpreter on the nodes when no container
      lost_grace_s: 600          # a job PBS forgot, with no exit sentinel, is lost after this long
      cancel_wait_s: 15          # after qdel, wait up to this long for the server to report the jobs ended
    resources:
      types:
        - {name: rt_HC, gpus: 0, cpus: 32, mem_gb: 320, max_nodes: 1}
        - {name: rt_HG, gpus: 1, cpus: 16, mem_gb: 160, max_nodes: 1}
        - {name: rt_HF, gpus: 8, cpus: 192, mem_gb: 1920, max_nodes: 128}
"""

from __future__ import annotations

import getpass
import logging
import os
import re
import shlex
import sys
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from llmjobs.cluster.backends.base import Backend, JobRef, JobStatus, StepJob, SubmittedJob
from llmjobs.cluster.container import ContainerSpec, container_env, env_prefix, python_command
from llmjobs.cluster.pbs import commands, script, tracking
from llmjobs.cluster.pbs import state as pbs_state
from llmjobs.errors import SchedulerError, UserError
from llmjobs.resources import Resources, format_walltime, parse_walltime

log = logging.getLogger("llmjobs.pbs")


class ResourceType(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, description="the queue to ask for (-q)")
    gpus: int = Field(0, ge=0, description="GPUs per node")
    cpus: int = Field(..., ge=1, description="CPU cores per node")
    mem_gb: float | None = Field(None, gt=0, description="memory per node")
    max_nodes: int = Field(1, ge=1, description="nodes one job may have")

    def fits(self, r: Resources) -> bool:
        return (r.nodes <= self.max_nodes and r.gpus_per_node <= self.gpus and r.cpus <= self.cpus
                and (r.mem_gb is None or self.mem_gb is None or r.mem_gb <= self.mem_gb))

    def describe(self) -> str:
        mem = f", {self.mem_gb:g} GB" if self.mem_gb else ""
        nodes = f", up to {self.max_nodes} nodes" if self.max_nodes > 1 else ", 1 node"
        return f"{self.name} ({self.gpus} GPU, {self.cpus} CPU{mem}{nodes})"


class PBSResources(BaseModel):
    model_config = ConfigDict(extra="forbid")

    types: list[ResourceType] = Field(default_factory=list)


class PBSOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    group: str | None = Field(None, description="-P project/group; required on ABCI")
    require_group: bool = True
    reservation: str | None = Field(None, pattern=r"^R\d+$", description="reservation queue, e.g. R1234")
    queue: str | None = None
    launcher: Literal["mpirun", "pdsh", "ssh"] = "mpirun"
    launcher_args: list[str] | None = None
    select_resources: bool = False
    max_walltime: str = "168:00:00"
    max_array_tasks: int = Field(75000, ge=1)
    max_unfinished_jobs: int | None = Field(1000, ge=1)
    variables: dict[str, str] = Field(default_factory=dict)
    modules_init: str | None = script.MODULES_INIT
    python: str | None = None
    lost_grace_s: float = Field(tracking.DEFAULT_GRACE_S, ge=0)
    cancel_wait_s: float = Field(15.0, ge=0, description="after qdel, wait this long for the jobs to end")

    @field_validator("max_walltime", mode="before")
    @classmethod
    def _walltime(cls, v: Any) -> str:
        return format_walltime(parse_walltime(v))

    @field_validator("variables", mode="before")
    @classmethod
    def _str_values(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        for key, val in v.items():
            if "," in f"{key}{val}" or "=" in str(key):
                raise ValueError(f"{key}={val!r}: PBS splits -v on commas; put such values in env instead")
        return {str(k): str(val) for k, val in v.items()}


_NAME_BAD = re.compile(r"[^A-Za-z0-9_.-]")
_PLACEHOLDER_SHARD = re.compile(r"\[\d+\]>$")


def job_name(name: str) -> str:
    """PBS job names: printable, no spaces, starting with a letter, at most 236 characters."""
    clean = _NAME_BAD.sub("_", name) or "llmjobs"
    if not clean[0].isalpha():
        clean = "j" + clean
    return clean[:236]


def depend_ids(refs: list[JobRef]) -> list[str]:
    """afterok ids: a subjob stands for its whole array (PBS takes dependencies on arrays, not subjobs)."""
    out: list[str] = []
    for ref in refs:
        job_id = pbs_state.query_id(ref.job_id)
        job_id = _PLACEHOLDER_SHARD.sub("[]>", job_id)  # --dry-run's "<step[3]>" stands for "<step[]>"
        if job_id not in out:
            out.append(job_id)
    return out


class PBSBackend(Backend):
    name = "pbs"

    def __init__(self, profile) -> None:
        super().__init__(profile)
        where = profile.source or f"profile {profile.name!r}"
        try:
            self.options = PBSOptions.model_validate(profile.scheduler or {})
            self.types = PBSResources.model_validate(profile.resources or {}).types
        except ValidationError as e:
            from llmjobs.cluster.profiles import format_validation

            raise UserError(f"{where}: invalid pbs options:\n{format_validation(e)}") from None
        self.where = where
        self._planned_jobs = 0
        self._unfinished: int | None = None
        self._unfinished_known = False  # counted once per backend (one submit), even when it failed

    # -- matching ------------------------------------------------------------------------------------

    @property
    def group(self) -> str | None:
        return self.options.group or os.environ.get("LLMJOBS_PBS_GROUP") or None

    def match(self, resources: Resources) -> ResourceType | None:
        """The first (smallest) resource type that fits; with no types listed, a plain ``select``."""
        if not self.types:
            return None
        for rtype in self.types:
            if rtype.fits(resources):
                return rtype
        return None

    def _queue_and_variables(self, rtype: ResourceType | None) -> tuple[str | None, dict[str, str]]:
        variables: dict[str, str] = {}
        queue = self.options.queue or (rtype.name if rtype else None)
        if self.options.reservation:
            if rtype is not None:
                variables["RTYPE"] = rtype.name
            queue = self.options.reservation
        variables.update(self.options.variables)
        return queue, variables

    # -- what is submitted ---------------------------------------------------------------------------

    def executor_parameters(self, resources: Resources, *, name: str, after: list[JobRef] | None = None,
                            container: ContainerSpec | None = None,
                            env: dict[str, str] | None = None) -> dict[str, Any]:
        o = self.options
        rtype = self.match(resources)
        queue, variables = self._queue_and_variables(rtype)
        params: dict[str, Any] = {
            "job_name": job_name(name),
            "project": self.group,
            "queue": queue,
            "nodes": resources.nodes,
            "walltime": format_walltime(resources.walltime_seconds),  # seconds: PBS takes them
            "variables": variables,
            "env": self._exports(container, env or {}),
            "setup": list(self.profile.setup),
            "modules_init": o.modules_init,
            "launcher": o.launcher,
            "launcher_args": o.launcher_args,
        }
        if o.select_resources or not self.types:
            params["ncpus"] = resources.cpus
            params["ngpus"] = resources.gpus_per_node or None
            params["mem_gb"] = resources.mem_gb
        if after:
            params["depend"] = depend_ids(after)
        return params

    def _exports(self, container: ContainerSpec | None, env: dict[str, str]) -> dict[str, str]:
        # as the Slurm backend: with a container, variables become SINGULARITYENV_* so the image cannot
        # shadow them; names the controller already prefixed are kept as they are
        prefix = env_prefix(container) if container is not None else None
        host_env = dict(self.profile.env)
        host_env.update({k: v for k, v in env.items() if prefix is None or not k.startswith(prefix)})
        exported = container_env(container, host_env)
        if prefix is not None:
            exported.update({k: v for k, v in env.items() if k.startswith(prefix)})
        if container is not None:
            exported.update(self.profile.env)  # the host side (setup lines, launcher) sees them too
        return {k: str(v) for k, v in exported.items()}

    def _python(self, container: ContainerSpec | None) -> str:
        if container is not None:
            return python_command(container)
        return self.options.python or shlex.quote(sys.executable)

    def batch_script(self, job: StepJob, uid: str = "<uid>") -> str:
        params = self.executor_parameters(job.resources, name=job.name, after=job.after,
                                          container=job.container, env=job.env)
        command = " ".join([self._python(job.container), "-u -m submitit.core._submit",
                            shlex.quote(str(job.folder))])
        return script.render_script(command=command, folder=job.folder, uid=uid,
                                    array_size=len(job.tasks) if len(job.tasks) > 1 else None, **params)

    def describe(self, job: StepJob) -> str:
        rtype = self.match(job.resources)
        kind = f"array of {len(job.tasks)} tasks" if len(job.tasks) > 1 else "1 job"
        shards = ",".join(str(t.shard) for t in job.tasks)
        on = f" on {rtype.name} x{job.resources.nodes}" if rtype else ""
        return (f"# step {job.step}: {kind} (shards {shards}){on}; submitted as:\n"
                f"#   qsub {job.folder}/.submission_file_<uid>.sh\n"
                f"{self.batch_script(job)}")

    # -- the interface -------------------------------------------------------------------------------

    def validate(self, step: str, resources: Resources, shards: int, *, requeues: int = 0) -> None:
        o = self.options
        if requeues:
            raise UserError(f"step {step!r}: requeues: {requeues} cannot work on PBS: the server sends no "
                            "signal before the walltime, so a shard cannot checkpoint and be requeued. "
                            "Remove requeues and let the shard checkpoint on its own; `llmjobs resume` "
                            "reruns a timed-out shard, which resumes from its checkpoint")
        if o.require_group and not self.group:
            raise UserError(f"{self.where}: scheduler.group is not set: every PBS job on this cluster needs "
                            "-P <group>; set scheduler.group to your group (e.g. gaa12345) or export "
                            "LLMJOBS_PBS_GROUP")
        if self.types and self.match(resources) is None:
            asked = (f"{resources.nodes} node(s) x {resources.gpus_per_node} GPU(s), {resources.cpus} CPU(s)"
                     + (f", {resources.mem_gb:g} GB" if resources.mem_gb else "") + " per node")
            offered = "; ".join(t.describe() for t in self.types)
            multi = [t.name for t in self.types if t.max_nodes > 1]
            hint = (f" Only {', '.join(multi)} can span several nodes." if resources.nodes > 1 and multi else "")
            raise UserError(f"step {step!r}: no resource type of {self.where} fits {asked}. "
                            f"Available: {offered}.{hint}")
        limit = parse_walltime(o.max_walltime)
        if resources.walltime_seconds > limit:
            raise UserError(f"step {step!r}: walltime {resources.walltime} is over this cluster's limit of "
                            f"{o.max_walltime}; shorten it (long steps should checkpoint and be resumed)")
        if shards > o.max_array_tasks:
            raise UserError(f"step {step!r}: {shards} shards, but an array job may have at most "
                            f"{o.max_array_tasks} tasks here; use fewer shards")
        if o.max_unfinished_jobs is not None:
            self._planned_jobs += 1  # one job per step: its shards are one array
            current = self._unfinished_jobs()
            if current is not None and current + self._planned_jobs > o.max_unfinished_jobs:
                raise UserError(f"step {step!r}: you have {current} unfinished PBS jobs and this run adds "
                                f"{self._planned_jobs}; the limit is {o.max_unfinished_jobs} per user. Wait "
                                "for some to finish or cancel them")

    def _unfinished_jobs(self) -> int | None:
        """The user's queued/running jobs (an array counts once); None if qstat cannot tell."""
        if not self._unfinished_known:
            self._unfinished_known = True
            try:
                self._unfinished = commands.count_unfinished(getpass.getuser())
            except Exception as e:  # noqa: BLE001 - a check that cannot run must not block the submission
                log.warning("could not count unfinished PBS jobs (%s); limit not checked", e)
        return self._unfinished

    def submit(self, job: StepJob) -> list[SubmittedJob]:
        if not job.tasks:
            return []
        from submitit.core.utils import FailedSubmissionError

        from llmjobs.cluster.pbs.executor import PBSExecutor
        from llmjobs.jobs.runner import run_shard

        params = self.executor_parameters(job.resources, name=job.name, after=job.after,
                                          container=job.container, env=job.env)
        # PBS sends no warning signal before the walltime and users cannot requeue: no submitit requeue
        executor = PBSExecutor(folder=job.folder, python=self._python(job.container), max_num_timeout=0)
        executor.update_parameters(**params)
        try:
            jobs = executor.map_array(run_shard, job.tasks)
        except FailedSubmissionError as e:
            raise SchedulerError(f"step {job.step!r} was not queued: {e}") from None
        return [SubmittedJob(job_id=j.job_id, folder=str(job.folder), stdout=str(j.paths.stdout),
                             stderr=str(j.paths.stderr)) for j in jobs]

    def poll(self, jobs: list[JobRef]) -> dict[str, JobStatus]:
        keys = [tracking.JobKey(ref.job_id, ref.folder) for ref in jobs]
        return tracking.poll(keys, grace_s=self.options.lost_grace_s)

    def cancel(self, jobs: list[JobRef]) -> dict[str, JobStatus]:
        """qdel in the groups a buggy server survives (``commands.qdel_groups``: whole arrays by their array
        id, one per call), then what the server says of the jobs: never assume they are gone.

        Arrays are deleted whole: the controller cancels a step's live shards together, and they are one
        array. A running job ends some seconds after its SIGTERM (the queue's ``kill_delay``), so the
        states are polled until none is queued or running, for up to ``cancel_wait_s``.
        """
        if not jobs:
            return {}
        failed: list[str] = []
        groups = commands.qdel_groups([ref.job_id for ref in jobs])
        for group in groups:
            try:
                commands.qdel(group)
            except Exception as e:  # noqa: BLE001 - the other groups are still deleted
                failed.append(f"{' '.join(group)} ({e})")
        # nothing deleted (every call failed): one look, no wait for ends that will not come
        statuses = self.wait_ended(jobs, self.options.cancel_wait_s if len(failed) < len(groups) else 0, "qdel")
        if failed:
            raise SchedulerError(f"qdel failed for {'; '.join(failed)}; those jobs may still be queued or "
                                 "running: check with `llmjobs status` and cancel again")
        return statuses
