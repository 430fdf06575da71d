"""The local backend: this machine as a small scheduler, on submitit's LocalExecutor.

Each shard is a detached submitit local job (its own process group, so it survives the submitting command
and a Ctrl-C in its terminal). Before submitit's job controller starts, a gate in the same process does what
a cluster scheduler would: it waits for the jobs it depends on (``afterok``: their DONE markers), and for a
free slot among ``max_parallel`` (default: the machine's cores) held with ``flock``, taken roughly first
come, first served among the jobs whose dependencies are met, so any number of runs
share the machine without oversubscribing it. The job id is the gate's pid; liveness checks also match
the job folder in the process's command line, so a recycled pid is not mistaken for the job.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from submitit.local.local import LocalExecutor, LocalJob

from llmjobs import settings
from llmjobs.cluster.backends.base import Backend, JobRef, JobState, JobStatus, StepJob, SubmittedJob
from llmjobs.errors import UserError
from llmjobs.jobs.runner import run_shard
from llmjobs.resources import Resources

POLL_S = 0.2
DEPENDENCY_EXIT = 97  # the gate's exit code when a dependency can never be met


class LocalOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_parallel: int | None = Field(None, ge=1, description="jobs running at once; default: CPU cores")
    slots_dir: str | None = Field(None, description="where the slot locks live; default $LLMJOBS_HOME/local")
    signal_delay_s: int = Field(60, ge=1, description="checkpoint signal this long before the walltime")


class _GatedExecutor(LocalExecutor):
    """LocalExecutor whose controller process first passes the gate (deps + slot), in a new session."""

    gate: dict | None = None

    def _submit_command(self, command: str) -> LocalJob:
        env = dict(os.environ)
        env.update(
            SUBMITIT_LOCAL_NTASKS=str(self.parameters.get("tasks_per_node", 1)),
            SUBMITIT_LOCAL_COMMAND=command,
            SUBMITIT_LOCAL_TIMEOUT_S=str(int(60 * self.parameters.get("timeout_min", 60))),
            SUBMITIT_LOCAL_SIGNAL_DELAY_S=str(int(self.parameters.get("signal_delay_s", 30))),
            SUBMITIT_LOCAL_NODEID="0",
            SUBMITIT_LOCAL_JOB_NUM_NODES="1",
            SUBMITIT_STDERR_TO_STDOUT="",
            SUBMITIT_EXECUTOR="local",
            CUDA_VISIBLE_DEVICES=env.get("CUDA_VISIBLE_DEVICES", ""),
            SUBMITIT_LOCAL_WITH_SHELL="",
        )
        gate_file = Path(self.folder) / f"gate-{uuid.uuid4().hex[:12]}.json"
        gate_file.write_text(json.dumps(self.gate or {}))
        # the job must hold none of the submitter's pipes, or `$(llmjobs submit ...)` would wait for it
        with open(os.devnull, "rb") as devnull, open(gate_file.with_suffix(".log"), "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "llmjobs.cluster.backends.local", str(self.folder), str(gate_file)],
                env=env, stdin=devnull, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        return LocalJob(folder=self.folder, job_id=str(process.pid), process=process, tasks=[0])


class LocalBackend(Backend):
    name = "local"

    def __init__(self, profile) -> None:
        super().__init__(profile)
        try:
            self.options = LocalOptions.model_validate(profile.scheduler)
        except ValidationError as e:
            raise UserError(f"cluster profile {profile.name!r}, field 'scheduler': {e.errors()[0]['msg']} "
                            f"(local options: {', '.join(LocalOptions.model_fields)})") from None

    @property
    def max_parallel(self) -> int:
        return self.options.max_parallel or os.cpu_count() or 1

    @property
    def slots_dir(self) -> Path:
        return Path(self.options.slots_dir or settings.home() / "local" / "slots").expanduser()

    def validate(self, step: str, resources: Resources, shards: int, *, requeues: int = 0) -> None:
        if resources.gpus_per_node > 0:
            have = _visible_gpus()
            if resources.gpus_per_node > have:
                raise UserError(f"step {step!r} asks for {resources.gpus_per_node} GPU(s) per node; this machine "
                                f"has {have}. Use a cluster profile (--cluster) or set gpus_per_node: 0")
        if resources.nodes > 1:
            raise UserError(f"step {step!r} asks for {resources.nodes} nodes; the local backend has one. "
                            "Use a Slurm or PBS profile for multi-node steps")

    def submit(self, job: StepJob) -> list[SubmittedJob]:
        job.folder.mkdir(parents=True, exist_ok=True)
        requeues = max((t.requeues for t in job.tasks), default=0)
        executor = _GatedExecutor(folder=job.folder, max_num_timeout=requeues)
        walltime_min = max(1, job.resources.walltime_seconds // 60)
        # the checkpoint signal comes this long before the walltime: enough to save, short of half the run
        executor.update_parameters(timeout_min=walltime_min, gpus_per_node=job.resources.gpus_per_node,
                                   signal_delay_s=min(self.options.signal_delay_s, walltime_min * 30))
        deps = [{"folder": r.folder, "job_id": r.job_id, "marker": r.marker} for r in job.after]
        out = []
        for task in job.tasks:
            executor.gate = {"deps": deps, "slots": self.max_parallel, "slots_dir": str(self.slots_dir),
                             "seq": time.time_ns(),  # submission order: the slot queue is first come, first served
                             "walltime_s": job.resources.walltime_seconds, "env": job.env}
            sub = executor.submit(run_shard, task)
            out.append(SubmittedJob(job_id=sub.job_id, folder=str(job.folder),
                                    stdout=str(sub.paths.stdout), stderr=str(sub.paths.stderr)))
        return out

    def poll(self, jobs: list[JobRef]) -> dict[str, JobStatus]:
        return {ref.job_id: _status(ref) for ref in jobs}

    def cancel(self, jobs: list[JobRef]) -> None:
        for ref in jobs:
            folder = Path(ref.folder)
            (folder / f"{ref.job_id}.cancelled").touch()
            pid = int(ref.job_id)
            if _alive(pid, folder):
                _signal_group(pid, signal.SIGINT)
        deadline = time.time() + 3
        for ref in jobs:
            pid = int(ref.job_id)
            while _alive(pid, Path(ref.folder)) and time.time() < deadline:
                time.sleep(0.1)
            if _alive(pid, Path(ref.folder)):
                _signal_group(pid, signal.SIGKILL)

    def describe(self, job: StepJob) -> str:
        deps = ", ".join(r.job_id for r in job.after) or "none"
        lines = [(f"# local: {len(job.tasks)} process(es) for step {job.step!r}, at most {self.max_parallel} "
                  f"jobs at once on this machine; waits for: {deps}"),
                 f"# walltime {job.resources.walltime}, submitit folder {job.folder}"]
        for t in job.tasks:
            lines.append(f"{sys.executable} -m llmjobs.cluster.backends.local {job.folder} <gate> "
                         f"# then submitit runs llmjobs.jobs.runner.run_shard(shard={t.shard}, kind={t.kind})")
        return "\n".join(lines) + "\n"


def _visible_gpus() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip()])
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=False)
        return len([line for line in out.stdout.splitlines() if line.startswith("GPU")])
    except (OSError, subprocess.TimeoutExpired):
        return 0


# ---- process facts -----------------------------------------------------------------------------------


def _alive(pid: int, folder: Path) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reap our own finished children so they do not linger as zombies
    except ChildProcessError:
        pass
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    except PermissionError:
        return True
    return str(folder).encode() in cmdline


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _mtime(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except FileNotFoundError:
        return None


def _status(ref: JobRef) -> JobStatus:
    folder, jid = Path(ref.folder), ref.job_id
    started = _mtime(folder / f"{jid}.started")
    if _alive(int(jid), folder):
        return JobStatus(JobState.RUNNING if started else JobState.QUEUED, started_at=started, nodes="localhost")
    ended = _mtime(folder / f"{jid}.ended")
    if (folder / f"{jid}.cancelled").exists():
        return JobStatus(JobState.CANCELLED, "cancelled by user", started_at=started, ended_at=ended)
    depfail = folder / f"{jid}.depfail"
    if depfail.exists():
        return JobStatus(JobState.CANCELLED, depfail.read_text().strip() or "dependency failed",
                         ended_at=_mtime(depfail))
    result = folder / f"{jid}_0_result.pkl"
    if result.exists():
        try:
            with open(result, "rb") as f:
                outcome, value = pickle.load(f)
        except Exception as e:  # noqa: BLE001 - a truncated pickle from a killed job
            return JobStatus(JobState.FAILED, f"unreadable result: {e}", started_at=started, ended_at=ended)
        if outcome == "success":
            return JobStatus(JobState.SUCCEEDED, exit_code=0, started_at=started, ended_at=ended,
                             nodes="localhost")
        last = str(value).strip().splitlines()[-1] if str(value).strip() else "error"
        last = re.sub(r"^(?:[\w]+\.)+(\w+: )", r"\1", last)  # "pkg.mod.Error: msg" -> "Error: msg"
        return JobStatus(JobState.FAILED, last, exit_code=1, started_at=started, ended_at=ended, nodes="localhost")
    gate = _read_gate_info(folder, jid)
    if started and gate.get("walltime_s") and ended and (ended - started).total_seconds() >= gate["walltime_s"]:
        return JobStatus(JobState.FAILED, "timeout", started_at=started, ended_at=ended)
    if started or ended:
        return JobStatus(JobState.FAILED, "process died without a result (killed?)", started_at=started,
                         ended_at=ended)
    return JobStatus(JobState.LOST, "process gone before it started")


def _read_gate_info(folder: Path, jid: str) -> dict:
    try:
        return json.loads((folder / f"{jid}.gate.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


# ---- the gate, run as `python -m llmjobs.cluster.backends.local FOLDER GATE_FILE` ------------------------


def _take_slot(slots_dir: Path, slots: int, seq: int, folder: Path):
    """Wait in a first-come-first-served queue, then hold one of ``slots`` flock'ed files until exit."""
    import fcntl

    queue = slots_dir / "queue"
    queue.mkdir(parents=True, exist_ok=True)
    ticket = queue / f"{seq:020d}-{os.getpid()}"
    ticket.write_text(str(folder))
    try:
        while True:
            if _ahead_of(ticket, queue) < slots:
                for k in range(slots):
                    f = open(slots_dir / f"slot-{k}.lock", "a")  # noqa: SIM115 - held for the life of the job
                    try:
                        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        return f
                    except BlockingIOError:
                        f.close()
            time.sleep(POLL_S)
    finally:
        ticket.unlink(missing_ok=True)


def _ahead_of(ticket: Path, queue: Path) -> int:
    """Live jobs queued before this one; tickets of dead jobs are cleared on the way."""
    ahead = 0
    for other in sorted(queue.iterdir()):
        if other.name >= ticket.name:
            break
        try:
            pid, folder = int(other.name.rsplit("-", 1)[1]), Path(other.read_text())
        except (ValueError, OSError):
            continue
        if _alive(pid, folder):
            ahead += 1
        else:
            other.unlink(missing_ok=True)
    return ahead


def _wait_for_deps(deps: list[dict]) -> str | None:
    """None when every dependency has its DONE marker; else why one never will."""
    pending = list(deps)
    while pending:
        still = []
        for d in pending:
            if d["marker"] and Path(d["marker"]).exists():
                continue
            if _alive(int(d["job_id"]), Path(d["folder"])):
                still.append(d)
            elif not (d["marker"] and Path(d["marker"]).exists()):  # re-check: it may have just finished
                return f"dependency failed: job {d['job_id']} ended without finishing its shard"
        pending = still
        if pending:
            time.sleep(POLL_S)
    return None


def _gate_main(folder: Path, gate_file: Path) -> None:
    gate = json.loads(gate_file.read_text())
    jid = str(os.getpid())
    (folder / f"{jid}.gate.json").write_text(json.dumps(gate))
    os.environ.update(gate.get("env") or {})
    problem = _wait_for_deps(gate.get("deps") or [])
    if problem:
        (folder / f"{jid}.depfail").write_text(problem + "\n")
        sys.exit(DEPENDENCY_EXIT)
    slot = _take_slot(Path(gate["slots_dir"]), int(gate["slots"]), int(gate["seq"]), folder)  # noqa: F841
    (folder / f"{jid}.started").touch()
    try:
        from submitit.local.local import Controller

        Controller(folder).run()
    finally:
        (folder / f"{jid}.ended").touch()


if __name__ == "__main__":
    _gate_main(Path(sys.argv[1]), Path(sys.argv[2]))
