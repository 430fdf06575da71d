"""The local backend: this machine as a small scheduler (queue + dispatcher), behind ``Backend``.

``submit`` writes a whole step in one transaction (a row per shard, no process) and makes sure the
dispatcher runs; ``poll`` reads rows; ``cancel`` ends the jobs' whole sessions. Job ids are the queue's row
ids; each submission folder holds a ``.local-queue`` file naming its queue, so a run is found again even
when ``$LLMJOBS_HOME`` changed since.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmjobs import settings
from llmjobs.cluster.backends.base import Backend, JobRef, JobState, JobStatus, StepJob, SubmittedJob
from llmjobs.cluster.backends.local import procs
from llmjobs.cluster.backends.local.dispatcher import CODE_DIR, ensure_dispatcher
from llmjobs.cluster.backends.local.queue import LIVE, connect, log_paths, note, write
from llmjobs.errors import UserError
from llmjobs.resources import Resources

POINTER = ".local-queue"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
STATES = {"queued": JobState.QUEUED, "starting": JobState.QUEUED, "running": JobState.RUNNING,
          "succeeded": JobState.SUCCEEDED, "failed": JobState.FAILED, "cancelled": JobState.CANCELLED,
          "lost": JobState.LOST}


class LocalOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_parallel: int | None = Field(None, ge=1, description="jobs running at once; default: CPU cores")
    slots_dir: str | None = Field(None, description="where the local queue lives; default $LLMJOBS_HOME/local")
    signal_delay_s: int = Field(60, ge=1, description="checkpoint signal this long before the walltime")


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
    def queue_dir(self) -> Path:
        return Path(self.options.slots_dir or settings.home() / "local").expanduser().absolute()

    def validate(self, step: str, resources: Resources, shards: int, *, requeues: int = 0) -> None:
        if resources.gpus_per_node > 0:
            have = _visible_gpus()
            if resources.gpus_per_node > have:
                raise UserError(f"step {step!r} asks for {resources.gpus_per_node} GPU(s) per node; this machine "
                                f"has {have}. Use a cluster profile (--cluster) or set gpus_per_node: 0")
        if resources.nodes > 1:
            raise UserError(f"step {step!r} asks for {resources.nodes} nodes; the local backend has one. "
                            "Use a Slurm or PBS profile for multi-node steps")

    def _signal_delay(self, walltime_s: int) -> int:
        # the checkpoint signal comes this long before the walltime: enough to save, short of half the run
        return min(self.options.signal_delay_s, max(1, walltime_s // 2))

    def submit(self, job: StepJob) -> list[SubmittedJob]:
        job.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUBMITIT_")}
        env.update(job.env)
        # a job computes on its `cpus` cores: torch and numpy otherwise start a thread per core in every job,
        # and two jobs side by side on a laptop spin against each other (3x slower measured on 2 cores)
        if not any(var in env for var in THREAD_VARS):  # the user's own setting wins
            env.update(dict.fromkeys(THREAD_VARS, str(job.resources.cpus)))
        deps = [[r.job_id, r.marker] for r in job.after]
        walltime_s = job.resources.walltime_seconds
        con = connect(self.queue_dir)
        try:
            with write(con) as c:
                gid = c.execute(
                    "INSERT INTO groups (name, folder, deps, ready, env, cwd, python, code, max_parallel, "
                    "walltime_s, signal_delay_s, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (job.name, str(job.folder), json.dumps(deps), 0 if deps else 1, json.dumps(env), os.getcwd(),
                     sys.executable, CODE_DIR, self.max_parallel, walltime_s, self._signal_delay(walltime_s),
                     time.time())).lastrowid
                ids = [c.execute("INSERT INTO jobs (grp, shard_key, task, state, requeues_left) "
                                 "VALUES (?, ?, ?, 'queued', ?)",
                                 (gid, f"{t.state_dir}#{t.shard}", pickle.dumps(t), t.requeues)).lastrowid
                       for t in job.tasks]
        finally:
            con.close()
        (job.folder / POINTER).write_text(str(self.queue_dir))
        ensure_dispatcher(self.queue_dir)
        out = []
        for jid in ids:
            stdout, stderr = log_paths(job.folder, jid)
            out.append(SubmittedJob(job_id=str(jid), folder=str(job.folder), stdout=str(stdout), stderr=str(stderr)))
        return out

    def _queues(self, jobs: list[JobRef]) -> dict[Path | None, list[JobRef]]:
        """Jobs by the queue that holds them, as their submission folder says (None: no queue knows them,
        e.g. a job of an llmjobs from before this queue, whose ids were process ids)."""
        by_folder: dict[str, list[JobRef]] = defaultdict(list)
        for ref in jobs:
            by_folder[ref.folder].append(ref)
        out: dict[Path | None, list[JobRef]] = defaultdict(list)
        for folder, refs in by_folder.items():
            try:
                q: Path | None = Path((Path(folder) / POINTER).read_text().strip())
            except OSError:
                q = None
            out[q].extend(refs)
        return out

    def poll(self, jobs: list[JobRef]) -> dict[str, JobStatus]:
        out: dict[str, JobStatus] = {}
        for qdir, refs in self._queues(jobs).items():
            ids = [int(r.job_id) for r in refs if r.job_id.isdigit()]
            rows = {}
            if qdir is not None and (qdir / "queue.db").exists():
                con = connect(qdir)
                try:
                    for i in range(0, len(ids), 500):
                        chunk = ids[i:i + 500]
                        rows.update({r[0]: r for r in con.execute(
                            "SELECT id, state, reason, exit_code, started_at, ended_at FROM jobs "
                            f"WHERE id IN ({','.join('?' * len(chunk))})", chunk)})
                finally:
                    con.close()
            live = False
            for ref in refs:
                row = rows.get(int(ref.job_id)) if ref.job_id.isdigit() else None
                if row is None:
                    out[ref.job_id] = JobStatus(JobState.LOST, f"job {ref.job_id} is in no local queue"
                                                f"{f' (looked in {qdir})' if qdir else ''}")
                    continue
                _, state, reason, code, started, ended = row
                live = live or state in LIVE
                out[ref.job_id] = JobStatus(STATES[state], reason, exit_code=code, nodes="localhost",
                                            started_at=_time(started), ended_at=_time(ended))
            if live and qdir is not None:
                ensure_dispatcher(qdir)  # a dispatcher that died is replaced here; it picks up where it was
        return out

    def cancel(self, jobs: list[JobRef]) -> None:
        sids: list[int] = []
        for qdir, refs in self._queues(jobs).items():
            ids = [int(r.job_id) for r in refs if r.job_id.isdigit()]
            if not ids or qdir is None or not (qdir / "queue.db").exists():
                continue
            con = connect(qdir)
            try:
                marks = ",".join("?" * len(ids))
                with write(con) as c:
                    now = time.time()
                    c.execute(f"UPDATE jobs SET state = 'cancelled', reason = 'cancelled by user', ended_at = ? "
                              f"WHERE id IN ({marks}) AND state = 'queued'", (now, *ids))
                    running = c.execute(
                        f"SELECT j.id, j.pid, g.folder FROM jobs j JOIN groups g ON g.id = j.grp "
                        f"WHERE j.id IN ({marks}) AND j.state IN ('starting', 'running')", ids).fetchall()
                    # the dispatcher records them cancelled once their session is empty (and SIGKILLs
                    # what ignores SIGTERM); a job still starting gets its SIGTERM from the dispatcher
                    for jid, pid, _ in running:
                        c.execute("UPDATE jobs SET kill = 'cancel', killed_at = ? WHERE id = ?",
                                  (now if pid else None, jid))
            finally:
                con.close()
            for jid, pid, folder in running:
                note(folder, jid, "cancelled by user: ending the job's processes")
                if pid:
                    sids.append(pid)
            ensure_dispatcher(qdir)
        if sids:
            procs.end_sessions(sids)

    def describe(self, job: StepJob) -> str:
        deps = ", ".join(r.job_id for r in job.after) or "none"
        walltime_s = job.resources.walltime_seconds
        lines = [(f"# local: {len(job.tasks)} queued job(s) for step {job.step!r} in {self.queue_dir / 'queue.db'}, "
                  f"at most {self.max_parallel} jobs at once on this machine; waits for: {deps}"),
                 (f"# walltime {job.resources.walltime} (checkpoint signal {self._signal_delay(walltime_s)} s "
                 f"before it), logs in {job.folder}")]
        for t in job.tasks:
            lines.append(f"# job: llmjobs.jobs.runner.run_shard(shard={t.shard}, kind={t.kind}) in its own session, "
                         f"forked by the dispatcher ({sys.executable} -m llmjobs.cluster.backends.local.dispatcher)")
        return "\n".join(lines) + "\n"


def _time(t: float | None) -> datetime | None:
    return datetime.fromtimestamp(t, UTC) if t is not None else None


def _visible_gpus() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip()])
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=False)
        return len([line for line in out.stdout.splitlines() if line.startswith("GPU")])
    except (OSError, subprocess.TimeoutExpired):
        return 0



