"""The registry on real SQLite and on a real PostgreSQL server (the same tests run against both)."""

from __future__ import annotations

import multiprocessing as mp
import os
import stat

import pytest
from sqlalchemy import create_engine, func, inspect, select, text

from llmjobs.registry import Attempt, Event, Registry, Run, Shard, Step, migrate


def _make_run(reg: Registry, run_id: str = "r-1", shards: int = 2) -> None:
    with reg.session() as s:
        run = Run(id=run_id, name="t", status="pending", recipe={}, profile={}, backend="local",
                  run_dir="/tmp/x", version="0")
        step = Step(name="a", position=0, kind="shell", params={"command": "true"}, resources={}, after=[],
                    num_shards=shards, fingerprint="f", status="pending", output_dir="/tmp/x/a")
        step.shards = [Shard(index=i, status="pending") for i in range(shards)]
        run.steps.append(step)
        s.add(run)


def test_transition_writes_one_event_per_change(registry_url):
    reg = Registry(registry_url)
    _make_run(reg)
    with reg.session() as s:
        run = s.get(Run, "r-1")
        assert reg.transition(s, run, "running", "started")
        assert not reg.transition(s, run, "running")  # unchanged: no event
        shard = run.steps[0].shards[1]
        assert reg.transition(s, shard, "failed", "boom")
    with reg.session() as s:
        events = s.scalars(select(Event).order_by(Event.id)).all()
        assert [(e.entity, e.entity_id, e.old, e.new, e.reason) for e in events] == [
            ("run", "r-1", "pending", "running", "started"),
            ("shard", "a[1]", "pending", "failed", "boom"),
        ]
        assert s.get(Run, "r-1").status == "running"


def test_attempt_numbers_and_states(registry_url):
    reg = Registry(registry_url)
    _make_run(reg)
    with reg.session() as s:
        shard = s.get(Run, "r-1").steps[0].shards[0]
        a1 = reg.new_attempt(s, shard, "local")
        a2 = reg.new_attempt(s, shard, "local")
        assert (a1.number, a2.number) == (1, 2)
        reg.transition(s, a1, "failed", "exit 3")
    with reg.session() as s:
        a = s.scalars(select(Attempt).where(Attempt.number == 1)).one()
        assert (a.state, a.reason) == ("failed", "exit 3")
        assert [e.new for e in s.scalars(select(Event).where(Event.entity == "attempt").order_by(Event.id))] == [
            "submitting", "submitting", "failed"]


def test_resolve_run_by_prefix_and_unknown(registry_url):
    from llmjobs.errors import UserError

    reg = Registry(registry_url)
    _make_run(reg, "quick-aaa111")
    _make_run(reg, "quick-bbb222")
    with reg.session() as s:
        assert reg.resolve_run(s, "quick-b").id == "quick-bbb222"
        with pytest.raises(UserError, match="ambiguous"):
            reg.resolve_run(s, "quick-")
        with pytest.raises(UserError, match="unknown run id"):
            reg.resolve_run(s, "nope")


def test_old_registry_is_migrated_on_open(registry_url):
    """A registry created at revision 0001 (before runs.owner) is upgraded in place, its rows kept."""
    engine = Registry(registry_url, migrate=False).engine
    migrate.upgrade(engine, "0001")
    assert migrate.current(engine) == "0001"
    with engine.begin() as c:
        c.execute(text("INSERT INTO runs (id, name, status, recipe, profile, backend, run_dir, version, "
                       "created_at, updated_at) VALUES ('old-1', 'old', 'succeeded', '{}', '{}', 'local', "
                       "'/tmp', '0.0', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
    assert "owner" not in {c["name"] for c in inspect(engine).get_columns("runs")}
    engine.dispose()

    reg = Registry(registry_url)
    assert migrate.current(reg.engine) == migrate.head()
    assert "owner" in {c["name"] for c in inspect(reg.engine).get_columns("runs")}
    with reg.session() as s:
        old = s.get(Run, "old-1")
        assert (old.status, old.owner) == ("succeeded", None)


def _hammer(url: str, shard_id: int, n: int, barrier) -> None:
    reg = Registry(url)  # every process also races to open (and migrate) the registry
    barrier.wait()
    for _ in range(n):
        with reg.session() as s:
            shard = s.get(Shard, shard_id)
            attempt = reg.new_attempt(s, shard, "local")
            reg.transition(s, attempt, "queued")
            reg.transition(s, shard, "queued" if shard.status != "queued" else "running")
    reg.close()


def test_eight_processes_update_at_once_without_loss_or_lock_errors(registry_url):
    procs, per = 8, 25
    reg = Registry(registry_url)
    _make_run(reg, shards=1)
    with reg.session() as s:
        shard_id = s.get(Run, "r-1").steps[0].shards[0].id
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(procs)
    workers = [ctx.Process(target=_hammer, args=(registry_url, shard_id, per, barrier)) for _ in range(procs)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(180)
    assert [w.exitcode for w in workers] == [0] * procs  # a "database is locked" error would exit 1
    with reg.session() as s:
        numbers = s.scalars(select(Attempt.number).where(Attempt.shard_id == shard_id)).all()
        assert sorted(numbers) == list(range(1, procs * per + 1))  # none lost, none duplicated
        shard_events = s.scalar(select(func.count()).select_from(Event).where(Event.entity == "shard"))
        assert shard_events == procs * per  # every toggle of the shard's status was recorded


def test_sqlite_file_is_private_and_in_wal_mode(tmp_path):
    path = tmp_path / "sub" / "registry.db"
    reg = Registry(f"sqlite:///{path}")
    _make_run(reg)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with reg.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 10000


def test_default_location_is_under_llmjobs_home(home):
    reg = Registry()
    assert reg.url == f"sqlite:///{home / 'registry.db'}"
    reg.ping()
    assert (home / "registry.db").exists()


def test_registry_env_var_takes_any_url(monkeypatch, tmp_path):
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("LLMJOBS_REGISTRY", url)
    assert Registry().url == url
    assert create_engine(url).connect().exec_driver_sql("SELECT count(*) FROM runs").scalar() == 0
