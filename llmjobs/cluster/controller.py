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
import os
import re
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

import llmjobs
from llmjobs.cluster.backends.base import Backend, JobRef, JobState, JobStatus, StepJob
from llmjobs.cluster.container import ContainerSpec, container_env
from llmjobs.cluster.profiles import Profile, backend_for
from llmjobs.errors import SchedulerError, UserError
from llmjobs.jobs.task import ShardTask, done_marker, read_done, read_failure
from llmjobs.recipes import Plan, interpolate
from llmjobs.registry import Artifact, Attempt, Registry, Run, Shard, Step
from llmjobs.registry.models import as_utc
from llmjobs.registry.store import _chunks
from llmjobs.resources import Resources

LIVE_ATTEMPT = ("submitting", "queued", "running")
LIVE = ("queued", "running")
FINISHED = ("succeeded", "failed", "cancelled")
# an attempt still "submitting" this long after it was written was cut off before its job id was recorded
# (when its submitter ran on another host; on this host a gone submitter process says so at once)
SUBMIT_GRACE = timedelta(minutes=2)
# a shard's status from its latest attempt's state, when the shard has no valid DONE marker
SHARD_OF_ATTEMPT = {"submitting": "queued", "queued": "queued", "running": "running", "succeeded": "failed",
                    "failed": "failed", "lost": "failed", "cancelled": "cancelled"}
CANCEL_CONFIRM_S = 20.0  # how long cancel polls for the scheduler to confirm the jobs stopped


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "run"


def step_state_dir(run_dir: str | Path, step: str) -> Path:
    return Path(run_dir) / ".llmjobs" / step


# ---- plain snapshots of registry rows: read in one short read transaction, used with no session ----------


@dataclass
class _Att:
    id: int
    shard_id: int
    number: int
    state: str
    job_id: str | None
    folder: str | None
    submitted_at: datetime | None = None
    submitter_host: str | None = None
    submitter_pid: int | None = None
    started_at: datetime | None = None
    nodes: str | None = None


@dataclass
class _Shard:
    id: int
    index: int
    status: str
    latest: _Att | None = None


@dataclass
class _Step:
    id: int
    name: str
    kind: str
    params: dict
    resources: dict
    after: list
    num_shards: int
    retries: int
    requeues: int
    container: dict | None
    status: str
    shards: dict[int, _Shard] = field(default_factory=dict)  # by shard index; only the ones read


@dataclass
class _Run:
    id: str
    status: str
    run_dir: str
    backend: str
    profile: dict
    steps: dict[str, _Step]  # in topological order

    def shard_by_id(self) -> dict[int, tuple[_Step, _Shard]]:
        return {sh.id: (st, sh) for st in self.steps.values() for sh in st.shards.values()}


_ATT_COLS = (Attempt.id, Attempt.shard_id, Attempt.number, Attempt.state, Attempt.job_id, Attempt.folder,
             Attempt.submitted_at, Attempt.submitter_host, Attempt.submitter_pid, Attempt.started_at,
             Attempt.nodes)


def _read_run(reg: Registry, s: Session, ref: str, *, succeeded: bool, attempts: str | None,
              step: str | None = None, shard: int | None = None) -> _Run:
    """The run, its steps, its shards (without the succeeded ones unless ``succeeded``) and attempts
    (``"live"``: every live attempt; ``"latest"``: each read shard's latest), in four queries at most."""
    run = reg.resolve_run(s, ref)
    snap = _Run(run.id, run.status, run.run_dir, run.backend, run.profile, {})
    by_id: dict[int, _Step] = {}
    for st in s.scalars(select(Step).where(Step.run_id == run.id).order_by(Step.position)):
        snap.steps[st.name] = by_id[st.id] = _Step(
            st.id, st.name, st.kind, st.params, st.resources, st.after, st.num_shards, st.retries,
            st.requeues, st.container, st.status)
    q = select(Shard.id, Shard.step_id, Shard.index, Shard.status).where(Shard.step_id.in_(list(by_id)))
    if not succeeded:
        q = q.where(Shard.status != "succeeded")
    if step is not None:
        if step not in snap.steps:
            raise UserError(f"run {run.id} has no step {step!r}; steps: {', '.join(snap.steps)}")
        q = q.where(Shard.step_id == snap.steps[step].id)
        if shard is not None:
            q = q.where(Shard.index == shard)
    shards: dict[int, _Shard] = {}
    for sid, step_id, index, status in s.execute(q):
        shards[sid] = by_id[step_id].shards[index] = _Shard(sid, index, status)
    if attempts and shards:
        in_run = select(Shard.id).join(Step).where(Step.run_id == run.id)
        if attempts == "live":
            aq = select(*_ATT_COLS).where(Attempt.shard_id.in_(in_run), Attempt.state.in_(LIVE_ATTEMPT))
        else:
            latest = (select(Attempt.shard_id, func.max(Attempt.number).label("n"))
                      .where(Attempt.shard_id.in_(in_run)).group_by(Attempt.shard_id).subquery())
            aq = select(*_ATT_COLS).join(latest, and_(Attempt.shard_id == latest.c.shard_id,
                                                      Attempt.number == latest.c.n))
        for row in s.execute(aq.order_by(Attempt.shard_id, Attempt.number)):
            sh = shards.get(row.shard_id)
            if sh is not None:
                sh.latest = _Att(*row)
    return snap


def _done_markers(state_dir: Path, indices) -> dict[int, dict]:
    """Valid DONE markers of these shards: one directory listing, then ``read_done`` of the ones present."""
    try:
        names = set(os.listdir(state_dir))
    except OSError:
        return {}
    found = {}
    for i in indices:
        marker = done_marker(state_dir, i)
        if marker.name in names and (done := read_done(marker)) is not None:
            found[i] = done
    return found


def _submitter_gone(a: _Att) -> bool:
    """The process that wrote this ``submitting`` attempt is known to be gone (same host, no such pid)."""
    if not a.submitter_pid or a.submitter_host != socket.gethostname() or a.submitter_pid == os.getpid():
        return False
    try:
        os.kill(a.submitter_pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Controller:
    def __init__(self, registry: Registry, backend_factory: Callable[[Profile], Backend] = backend_for) -> None:
        self.registry = registry
        self._backend_factory = backend_factory
        self._backends: dict[str, Backend] = {}

    def backend(self, run: Run | _Run) -> Backend:
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
        try:
            self.submit_ready(run_id)
        except SchedulerError as e:  # the run is recorded (failed): name it, `status` shows what happened
            raise SchedulerError(f"run {run_id} failed at submission: {e}") from None
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
        """Queue every shard that is not done and not live, in dependency order. Returns jobs queued.

        The run is read once; each step's submission updates that snapshot. Submission is all or nothing:
        when the scheduler refuses a step, the jobs this call already queued are cancelled (and recorded as
        the scheduler then reports them), the refused step's shards fail with the scheduler's message, and
        the run ends ``failed``.
        """
        with self.registry.read() as s:
            run = _read_run(self.registry, s, run_id, succeeded=False, attempts="latest")
        queued: list[tuple[int, JobRef]] = []
        for step in run.steps.values():
            try:
                queued += self._submit_step(run, step)
            except SchedulerError as e:
                cancelled = self._roll_back(run, queued, step.name, str(e))
                if cancelled:
                    raise SchedulerError(f"{e}; the {len(queued)} job(s) this submission had already queued "
                                         f"were cancelled ({cancelled})") from None
                raise
        self.refresh(run.id)
        return len(queued)

    def _submit_step(self, run: _Run, step: _Step) -> list[tuple[int, JobRef]]:
        todo = [sh for sh in step.shards.values() if sh.status not in LIVE and sh.status != "succeeded"]
        if not todo:
            return []
        after: list[JobRef] = []
        for dep in step.after:
            dep_state = step_state_dir(run.run_dir, dep)
            for sh in run.steps[dep].shards.values():  # the upstream shards that are not done
                if sh.status == "succeeded":
                    continue
                a = sh.latest
                if a is None or a.state not in LIVE_ATTEMPT or not a.job_id:
                    return []  # an upstream shard will not run: this step stays as it is
                after.append(JobRef(a.job_id, a.folder or "", str(done_marker(dep_state, sh.index))))
        backend = self.backend(run)
        profile = Profile.model_validate(run.profile)
        with self.registry.session() as s:
            attempts = self.registry.new_attempts(s, [sh.id for sh in todo], run.backend)
            self._settle_shards(s, {sh.id: "queued" for sh in todo})
            numbers = [a.number for a in attempts]
            attempt_ids = [a.id for a in attempts]
        container = ContainerSpec.model_validate(step.container) if step.container else None
        folder = Path(run.run_dir) / "logs" / step.name / f"submit-{_next_round(run.run_dir, step.name)}"
        upstream = {dep: run.steps[dep].num_shards for dep in step.after}
        tasks = [self._task(run.id, Path(run.run_dir), step.name, step.kind, sh.index, step.num_shards,
                            step.params, step.retries, step.requeues, n, profile, upstream)
                 for sh, n in zip(todo, numbers)]
        job = StepJob(run_id=run.id, step=step.name, tasks=tasks, resources=Resources(**step.resources),
                      folder=folder, after=after, container=container,
                      env=container_env(container, {}) if container else {})
        # the scheduler call happens outside any registry transaction
        try:
            submitted = backend.submit(job)
        except Exception as e:  # whatever the scheduler said, it is recorded and re-raised
            with self.registry.session() as s:
                now = datetime.now(UTC)
                for a in _load(s, Attempt, attempt_ids):
                    a.ended_at = now
                    self.registry.transition(s, a, "failed", f"submission failed: {e}")
                self._settle_shards(s, {sh.id: None for sh in todo})
                self._settle(s, run.id)
            for sh in todo:
                sh.status = "failed"
            msg = str(e) if isinstance(e, SchedulerError) else f"submitting step {step.name!r} failed: {e}"
            raise SchedulerError(msg) from e
        with self.registry.session() as s:
            by_id = {a.id: a for a in _load(s, Attempt, attempt_ids)}
            for aid, sub in zip(attempt_ids, submitted):
                a = by_id[aid]
                a.job_id, a.folder, a.stdout, a.stderr = sub.job_id, sub.folder, sub.stdout, sub.stderr
                self.registry.transition(s, a, "queued")
        out = []
        for sh, aid, n, sub in zip(todo, attempt_ids, numbers, submitted):
            sh.status = "queued"
            sh.latest = _Att(aid, sh.id, n, "queued", sub.job_id, sub.folder)
            out.append((aid, JobRef(sub.job_id, sub.folder)))
        return out

    def _roll_back(self, run: _Run, queued: list[tuple[int, JobRef]], refused: str, why: str) -> str:
        """Cancel what this submission queued before the scheduler refused step ``refused``."""
        if not queued:
            return ""
        reason = f"cancelled: step {refused!r} of this submission was refused by the scheduler"
        try:
            seen = self.backend(run).cancel([ref for _, ref in queued])
        except Exception as e:  # noqa: BLE001 - report both; the jobs stay recorded as the scheduler says
            return f"cancelling them failed too: {e}"
        left = self._confirm_cancelled(run, queued, reason, seen)
        return "all confirmed by the scheduler" if not left else f"{left} not yet confirmed by the scheduler"

    def _confirm_cancelled(self, run: _Run, refs: list[tuple[int, JobRef]], reason: str,
                           seen: dict[str, JobStatus] | None = None) -> int:
        """Poll the scheduler until it reports these jobs ended (or ``CANCEL_CONFIRM_S`` passes) and record
        what it says; never assume a job is cancelled. ``seen``: the states the backend's own cancel already
        waited for (PBS, Slurm), used as the first poll. Returns how many it still reports live."""
        backend = self.backend(run)
        pending = dict(refs)
        deadline = time.monotonic() + CANCEL_CONFIRM_S
        delay = 0.2
        while pending:
            if seen is not None:
                statuses, seen = seen, None
            else:
                try:
                    statuses = backend.poll(list(pending.values()))
                except SchedulerError:
                    statuses = {}
            ended = {aid: statuses[ref.job_id] for aid, ref in pending.items()
                     if ref.job_id in statuses and not statuses[ref.job_id].state.live}
            if ended:
                with self.registry.session() as s:
                    now = datetime.now(UTC)
                    touched = {}
                    for a in _load(s, Attempt, list(ended)):
                        st = ended[a.id]
                        if a.state not in LIVE_ATTEMPT:
                            continue
                        a.ended_at = st.ended_at or now
                        a.started_at = a.started_at or st.started_at
                        if st.exit_code is not None:
                            a.exit_code = st.exit_code
                        state = st.state.value
                        self.registry.transition(s, a, state, reason if state == "cancelled" else st.reason)
                        touched[a.shard_id] = None
                    self._settle_shards(s, touched, run_dir=run.run_dir)
                    self._settle(s, run.id)
                for aid in ended:
                    pending.pop(aid)
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(delay)
            delay = min(2.0, delay * 1.5)
        return len(pending)

    # ---- sync ------------------------------------------------------------------------------------------

    def sync(self, run_id: str, step: str | None = None, shard: int | None = None) -> None:
        """Bring the registry up to date with the scheduler (one query) and the markers on disk.

        A finished run is not looked at again (``resume`` re-checks its markers). Otherwise only what can
        change is read: live attempts, and the markers of shards not yet known done (one directory listing
        per step). The read is a read-only transaction; a write transaction is opened only when something
        changed. ``step``/``shard`` narrow the sync to one shard (``logs --follow``).
        """
        with self.registry.read() as s:
            row = self.registry.resolve_run(s, run_id)
            if row.status in FINISHED:
                return
            run = _read_run(self.registry, s, row.id, succeeded=False, attempts=None, step=step, shard=shard)
            live = [_Att(*row) for row in s.execute(
                select(*_ATT_COLS).join(Shard).join(Step)
                .where(Step.run_id == run.id, Attempt.state.in_(LIVE_ATTEMPT),
                       *([Step.name == step] if step is not None else []),
                       *([Shard.index == shard] if shard is not None else [])))]
            # live attempts of shards already succeeded (a stray job) still need their own state
            missing = {a.shard_id for a in live} - set(run.shard_by_id())
            if missing:
                steps_by_id = {st.id: st for st in run.steps.values()}
                for sid, step_id, index, status in s.execute(
                        select(Shard.id, Shard.step_id, Shard.index, Shard.status).where(Shard.id.in_(missing))):
                    steps_by_id[step_id].shards[index] = _Shard(sid, index, status)
        refs = [JobRef(a.job_id, a.folder or "") for a in live if a.state in LIVE and a.job_id]
        statuses = self.backend(run).poll(refs) if refs else {}
        now = datetime.now(UTC)
        shards = run.shard_by_id()
        done: dict[int, dict] = {}  # shard id -> its valid DONE marker
        for st in run.steps.values():
            found = _done_markers(step_state_dir(run.run_dir, st.name),
                                  [sh.index for sh in st.shards.values() if sh.status != "succeeded"])
            done.update((st.shards[i].id, d) for i, d in found.items())
        updates: dict[int, dict] = {}  # attempt id -> fields to set, with "expect" (its state as read)
        for a in live:
            st, sh = shards[a.shard_id]
            marker = done.get(sh.id)
            if a.state == "submitting":
                if _submitter_gone(a):
                    updates[a.id] = {"state": "lost", "reason": "submission was interrupted (its submitter "
                                     f"process {a.submitter_pid} is gone)", "ended_at": now}
                elif a.submitted_at and now - as_utc(a.submitted_at) > SUBMIT_GRACE:
                    updates[a.id] = {"state": "lost", "reason": "submission was interrupted", "ended_at": now}
                continue
            js = statuses.get(a.job_id or "")
            if marker is not None and marker.get("attempt") == a.number:
                finished = datetime.fromtimestamp(marker["time"], UTC)
                updates[a.id] = {"state": "succeeded", "reason": None, "ended_at": finished,
                                 "started_at": (js.started_at if js else None)
                                 or finished - timedelta(seconds=marker.get("seconds", 0)),
                                 "nodes": (js.nodes if js else None) or marker.get("host")}
                continue
            if js is None:
                continue
            new, reason = js.state.value, js.reason
            u: dict = {"started_at": js.started_at, "nodes": js.nodes}
            if js.exit_code is not None:
                u["exit_code"] = js.exit_code
            if js.state == JobState.SUCCEEDED and marker is None:
                new, reason = "failed", "job ended without writing its DONE marker"
            if new in ("failed", "lost"):
                # the command's own exit code and reason, from the runner, over the scheduler's word
                rec = read_failure(step_state_dir(run.run_dir, st.name), sh.index, a.number)
                if rec is not None:
                    u["exit_code"], reason = rec["exit_code"], rec.get("reason") or reason
            if new in ("cancelled", "failed") and reason and "dependency" in reason \
                    and not reason.startswith("dependency not satisfied"):
                reason = _dependency_reason(run, st) or reason
            if new not in LIVE:
                u["ended_at"] = js.ended_at or now
            u.update(state=new, reason=reason)
            if new == a.state and (a.started_at or not js.started_at) and (a.nodes or not js.nodes):
                continue  # nothing new: no write transaction
            updates[a.id] = u
        for u, a in ((updates.get(a.id), a) for a in live):
            if u is not None:
                u["expect"] = a.state
        settle = {shards[a.shard_id][1].id: None for a in live if a.id in updates}
        settle.update(dict.fromkeys(done, "succeeded"))
        if not updates and not settle:
            return
        with self.registry.session() as s:
            for a in _load(s, Attempt, list(updates)):
                u = updates[a.id]
                if a.state != u.pop("expect"):
                    continue  # someone else recorded it meanwhile
                state, reason = u.pop("state"), u.pop("reason")
                for k, v in u.items():
                    if k in ("started_at", "nodes"):
                        v = getattr(a, k) or v
                    if v is not None:
                        setattr(a, k, v)
                self.registry.transition(s, a, state, reason)
            self._settle_shards(s, settle, run_dir=run.run_dir)
            self._settle(s, run.id)

    def _settle_shards(self, s: Session, shards: dict[int, str | None], run_dir: str | None = None) -> None:
        """Set these shards' statuses: the given one, or (None) from their latest attempt. A shard already
        succeeded stays so unless told otherwise (its marker was not read here)."""
        if not shards:
            return
        rows = _load(s, Shard, list(shards))
        s.info.setdefault("llmjobs_touched_steps", set()).update(sh.step_id for sh in rows)
        need = [sh.id for sh in rows if shards[sh.id] is None]
        latest: dict[int, str] = {}
        for chunk in _chunks(need):
            last = (select(Attempt.shard_id, func.max(Attempt.number).label("n"))
                    .where(Attempt.shard_id.in_(chunk)).group_by(Attempt.shard_id).subquery())
            latest.update(s.execute(select(Attempt.shard_id, Attempt.state).join(
                last, and_(Attempt.shard_id == last.c.shard_id, Attempt.number == last.c.n))).all())
        for sh in rows:
            new = shards[sh.id]
            if new is None:
                if sh.status == "succeeded":
                    continue
                new = SHARD_OF_ATTEMPT[latest[sh.id]] if sh.id in latest else \
                    (sh.status if sh.status in ("pending", "cancelled") else "pending")
            self.registry.transition(s, sh, new)

    def _settle(self, s: Session, run_id: str) -> None:
        """Steps' statuses from their shards' (one aggregate query), the run's from its steps'. A step that
        is finished gets its attempt summary stored (one aggregate over its attempts, once)."""
        run = s.get(Run, run_id, with_for_update=True)
        steps = list(s.scalars(select(Step).where(Step.run_id == run_id).order_by(Step.position)))
        present: dict[int, list[str]] = {st.id: [] for st in steps}
        for step_id, status in s.execute(select(Shard.step_id, Shard.status)
                                         .where(Shard.step_id.in_(list(present)))
                                         .group_by(Shard.step_id, Shard.status)):
            present[step_id].append(status)
        touched = s.info.pop("llmjobs_touched_steps", set())
        for st in steps:
            if self.registry.transition(s, st, _combine(present[st.id])) and st.status == "succeeded":
                _record_artifact(s, st)
            if st.status not in FINISHED or st.id in touched:
                st.attempts_count = st.first_started_at = st.last_ended_at = None
            if st.status in FINISHED and st.attempts_count is None:
                st.attempts_count, st.first_started_at, st.last_ended_at = s.execute(
                    select(func.count(Attempt.id), func.min(Attempt.started_at), func.max(Attempt.ended_at))
                    .join(Shard, Attempt.shard_id == Shard.id).where(Shard.step_id == st.id)).one()
        self.registry.transition(s, run, _combine([st.status for st in steps]))

    def refresh(self, run_id: str) -> None:
        with self.registry.session() as s:
            self._settle(s, self.registry.resolve_run(s, run_id).id)

    # ---- resume / cancel / wait ------------------------------------------------------------------------

    def recheck_done(self, run_id: str) -> int:
        """Re-read every DONE marker of the run: a shard whose marker was deleted (or is no longer valid) is
        to run again, and so is every shard of the steps after it, which consumed its old output (their
        markers are set aside as ``*.superseded``). A shard whose marker appeared is done. Returns the
        number of shards set back to pending."""
        with self.registry.read() as s:
            run = _read_run(self.registry, s, run_id, succeeded=True, attempts=None)
        changes: dict[int, str] = {}
        reasons: dict[int, str] = {}
        stale: set[str] = set()
        for st in run.steps.values():
            found = _done_markers(step_state_dir(run.run_dir, st.name), st.shards)
            for i, sh in st.shards.items():
                if sh.status == "succeeded" and i not in found:
                    changes[sh.id], reasons[sh.id] = "pending", "DONE marker missing or invalid: runs again"
                    stale.add(st.name)
                elif sh.status != "succeeded" and i in found:
                    changes[sh.id] = "succeeded"
        # every step downstream of a step that runs again: all its shards run again
        order = list(run.steps)
        for name in order:
            st = run.steps[name]
            if name in stale or not any(d in stale for d in st.after):
                continue
            stale.add(name)
            state = step_state_dir(run.run_dir, name)
            for i, sh in st.shards.items():
                marker = done_marker(state, i)
                if marker.exists():
                    os.replace(marker, marker.with_name(f"{marker.name}.superseded-{int(time.time())}"))
                if sh.status != "pending":
                    changes[sh.id] = "pending"
                    reasons[sh.id] = f"upstream step {', '.join(d for d in st.after if d in stale)} runs again"
        if not changes:
            return 0
        with self.registry.session() as s:
            for sh in _load(s, Shard, list(changes)):
                if sh.status not in LIVE:
                    self.registry.transition(s, sh, changes[sh.id], reasons.get(sh.id))
            self._settle(s, run.id)
        return sum(1 for v in changes.values() if v == "pending")

    def resume(self, run_id: str) -> int:
        self.sync(run_id)
        with self.registry.read() as s:
            run = self.registry.resolve_run(s, run_id)
            run_id = run.id
            live = s.scalar(select(func.count()).select_from(Shard).join(Step)
                            .where(Step.run_id == run.id, Shard.status.in_(LIVE)))
            if live:
                raise UserError(f"run {run.id} is still running ({live} shard(s) queued or running); wait for "
                                f"it (`llmjobs status {run.id} --watch`) or cancel it first")
        self.recheck_done(run_id)
        return self.submit_ready(run_id)

    def cancel(self, run_id: str, step_name: str | None = None) -> int:
        """Ask the scheduler to stop the run's (or one step's) live jobs, then record what the scheduler
        reports for them (never assume cancelled); shards never submitted become ``cancelled``."""
        self.sync(run_id)
        with self.registry.read() as s:
            run = _read_run(self.registry, s, run_id, succeeded=False, attempts="live")
        if step_name is not None and step_name not in run.steps:
            raise UserError(f"run {run.id} has no step {step_name!r}; steps: {', '.join(run.steps)}")
        steps = [st for st in run.steps.values() if step_name in (None, st.name)]
        refs = [(sh.latest.id, JobRef(sh.latest.job_id, sh.latest.folder or "")) for st in steps
                for sh in st.shards.values() if sh.latest and sh.latest.state in LIVE_ATTEMPT and sh.latest.job_id]
        seen = self.backend(run).cancel([r for _, r in refs]) if refs else None
        with self.registry.session() as s:
            pending = {sh.id: "cancelled" for st in steps for sh in st.shards.values() if sh.status == "pending"}
            self._settle_shards(s, pending)
            self._settle(s, run.id)
        if refs:
            self._confirm_cancelled(run, refs, "cancelled by user", seen)
        return len(refs)

    def attempt_state(self, run_id: str, step: str, shard: int, number: int) -> str | None:
        with self.registry.read() as s:
            rid = self.registry.resolve_run(s, run_id).id
            return s.scalar(select(Attempt.state).join(Shard).join(Step).where(
                Step.run_id == rid, Step.name == step, Shard.index == shard, Attempt.number == number))

    def wait(self, run_id: str, on_tick: Callable[[], None] | None = None, interval: float = 1.0,
             max_interval: float = 10.0) -> str:
        """Sync until nothing is queued or running; returns the run's final status."""
        delay = interval
        while True:
            self.sync(run_id)
            if on_tick:
                on_tick()
            with self.registry.read() as s:
                status = self.registry.resolve_run(s, run_id).status
            if status not in LIVE:
                return status
            time.sleep(delay)
            delay = min(max_interval, delay * 1.2)


def _dependency_reason(run: _Run, step: _Step) -> str | None:
    """Why a shard of ``step`` was stopped by its dependencies, from what the registry knows of them."""
    failed, cancelled = [], []
    for dep in step.after:
        statuses = {sh.status for sh in run.steps[dep].shards.values()}
        if statuses & {"failed"}:
            failed.append(dep)
        elif "cancelled" in statuses:
            cancelled.append(dep)
    if failed:
        return f"dependency failed (step {', '.join(failed)})"
    if cancelled:
        return f"dependency cancelled (step {', '.join(cancelled)} was cancelled)"
    return None


def _load(s: Session, model, ids: list[int]) -> list:
    """Rows by id, locked for update on PostgreSQL, in IN lists of bounded length."""
    return [row for chunk in _chunks(ids) for row in s.scalars(select(model).where(model.id.in_(chunk))
                                                              .with_for_update())]


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
    """The step's output directory as its artifact; a step that succeeds again updates the same row."""
    out = Path(step.output_dir)
    files = [p for p in out.rglob("*") if p.is_file() and ".checkpoints" not in p.parts] if out.exists() else []
    size = sum(p.stat().st_size for p in files)
    meta = {"files": len(files), "shards": step.num_shards}
    row = s.scalars(select(Artifact).where(Artifact.step_id == step.id, Artifact.shard_index.is_(None),
                                           Artifact.kind == "directory").order_by(Artifact.id).limit(1)).first()
    if row is None:
        s.add(Artifact(step_id=step.id, path=str(out), kind="directory", size=size, meta=meta))
    else:
        row.path, row.size, row.meta, row.created_at = str(out), size, meta, datetime.now(UTC)
