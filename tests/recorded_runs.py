"""Runs written into a registry through its own API, as the controller records them, for tests that read
registries (status, compare, scale) without running anything."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from llmjobs.cluster.controller import Controller
from llmjobs.registry import Registry, Run, Shard, Step


def end_attempts(reg: Registry, run_id: str, outcomes: Sequence[tuple[str, str | None]], step: str | None = None,
                 shards: Sequence[int] | None = None) -> None:
    """For each selected shard, one attempt per ``(state, reason)`` in turn (``queued`` leaves it live); the
    shard ends in the last one's state; then the controller refreshes the run as after a poll."""
    with reg.session() as s:
        query = select(Shard.id).join(Step).where(Step.run_id == run_id)
        if step is not None:
            query = query.where(Step.name == step)
        if shards is not None:
            query = query.where(Shard.index.in_(list(shards)))
        ids = list(s.scalars(query))
        for state, reason in outcomes:
            for a in reg.new_attempts(s, ids, "local"):
                reg.transition(s, a, "queued")
                if state != "queued":
                    reg.transition(s, a, state, reason)
        for sh in s.scalars(select(Shard).where(Shard.id.in_(ids))):
            reg.transition(s, sh, outcomes[-1][0])
    Controller(reg).refresh(run_id)


def record_run(reg: Registry, run_id: str, steps: Sequence[tuple[str, str, str]], shards: int = 1,
               outcomes: Sequence[tuple[str, str | None]] = (("succeeded", None),), run_dir: str = "/nonexistent/run",
               name: str = "recorded") -> None:
    """A run of ``steps`` (name, kind, output dir), each after the one before, ``shards`` shards each, every
    shard's attempts ending as ``outcomes`` say."""
    with reg.session() as s:
        run = Run(id=run_id, name=name, status="pending", recipe={}, profile={"name": "local", "backend": "local"},
                  backend="local", run_dir=run_dir, version="0")
        for pos, (step, kind, out) in enumerate(steps):
            st = Step(name=step, position=pos, kind=kind, params={"command": "true"} if kind == "shell" else {},
                      resources={}, after=[steps[pos - 1][0]] if pos else [], num_shards=shards, fingerprint="f",
                      status="pending", output_dir=out)
            st.shards = [Shard(index=i, status="pending") for i in range(shards)]
            run.steps.append(st)
        s.add(run)
    end_attempts(reg, run_id, outcomes)
