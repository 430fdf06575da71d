"""Registry reads that scale, on real SQLite and a real PostgreSQL server: a bounded number of SQL statements
for `status` whatever the shard count, no write lock for reads, many readers and writers at once."""

from __future__ import annotations

import multiprocessing as mp
import os
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
from contextlib import contextmanager

import pytest
from sqlalchemy import event, func, select

from llmjobs.cluster.controller import Controller
from llmjobs.registry import Attempt, Registry, Shard, Step, migrate
from llmjobs.views import run_summary, run_view, runs_view

from .recorded_runs import record_run

# seconds the concurrency test runs, per database; 25 s keeps both databases within 75 s on an idle CI machine
CONCURRENCY_S = float(os.environ.get("LLMJOBS_TEST_CONCURRENCY_S", "25"))


def make_run(reg: Registry, run_id: str, shards: int, attempts: int = 3, finished: bool = True,
             run_dir: str = "/nonexistent/run") -> None:
    """A two-step shell run: every shard has ``attempts`` attempts, all failed but the last; with
    ``finished=False`` the last one is still queued."""
    last = ("succeeded", None) if finished else ("queued", None)
    record_run(reg, run_id, [("a", "shell", f"{run_dir}/a"), ("b", "shell", f"{run_dir}/b")], shards=shards,
               outcomes=[("failed", "exit 3")] * (attempts - 1) + [last], run_dir=run_dir, name="scale")


@contextmanager
def statements(reg: Registry):
    seen: list[str] = []

    def count(conn, cursor, statement, *args):
        seen.append(statement)

    event.listen(reg.engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(reg.engine, "before_cursor_execute", count)


def _status(reg: Registry, run_id: str) -> dict:
    """What `llmjobs status RUN` does: sync, then the table's view."""
    Controller(reg).sync(run_id)
    return run_summary(reg, run_id)


@pytest.mark.parametrize("finished", [True, False])
def test_status_issues_a_bounded_number_of_statements(registry_url, finished):
    reg = Registry(registry_url)
    make_run(reg, "small", shards=5, finished=finished)
    make_run(reg, "large", shards=300, finished=finished)
    counts = {}
    for run_id in ("small", "large"):
        with statements(reg) as seen:
            view = _status(reg, run_id)
            runs_view(reg)
        counts[run_id] = len(seen)
        assert not [x for x in seen if x.strip().upper().startswith(("BEGIN IMMEDIATE", "INSERT", "UPDATE"))]
    assert counts["small"] == counts["large"] <= 16, counts
    step = view["steps"][0]
    assert step["num_shards"] == 300 and step["attempts"] == 900
    assert step["counts"] == ({"succeeded": 300} if finished else {"queued": 300})
    assert view["status"] == ("succeeded" if finished else "queued")

    with statements(reg) as seen:  # the full view (`status --json`) reads each table once
        full = run_view(reg, "large")
    assert len(seen) <= 12
    assert sum(len(sh["attempts"]) for st in full["steps"] for sh in st["shards"]) == 1800


def test_status_needs_no_write_lock(tmp_path):
    """A writer holding SQLite's write lock does not hold up `status` (readers take no lock)."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    reg = Registry(url)
    make_run(reg, "r", shards=20)
    make_run(reg, "live", shards=20, finished=False)
    con = sqlite3.connect(tmp_path / "r.db", isolation_level=None)
    con.execute("BEGIN IMMEDIATE")
    con.execute("UPDATE runs SET name = 'busy'")
    done: list = []

    def read():
        try:
            done.extend([_status(reg, "r")["status"], _status(reg, "live")["status"]])
        except Exception as e:  # noqa: BLE001
            done.append(e)

    t = threading.Thread(target=read)
    t0 = time.monotonic()
    t.start()
    t.join(20)
    con.rollback()
    assert done == ["succeeded", "queued"] and time.monotonic() - t0 < 20


def test_migration_check_is_one_query_against_the_code_head(tmp_path):
    assert migrate.HEAD == migrate.head()  # bump HEAD with every new migration
    url = f"sqlite:///{tmp_path / 'r.db'}"
    Registry(url).close()
    code = ("import sys; from llmjobs.registry import Registry; Registry(sys.argv[1]).ping(); "
            "print('alembic' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, url], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # an up-to-date registry opens without Alembic


# ---- 8 readers and 2 writers at once --------------------------------------------------------------------


def _reader(url: str, run_id: str, seconds: float, barrier, out) -> None:
    errors, ops = [], 0
    reg = Registry(url)
    barrier.wait()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            _status(reg, run_id)
            runs_view(reg)
            ops += 1
        except Exception:  # noqa: BLE001 - e.g. "database is locked": the failure under test
            errors.append(traceback.format_exc()[-500:])
    out.put(("reader", ops, errors))


def _writer(url: str, run_id: str, seconds: float, barrier, out) -> None:
    errors, made = [], 0
    reg = Registry(url)
    with reg.read() as s:
        ids = list(s.scalars(select(Shard.id).join(Step).where(Step.run_id == run_id)))
    barrier.wait()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            with reg.session() as s:  # a step's submission: its attempts, then queued
                attempts = reg.new_attempts(s, ids, "local")
                for a in attempts:
                    reg.transition(s, a, "queued")
            made += len(attempts)
            with reg.session() as s:  # the sync that finds them ended
                for a in s.scalars(select(Attempt).where(Attempt.id.in_([a.id for a in attempts]))):
                    reg.transition(s, a, "failed", "exit 1")
        except Exception:  # noqa: BLE001
            errors.append(traceback.format_exc()[-500:])
    out.put(("writer", made, errors))


@pytest.mark.slow
def test_eight_readers_and_two_writers_lose_nothing_and_never_fail(registry_url):
    reg = Registry(registry_url)
    make_run(reg, "busy", shards=50, attempts=1, finished=False)
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(10), ctx.Queue()
    procs = [ctx.Process(target=_reader, args=(registry_url, "busy", CONCURRENCY_S, barrier, out))
             for _ in range(8)]
    procs += [ctx.Process(target=_writer, args=(registry_url, "busy", CONCURRENCY_S, barrier, out))
              for _ in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=CONCURRENCY_S + 240) for _ in procs]
    for p in procs:
        p.join(60)
    errors = [e for _, _, errs in results for e in errs]
    assert not errors, errors[:3]
    reads = sum(n for kind, n, _ in results if kind == "reader")
    made = sum(n for kind, n, _ in results if kind == "writer")
    assert reads >= 8 and made > 0
    with reg.read() as s:
        rows = s.execute(select(Attempt.shard_id, func.count(), func.max(Attempt.number)).join(Shard).join(Step)
                         .where(Step.run_id == "busy").group_by(Attempt.shard_id)).all()
    assert sum(n for _, n, _ in rows) == 100 + made  # none lost
    assert all(n == top for _, n, top in rows)  # numbers 1..n per shard: none duplicated or skipped
