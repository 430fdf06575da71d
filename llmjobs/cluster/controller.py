"""The controller: submit a plan, sync scheduler state and DONE markers into the registry, resume, cancel.

Every step is submitted at once with scheduler-native dependencies on the jobs it waits for, so the cluster
(or the local backend's gate) runs the DAG with no llmjobs process alive; ``sync`` later reads one
scheduler query plus the markers on disk. Outputs are the truth and the registry is the index: a shard
whose DONE marker exists has succeeded, whatever the scheduler said.

Registry writes happen in short transactions and never around a scheduler call: an attempt row is written
("submitting") before the job is queued, so a crash between the two leaves a trace that ``sync`` resolves,
and the job itself refuses to run a shard that is already done.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import re
import secrets
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

import llmjobs
from llmjobs.cluster.backends.base import Backend, JobRef, JobState, StepJob
from llmjobs.cluster.container import ContainerSpec, container_env
from llmjobs.cluster.profiles import Profile, backend_for
from llmjobs.errors import SchedulerError, UserError
from llmjobs.jobs.task import ShardTask, done_marker, read_done
from llmjobs.recipes import Plan, interpolate
from llmjobs.registry import Artifact, Attempt, Registry, Run, Shard, Step
from llmjobs.registry.models import as_utc
from llmjobs.resources import Resources

LIVE_ATTEMPT = ("submitting", "queued", "running")
LIVE = ("queued", "running")
# an attempt still "submitting" this long after it was written was cut off before its job id was recorded
SUBMIT_GRACE = timedelta(minutes=2)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "run"



def step_state_dir(run_dir: str | Path, step: str) -> Path:
    return Path(run_dir) / ".llmjobs" / step


class Controller:
    def __init__(self, registry: Registry, backend_factory: Callable[[Profile], Backend] = backend_for) -> None:
        self.registry = registry
        self._backend_factory = backend_factory
        self._backends: dict[str, Backend] = {}

    def backend(self, run: Run) -> Backend:
        if run.id not in self._backends:
            self._backends[run.id] = self._backend_factory(Profile.model_validate(run.profile))
        return self._backends[run.id]

    # ---- submit ------------------------------------------------------------------------------------------

    def submit(self, plan: Plan, profile: Profile, name: str | None = None) -> str:
        """Record the run and queue every step; returns the run id. Nothing is recorded if a check fails."""
        backend = self._backend_factory(profile)
        run_id, run_dir, resolved = _prepare(plan, profile, backend, name)
        name = name or plan.recipe.name
        outputs = {st: str(run_dir / st) for st in plan.order}

        recipe_json = plan.recipe.model_dump(mode="json")
        with self.registry.session() as s:
            run = Run(id=run_id, name=name, status="pending", recipe_path=plan.source, recipe=recipe_json,
                      profile=profile.model_dump(mode="json"), backend=profile.backend, run_dir=str(run_dir),
                      version=llmjobs.__version__, owner=getpass.getuser(), submit_host=socket.gethostname())
            s.add(run)
            for pos, step_name in enumerate(plan.order):
                spec = plan.step(step_name)
                container = spec.container or profile.container
                step = Step(name=step_name, position=pos, kind=spec.kind, params=resolved[step_name],
                            resources=spec.resources.model_dump(), after=plan.deps[step_name],
                            num_shards=spec.shards, retries=spec.retries, requeues=spec.requeues,
                            container=container.model_dump() if container else None,
                            fingerprint=_fingerprint(spec.kind, resolved[step_name], spec.resources, spec.shards),
                            status="pending", output_dir=outputs[step_name])
                step.shards = [Shard(index=i, status="pending") for i in range(spec.shards)]
                run.steps.append(step)
        self._backends[run_id] = backend
        self.submit_ready(run_id)
        return run_id

    @staticmethod
    def _task(run_id: str, run_dir: Path, step: str, kind: str, shard: int, num_shards: int, params: dict,
              retries: int, requeues: int, attempt: int, profile: Profile,
              upstream: dict[str, int] | None = None) -> ShardTask:
        """``upstream``: shard counts of the steps this one needs; their DONE markers become ``requires``."""
        requires = tuple(str(done_marker(step_state_dir(run_dir, dep), i))
                         for dep, n in (upstream or {}).items() for i in range(n))
        return ShardTask(run_id=run_id, step=step, kind=kind, shard=shard, num_shards=num_shards,
                         params=params, output_dir=str(Path(run_dir) / step),
                         state_dir=str(step_state_dir(run_dir, step)), attempt=attempt, retries=retries,
                         env=dict(profile.env), requeues=requeues, requires=requires)

    def submit_ready(self, run_id: str) -> int:
        """Queue every shard that is not done and not live, in dependency order. Returns jobs queued."""
        queued = 0
        with self.registry.session() as s:
            order = [st.name for st in self._load(s, run_id).steps]
        for step_name in order:
            queued += self._submit_step(run_id, step_name)
        self.refresh(run_id)
        return queued

    def _submit_step(self, run_id: str, step_name: str) -> int:
        with self.registry.session() as s:
            run = self._load(s, run_id)
            backend = self.backend(run)
            steps = {st.name: st for st in run.steps}
            step = steps[step_name]
            state = step_state_dir(run.run_dir, step_name)
            todo = []
            for shard in step.shards:
                if read_done(done_marker(state, shard.index)) is not None:
                    self.registry.transition(s, shard, "succeeded", "DONE marker")
                elif shard.status not in LIVE and shard.status != "succeeded":
                    todo.append(shard)
            if not todo:
                return 0
            after: list[JobRef] = []
            for dep in step.after:
                dep_step = steps[dep]
                dep_state = step_state_dir(run.run_dir, dep)
                for shard in dep_step.shards:
                    marker = done_marker(dep_state, shard.index)
                    if marker.exists():
                        continue
                    latest = shard.attempts[-1] if shard.attempts else None
                    if latest is None or latest.state not in LIVE_ATTEMPT or not latest.job_id:
                        return 0  # an upstream shard will not run: this step stays as it is
                    after.append(JobRef(latest.job_id, latest.folder or "", str(marker)))
            profile = Profile.model_validate(run.profile)
            attempts = [self.registry.new_attempt(s, shard, run.backend) for shard in todo]
            container = ContainerSpec.model_validate(step.container) if step.container else None
            folder = Path(run.run_dir) / "logs" / step_name / f"submit-{_next_round(run.run_dir, step_name)}"
            upstream = {dep: steps[dep].num_shards for dep in step.after}
            tasks = [self._task(run.id, Path(run.run_dir), step_name, step.kind, sh.index, step.num_shards,
                                step.params, step.retries, step.requeues, a.number, profile, upstream)
                     for sh, a in zip(todo, attempts)]
            job = StepJob(run_id=run.id, step=step_name, tasks=tasks, resources=Resources(**step.resources),
                          folder=folder, after=after, container=container,
                          env=container_env(container, {}) if container else {})
            attempt_ids = [a.id for a in attempts]
        # the scheduler call happens outside any registry transaction
        try:
            submitted = backend.submit(job)
        except Exception as e:
            with self.registry.session() as s:
                for aid in attempt_ids:
                    a = s.get(Attempt, aid)
                    a.ended_at = datetime.now(UTC)
                    self.registry.transition(s, a, "failed", f"submission failed: {e}")
            raise SchedulerError(f"submitting step {step_name!r} failed: {e}") from e
        with self.registry.session() as s:
            for aid, sub in zip(attempt_ids, submitted):
                a = s.get(Attempt, aid)
                a.job_id, a.folder, a.stdout, a.stderr = sub.job_id, sub.folder, sub.stdout, sub.stderr
                self.registry.transition(s, a, "queued")
        return len(submitted)

    # ---- sync ------------------------------------------------------------------------------------------

    def _load(self, s: Session, run_id: str) -> Run:
        run = self.registry.resolve_run(s, run_id)
        s.execute(select(Run).where(Run.id == run.id).options(
            selectinload(Run.steps).selectinload(Step.shards).selectinload(Shard.attempts)))
        return run

    def sync(self, run_id: str) -> None:
        """Bring the registry up to date with the scheduler (one query) and the markers on disk."""
        with self.registry.session() as s:
            run = self._load(s, run_id)
            run_id = run.id
            backend = self.backend(run)
            live: list[tuple[int, JobRef]] = []
            for step in run.steps:
                for shard in step.shards:
                    for a in shard.attempts:
                        if a.state in ("queued", "running") and a.job_id:
                            live.append((a.id, JobRef(a.job_id, a.folder or "")))
        statuses = backend.poll([ref for _, ref in live]) if live else {}
        now = datetime.now(UTC)
        with self.registry.session() as s:
            run = self._load(s, run_id)
            for step in run.steps:
                state = step_state_dir(run.run_dir, step.name)
                for shard in step.shards:
                    done = read_done(done_marker(state, shard.index))
                    for a in shard.attempts:
                        if a.state == "submitting":
                            if now - as_utc(a.submitted_at) > SUBMIT_GRACE:
                                a.ended_at = now
                                self.registry.transition(s, a, "lost", "submission was interrupted")
                            continue
                        if a.state not in LIVE:
                            continue
                        st = statuses.get(a.job_id or "")
                        if done is not None and done.get("attempt") == a.number:
                            finished = datetime.fromtimestamp(done["time"], UTC)
                            a.started_at = a.started_at or (st.started_at if st else None) or \
                                finished - timedelta(seconds=done.get("seconds", 0))
                            a.ended_at = a.ended_at or finished
                            a.nodes = a.nodes or (st.nodes if st else None) or done.get("host")
                            self.registry.transition(s, a, "succeeded")
                            continue
                        if st is None:
                            continue
                        a.started_at = a.started_at or st.started_at
                        a.nodes = st.nodes or a.nodes
                        if st.exit_code is not None:
                            a.exit_code = st.exit_code
                        new = st.state.value
                        if st.state == JobState.SUCCEEDED and done is None:
                            new, st.reason = "failed", "job ended without writing its DONE marker"
                        if new not in LIVE:
                            a.ended_at = st.ended_at or now
                        self.registry.transition(s, a, new, st.reason)
            self._aggregate(s, run)

    def refresh(self, run_id: str) -> None:
        with self.registry.session() as s:
            self._aggregate(s, self._load(s, run_id))

    def _aggregate(self, s: Session, run: Run) -> None:
        for step in run.steps:
            state = step_state_dir(run.run_dir, step.name)
            for shard in step.shards:
                if done_marker(state, shard.index).exists():
                    new = "succeeded"
                elif shard.attempts:
                    new = {"submitting": "queued", "queued": "queued", "running": "running",
                           "succeeded": "failed", "failed": "failed", "lost": "failed",
                           "cancelled": "cancelled"}[shard.attempts[-1].state]
                else:
                    new = shard.status if shard.status in ("pending", "cancelled") else "pending"
                self.registry.transition(s, shard, new)
            if self.registry.transition(s, step, _combine([sh.status for sh in step.shards])) and \
                    step.status == "succeeded":
                _record_artifact(s, step)
        self.registry.transition(s, run, _combine([st.status for st in run.steps]))

    # ---- resume / cancel / wait ------------------------------------------------------------------------

    def resume(self, run_id: str) -> int:
        self.sync(run_id)
        with self.registry.session() as s:
            run = self._load(s, run_id)
            run_id = run.id
            live = sum(1 for st in run.steps for sh in st.shards if sh.status in LIVE)
            if live:
                raise UserError(f"run {run.id} is still running ({live} shard(s) queued or running); wait for "
                                f"it (`llmjobs status {run.id} --watch`) or cancel it first")
        return self.submit_ready(run_id)

    def cancel(self, run_id: str, step_name: str | None = None) -> int:
        self.sync(run_id)
        with self.registry.session() as s:
            run = self._load(s, run_id)
            run_id = run.id
            steps = [st for st in run.steps if step_name in (None, st.name)]
            if step_name is not None and not steps:
                raise UserError(f"run {run.id} has no step {step_name!r}; steps: "
                                f"{', '.join(st.name for st in run.steps)}")
            refs = [(a.id, JobRef(a.job_id, a.folder or "")) for st in steps for sh in st.shards
                    for a in sh.attempts if a.state in LIVE_ATTEMPT and a.job_id]
            backend = self.backend(run)
        if refs:
            backend.cancel([r for _, r in refs])
        with self.registry.session() as s:
            run = self._load(s, run_id)
            now = datetime.now(UTC)
            for aid, _ in refs:
                a = s.get(Attempt, aid)
                if a.state in LIVE_ATTEMPT:
                    a.ended_at = now
                    self.registry.transition(s, a, "cancelled", "cancelled by user")
            for st in run.steps:
                if step_name in (None, st.name):
                    for sh in st.shards:
                        if sh.status == "pending":
                            self.registry.transition(s, sh, "cancelled")
            self._aggregate(s, run)
        return len(refs)

    def wait(self, run_id: str, on_tick: Callable[[], None] | None = None, interval: float = 1.0,
             max_interval: float = 10.0) -> str:
        """Sync until nothing is queued or running; returns the run's final status."""
        delay = interval
        while True:
            self.sync(run_id)
            if on_tick:
                on_tick()
            with self.registry.session() as s:
                status = self.registry.resolve_run(s, run_id).status
            if status not in LIVE:
                return status
            time.sleep(delay)
            delay = min(max_interval, delay * 1.2)


def _prepare(plan: Plan, profile: Profile, backend: Backend, name: str | None):
    """Checks that need no registry, the run id and directory, and params with references resolved."""
    run_id = f"{_slug(name or plan.recipe.name)}-{secrets.token_hex(3)}"
    run_dir = profile.runs_dir() / run_id
    for step_name in plan.order:
        spec = plan.step(step_name)
        backend.validate(step_name, spec.resources, spec.shards, requeues=spec.requeues)
    outputs = {s: str(run_dir / s) for s in plan.order}
    resolved = {s: interpolate(plan.step(s).params, outputs, {"dir": str(run_dir), "id": run_id})
                for s in plan.order}
    return run_id, run_dir, resolved


def describe(plan: Plan, profile: Profile, name: str | None = None,
             backend_factory: Callable[[Profile], Backend] = backend_for) -> str:
    """``submit --dry-run``: each step's batch script / command line, with placeholder ids for upstream jobs."""
    backend = backend_factory(profile)
    run_id, run_dir, resolved = _prepare(plan, profile, backend, name)
    parts = []
    placeholders: dict[str, list[JobRef]] = {}
    for step_name in plan.order:
        spec = plan.step(step_name)
        container = spec.container or profile.container
        after = [r for d in plan.deps[step_name] for r in placeholders[d]]
        upstream = {d: plan.step(d).shards for d in plan.deps[step_name]}
        tasks = [Controller._task(run_id, run_dir, step_name, spec.kind, i, spec.shards, resolved[step_name],
                                  spec.retries, spec.requeues, 1, profile, upstream) for i in range(spec.shards)]
        job = StepJob(run_id=run_id, step=step_name, tasks=tasks, resources=spec.resources,
                      folder=run_dir / "logs" / step_name / "submit-1", after=after, container=container,
                      env=container_env(container, {}) if container else {})
        placeholders[step_name] = [JobRef(f"<{step_name}[{i}]>", str(job.folder),
                                          str(done_marker(step_state_dir(run_dir, step_name), i)))
                                   for i in range(spec.shards)]
        parts.append(f"### step {step_name} (kind {spec.kind}, {spec.shards} shard(s))\n{backend.describe(job)}")
    return "\n".join(parts)


def _combine(statuses: list[str]) -> str:
    """A step's status from its shards', a run's from its steps'."""
    if not statuses:
        return "pending"
    if "running" in statuses:
        return "running"
    if "queued" in statuses:
        return "running" if "succeeded" in statuses or "failed" in statuses else "queued"
    if all(x == "succeeded" for x in statuses):
        return "succeeded"
    for x in ("failed", "cancelled"):
        if x in statuses:
            return x
    return "pending"


def _next_round(run_dir: str, step: str) -> int:
    base = Path(run_dir) / "logs" / step
    return len(list(base.glob("submit-*"))) + 1 if base.exists() else 1


def _fingerprint(kind: str, params: dict, resources: Resources, shards: int) -> str:
    blob = json.dumps({"kind": kind, "params": params, "resources": resources.model_dump(), "shards": shards},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _record_artifact(s: Session, step: Step) -> None:
    out = Path(step.output_dir)
    files = [p for p in out.rglob("*") if p.is_file() and ".checkpoints" not in p.parts] if out.exists() else []
    s.add(Artifact(step_id=step.id, path=str(out), kind="directory", size=sum(p.stat().st_size for p in files),
                   meta={"files": len(files), "shards": step.num_shards}))
