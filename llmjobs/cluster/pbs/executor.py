"""submitit's executor for PBS Professional: ``submitit.AutoExecutor(folder, cluster="pbs")``.

Shaped like submitit's Slurm backend: a watcher that asks PBS once for all registered jobs, a Job whose id
is PBS's id as printed (``1234.pbs1``, subjobs ``1234[3].pbs1``), and an executor that renders the script
(``script.render_script``) and submits it with qsub (retried on transient errors). Several submissions in
one ``executor.batch()`` / ``map_array`` become one array job (``-J 0-N``).
"""

from __future__ import annotations

import functools
import inspect
import shlex
import sys
import time
import typing as tp
import uuid
from pathlib import Path

from submitit.core import core, utils

from llmjobs.cluster.backends.base import JobStatus
from llmjobs.cluster.pbs import commands, script, tracking
from llmjobs.cluster.pbs import state as pbs_state
from llmjobs.resources import format_walltime, parse_walltime

_UNFINISHED = {"QUEUED", "RUNNING", "UNKNOWN"}


def _info(status: JobStatus) -> dict[str, str]:
    return {"State": status.state.value.upper(), "Reason": status.reason or "",
            "ExitCode": "" if status.exit_code is None else str(status.exit_code), "NodeList": status.nodes or ""}


class PBSInfoWatcher(core.InfoWatcher):
    """One ``qstat -x -f -F json [-t]`` per update for every registered, unfinished job."""

    grace_s: float = tracking.DEFAULT_GRACE_S

    def __init__(self, delay_s: int = 60) -> None:
        super().__init__(delay_s)
        self._folders: dict[str, str] = {}

    def register_folder(self, job_id: str, folder: str | Path) -> None:
        self._folders[job_id] = str(folder)

    def update(self) -> None:
        pending = sorted(self._registered - self._finished)
        if not pending:
            return
        self._num_calls += 1
        # a job registered without a folder (an id typed in) has no sentinels: only qstat speaks for it
        keys = [tracking.JobKey(j, self._folders.get(j)) for j in pending]
        for job_id, status in tracking.poll(keys, grace_s=self.grace_s).items():
            self._info_dict[job_id] = _info(status)
        self._last_status_check = time.time()
        for job_id in pending:
            if self.is_done(job_id, mode="cache"):
                self._finished.add(job_id)

    def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
        """States from the text of ``qstat -x -f -F json`` (what ``update`` reads, for tools and tests)."""
        if not isinstance(string, str):
            string = string.decode()
        return {job_id: _info(pbs_state.classify(attrs))
                for job_id, attrs in pbs_state.jobs_from_qstat(string).items()}

    def get_state(self, job_id: str, mode: str = "standard") -> str:
        info = self.get_info(job_id, mode=mode)
        return info.get("State") or "UNKNOWN"

    def is_done(self, job_id: str, mode: str = "standard") -> bool:
        return self.get_state(job_id, mode=mode) not in _UNFINISHED


class PBSJob(core.Job[core.R]):
    _cancel_command = "qdel"
    watcher = PBSInfoWatcher(delay_s=60)

    def _register_in_watcher(self) -> None:
        super()._register_in_watcher()
        if not self._tasks[0]:
            self.watcher.register_folder(self.job_id, self._paths._folder)

    def cancel(self, check: bool = True) -> None:
        try:
            commands.qdel([self.job_id])
        except Exception:
            if check:
                raise


@functools.lru_cache
def _default_parameters() -> dict[str, tp.Any]:
    spec = inspect.getfullargspec(script.render_script)
    zipped = zip(spec.args[-len(spec.defaults):], spec.defaults)  # type: ignore[arg-type]
    return {k: v for k, v in zipped if k not in {"command", "folder", "uid", "array_size"}}


class PBSExecutor(core.PicklingExecutor):
    """PBS Professional executor.

    Parameters (``update_parameters``, or ``pbs_<name>`` through AutoExecutor) are those of
    ``script.render_script``: ``project`` (``-P``, required on ABCI), ``queue`` (``-q``, the resource type
    or a reservation ``R1234``), ``nodes``, ``ncpus``, ``ngpus``, ``mem_gb`` (added to ``select`` only when
    given), ``walltime`` (minutes or ``HH:MM:SS``), ``depend`` (job ids, afterok), ``variables`` (the one
    ``-v``), ``env`` (exported in the script), ``setup`` (shell lines), ``launcher`` (mpirun|pdsh|ssh).
    """

    job_class = PBSJob

    def __init__(self, folder: str | Path, max_num_timeout: int = 3, max_pickle_size_gb: float = 1.0,
                 python: str | None = None) -> None:
        super().__init__(folder, max_num_timeout=max_num_timeout, max_pickle_size_gb=max_pickle_size_gb)
        self.python = shlex.quote(sys.executable) if python is None else python
        self.last_script: str | None = None

    @classmethod
    def _equivalence_dict(cls) -> core.EquivalenceDict:
        return {
            "name": "job_name",
            "timeout_min": "walltime",
            "mem_gb": "mem_gb",
            "nodes": "nodes",
            "cpus_per_task": "ncpus",
            "gpus_per_node": "ngpus",
            "tasks_per_node": "tasks_per_node",
        }

    @classmethod
    def _valid_parameters(cls) -> set[str]:
        return set(_default_parameters()) | {"tasks_per_node"}

    def _internal_update_parameters(self, **kwargs: tp.Any) -> None:
        defaults = _default_parameters()
        unknown = sorted(set(kwargs) - set(defaults) - {"tasks_per_node"})
        if unknown:
            listing = "\n  - ".join(f"{k} (default: {v!r})" for k, v in sorted(defaults.items()))
            raise ValueError(f"Unavailable parameter(s): {unknown}\nValid parameters are:\n  - {listing}")
        if kwargs.pop("tasks_per_node", 1) not in (None, 1):
            raise ValueError("PBS executor runs one task per node (tasks_per_node=1); start more inside it")
        if "walltime" in kwargs:  # kept to the second: PBS takes seconds (20 s must not become a minute)
            kwargs["walltime"] = format_walltime(parse_walltime(kwargs["walltime"]))
        script.render_script(command="check", folder=self.folder, **{**self.parameters, **kwargs})
        super()._internal_update_parameters(**kwargs)

    @property
    def _submitit_command_str(self) -> str:
        return " ".join([self.python, "-u -m submitit.core._submit", shlex.quote(str(self.folder))])

    def _make_submission_file_text(self, command: str, uid: str) -> str:
        params = dict(self.parameters)
        map_count = params.pop("map_count", None)
        return script.render_script(command=command, folder=self.folder, uid=uid, array_size=map_count,
                                    **params)

    def _num_tasks(self) -> int:
        return int(self.parameters.get("nodes", 1))

    def _make_submission_command(self, submission_file_path: Path) -> list[str]:
        return ["qsub", str(submission_file_path)]

    @staticmethod
    def _get_job_id_from_submission_command(string: bytes | str) -> str:
        if not isinstance(string, str):
            string = string.decode()
        try:
            return commands.job_id_from_qsub(string)
        except commands.PBSCommandError as e:
            raise utils.FailedSubmissionError(str(e)) from None

    def _submit_command(self, command: str) -> core.Job[tp.Any]:
        # submitit's version, with qsub retried on transient errors instead of failing at once
        tmp_uuid = uuid.uuid4().hex
        folder = utils.JobPaths.get_first_id_independent_folder(self.folder)
        folder.mkdir(parents=True, exist_ok=True)
        submission_file_path = folder / f".submission_file_{tmp_uuid}.sh"
        text = self._make_submission_file_text(command, tmp_uuid)
        submission_file_path.write_text(text)
        self.last_script = text
        try:
            job_id = commands.qsub(submission_file_path)
        except commands.PBSCommandError as e:
            raise utils.FailedSubmissionError(str(e)) from None
        job: core.Job[tp.Any] = self.job_class(folder=self.folder, job_id=job_id,
                                               tasks=list(range(self._num_tasks())))
        job.paths.move_temporary_file(submission_file_path, "submission_file", keep_as_symlink=True)
        return job

    def _internal_process_submissions(
        self, delayed_submissions: list[utils.DelayedSubmission]
    ) -> list[core.Job[tp.Any]]:
        # not submitit's version for one job: it would take the walltime ("HH:MM:SS") as timeout minutes
        folder = utils.JobPaths.get_first_id_independent_folder(self.folder)
        folder.mkdir(parents=True, exist_ok=True)
        timeout_min = _minutes(self.parameters.get("walltime", 60))
        pickle_paths = []
        for d in delayed_submissions:
            pickle_path = folder / f"{uuid.uuid4().hex}.pkl"
            d.set_timeout(timeout_min, self.max_num_timeout)
            d.dump(pickle_path)
            pickle_paths.append(pickle_path)
        n = len(delayed_submissions)
        if n == 1:
            self._throttle()
            self._last_job_submitted = time.time()
            job = self._submit_command(self._submitit_command_str)
            job.paths.move_temporary_file(pickle_paths[0], "submitted_pickle")
            return [job]
        array_ex = PBSExecutor(self.folder, self.max_num_timeout, python=self.python)
        array_ex.parameters = {**self.parameters, "map_count": n}
        self._throttle()
        first = array_ex._submit_command(self._submitit_command_str)
        self.last_script = array_ex.last_script
        tasks = list(range(first.num_tasks))
        jobs: list[core.Job[tp.Any]] = [
            PBSJob(folder=self.folder, job_id=pbs_state.subjob_id(first.job_id, i), tasks=tasks) for i in range(n)
        ]
        for job, pickle_path in zip(jobs, pickle_paths):
            job.paths.move_temporary_file(pickle_path, "submitted_pickle")
        return jobs

    @classmethod
    def affinity(cls) -> int:
        import shutil

        return -1 if shutil.which("qsub") is None else 2


def _minutes(walltime: int | str) -> int:
    return max(1, -(-parse_walltime(walltime) // 60))
