"""Registry reads at scale: `status` of a run with 100k attempts, `status --json`, `runs`, and 8 readers + 1
writer at once, on SQLite (and on PostgreSQL when LLMJOBS_TEST_POSTGRES_URL is set).

    python bench/registry_scale.py [--attempts 100000] [--seconds 20] [--no-baseline]

The registry is built through the registry API, with the rows the controller writes: a run, its steps and
shards, attempts made by ``Registry.new_attempts`` and moved through ``Registry.transition`` (each change an
event row), statuses settled by ``Controller.refresh``. The big run has two steps of 10,000 shards each,
shard i having 1 + i % 9 attempts (all failed but the last; one shard in 97 fails for good), so it ends
``failed``; 20 small runs are beside it.

Measured, each command in a fresh process as a user runs it (``python -m llmjobs``, what the installed
command runs; wall time, CPU time, peak RSS): `llmjobs status RUN` (the big run is finished, so it takes the
path of ``llmjobs.fast_status``: no typer, SQLAlchemy or controller), the same command through typer and
SQLAlchemy, `status RUN --json`, `runs`, against `python -c pass` and `llmjobs --help` measured in the same
run. Goal (issue 9): the whole `status` command < 0.3 s and < 100 MB.
Baseline, in the same run: the pre-change view path (the run loaded as ORM objects, each shard's attempts
fetched through its relationship, the old ``run_view``), timed once in a fresh process. The old `status`
did this three times plus two reads of every marker, so the ratio printed is a lower bound of the gain.
Concurrency: 8 reader processes (sync + status view of the big run, and `runs`) and 1 writer process (new
attempts and transitions on another run) for --seconds; any exception (e.g. "database is locked") counts.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import select

from llmjobs.cluster.controller import Controller
from llmjobs.registry import Registry, Run, Shard, Step
from llmjobs.views import run_summary

STEPS = (("generate", 10_000), ("grade", 10_000))
GOAL_S, GOAL_MB = 0.3, 100


def _run_row(run_id: str, run_dir: str, status: str = "pending") -> Run:
    return Run(id=run_id, name=run_id.rsplit("-", 1)[0], status=status, recipe={}, backend="local",
               profile={"name": "local", "backend": "local"}, run_dir=run_dir, version="bench")


def build_run(reg: Registry, run_id: str, run_dir: str, steps, attempts_of, fails_for_good) -> int:
    """A finished run recorded as the controller records one; returns the number of attempts."""
    with reg.session() as s:
        run = _run_row(run_id, run_dir)
        for pos, (name, n) in enumerate(steps):
            st = Step(name=name, position=pos, kind="shell", params={"command": "true"}, resources={},
                      after=[steps[pos - 1][0]] if pos else [], num_shards=n, fingerprint="bench",
                      status="pending", output_dir=f"{run_dir}/{name}")
            st.shards = [Shard(index=i, status="pending") for i in range(n)]
            run.steps.append(st)
        s.add(run)
    total = 0
    t0 = datetime.now(UTC) - timedelta(hours=5)
    with reg.read() as s:
        shard_rows = s.execute(select(Shard.id, Shard.index, Step.name).join(Step)
                               .where(Step.run_id == run_id)).all()
    for lo in range(0, len(shard_rows), 2000):
        batch = shard_rows[lo:lo + 2000]
        with reg.session() as s:
            rounds = max(attempts_of(i) for _, i, _ in batch)
            for k in range(1, rounds + 1):
                ids = [sid for sid, i, _ in batch if attempts_of(i) >= k]
                index = {sid: i for sid, i, _ in batch}
                for a in reg.new_attempts(s, ids, "local"):
                    i = index[a.shard_id]
                    last = k == attempts_of(i)
                    a.job_id, a.folder = str(100000 + total), f"{run_dir}/logs/submit-{k}"
                    a.stdout, a.stderr = f"{a.folder}/{a.job_id}_0_log.out", f"{a.folder}/{a.job_id}_0_log.err"
                    reg.transition(s, a, "queued")
                    a.started_at = t0 + timedelta(seconds=k * 60)
                    a.ended_at = a.started_at + timedelta(seconds=30)
                    a.nodes = "localhost"
                    if last and not fails_for_good(i):
                        a.exit_code = 0
                        reg.transition(s, a, "succeeded")
                    else:
                        a.exit_code = 3
                        reg.transition(s, a, "failed", "CalledProcessError: command exited with code 3")
                    total += 1
            for sh in s.scalars(select(Shard).where(Shard.id.in_([sid for sid, _, _ in batch]))):
                reg.transition(s, sh, "failed" if fails_for_good(sh.index) else "succeeded")
    Controller(reg).refresh(run_id)
    return total


def build(url: str, attempts: int, home: Path, shards: int = 10_000) -> tuple[str, int]:
    reg = Registry(url, create=True)
    steps = tuple((name, shards) for name, _ in STEPS)
    per = max(1, attempts // sum(n for _, n in steps))
    spread = 2 * per - 1  # shard i gets 1 + i % spread attempts: average `per`
    run_id = f"big-{uuid.uuid4().hex[:6]}"
    n = build_run(reg, run_id, str(home / "runs" / run_id), steps, lambda i: 1 + i % spread,
                  lambda i: i % 97 == 0)
    for k in range(20):
        small = f"small{k}-{uuid.uuid4().hex[:6]}"
        build_run(reg, small, str(home / "runs" / small), (("a", 2),), lambda i: 1, lambda i: False)
    reg.close()
    return run_id, n


# the measured process reports its own peak RSS (VmHWM) at exit: ru_maxrss from wait4 would count the
# memory a forked child shares with this (large) parent before its exec
_HWM = ("import atexit, runpy, sys; atexit.register(lambda: sys.stderr.write('\\nVmHWM ' + "
        "open('/proc/self/status').read().split('VmHWM:')[1].split()[0] + '\\n')); ")


CPU: dict[str, float] = {}  # command -> CPU seconds (user + sys) of its last run: robust to a loaded machine


def run_measured(cmd: list[str], env: dict) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) and stdout of ``python -m llmjobs.cli ARGS`` or ``python -c CODE``."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    if cmd[1] == "-m":
        code = _HWM + f"sys.argv = {['llmjobs', *cmd[3:]]!r}; runpy.run_module({cmd[2]!r}, run_name='__main__')"
    else:
        code = _HWM + cmd[2]
    t0 = time.perf_counter()
    proc = subprocess.run([cmd[0], "-c", code], env=env, capture_output=True, text=True, cwd=REPO, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU[" ".join(cmd)] = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    kb = int(proc.stderr.rsplit("VmHWM ", 1)[1].split()[0])
    return wall, kb / 1024, proc.stdout


def median_of(n: int, cmd: list[str], env: dict) -> tuple[float, float, str, float]:
    """Median wall s, max peak MB, last stdout, median CPU s."""
    runs, cpu = [], []
    for _ in range(n):
        runs.append(run_measured(cmd, env))
        cpu.append(CPU[" ".join(cmd)])
    return (statistics.median(r[0] for r in runs), max(r[1] for r in runs), runs[-1][2], statistics.median(cpu))


# ---- the pre-change view path, as a baseline ---------------------------------------------------------


def naive_view(url: str, run_id: str) -> None:
    """What `status` did before: the run as ORM objects, every shard's attempts through its relationship
    (one query per shard), the old run_view. Once, where the old command did it three times."""
    from sqlalchemy.orm import selectinload

    from llmjobs.registry.models import as_utc

    reg = Registry(url)
    with reg.session() as s:
        run = reg.resolve_run(s, run_id)
        s.execute(select(Run).where(Run.id == run.id).options(
            selectinload(Run.steps).selectinload(Step.shards).selectinload(Shard.attempts)))

        def iso(dt):
            return None if dt is None else as_utc(dt).isoformat()

        view = {"id": run.id, "steps": []}
        for st in run.steps:
            starts = [a.started_at for sh in st.shards for a in sh.attempts if a.started_at]
            view["steps"].append({"name": st.name, "elapsed": len(starts), "shards": [
                {"index": sh.index, "status": sh.status, "attempts": [
                    {"number": a.number, "job_id": a.job_id, "state": a.state, "reason": a.reason,
                     "exit_code": a.exit_code, "nodes": a.nodes, "submitted_at": iso(a.submitted_at),
                     "started_at": iso(a.started_at), "ended_at": iso(a.ended_at), "stdout": a.stdout,
                     "stderr": a.stderr} for a in sh.attempts]} for sh in st.shards]})
    json.dumps(view)


# ---- concurrency -----------------------------------------------------------------------------------


def reader(url: str, run_id: str, seconds: float, barrier, results) -> None:
    from llmjobs.views import runs_view

    ops, errors = 0, []
    ctl = Controller(Registry(url))
    barrier.wait()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            ctl.sync(run_id)
            run_summary(ctl.registry, run_id)
            runs_view(ctl.registry)
            ops += 1
        except Exception:  # noqa: BLE001 - every failure is the measurement
            errors.append(traceback.format_exc(limit=1).strip().splitlines()[-1])
    results.put(("reader", ops, errors))


def writer(url: str, seconds: float, barrier, results) -> None:
    ops, errors = 0, []
    reg = Registry(url)
    run_id = f"writer-{uuid.uuid4().hex[:6]}"
    with reg.session() as s:
        run = _run_row(run_id, "/nonexistent/writer", "running")
        st = Step(name="w", position=0, kind="shell", params={}, resources={}, after=[], num_shards=50,
                  fingerprint="w", status="running", output_dir="/nonexistent/writer/w")
        st.shards = [Shard(index=i, status="pending") for i in range(50)]
        run.steps.append(st)
        s.add(run)
    with reg.read() as s:
        ids = list(s.scalars(select(Shard.id).join(Step).where(Step.run_id == run_id)))
    barrier.wait()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            with reg.session() as s:  # what a submit does for one step: attempts, then their states
                for a in reg.new_attempts(s, ids, "local"):
                    reg.transition(s, a, "queued")
            ops += 1
        except Exception:  # noqa: BLE001
            errors.append(traceback.format_exc(limit=1).strip().splitlines()[-1])
    results.put(("writer", ops, errors))


def concurrency(url: str, run_id: str, seconds: float) -> dict:
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(9), ctx.Queue()
    procs = [ctx.Process(target=reader, args=(url, run_id, seconds, barrier, results)) for _ in range(8)]
    procs.append(ctx.Process(target=writer, args=(url, seconds, barrier, results)))
    for p in procs:
        p.start()
    got = [results.get(timeout=seconds + 300) for _ in procs]
    for p in procs:
        p.join(60)
    reads = sum(ops for kind, ops, _ in got if kind == "reader")
    writes = sum(ops for kind, ops, _ in got if kind == "writer")
    errors = [e for _, _, errs in got for e in errs]
    return {"reads": reads, "writes": writes, "errors": errors}


# ---- main ------------------------------------------------------------------------------------------


def bench(label: str, url: str, home: Path, args) -> None:
    env = {**os.environ, "LLMJOBS_HOME": str(home), "LLMJOBS_REGISTRY": url, "PYTHONPATH": str(REPO),
           "COLUMNS": "160"}
    t0 = time.perf_counter()
    run_id, n = build(url, args.attempts, home, args.shards)
    print(f"\n== {label}: built run {run_id} with {n:,} attempts (+20 small runs) in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    cli = [sys.executable, "-m", "llmjobs"]  # what the installed `llmjobs` command runs
    bare = median_of(5, [sys.executable, "-c", "pass"], env)
    helped = median_of(3, [*cli, "--help"], env)
    floor = median_of(3, [sys.executable, "-c", "import llmjobs.cli"], env)
    ctl = Controller(Registry(url))
    inproc = []
    for _ in range(5):  # the work of `status` itself, imports excluded: sync + the table's view
        t = time.perf_counter()
        ctl.sync(run_id)
        run_summary(ctl.registry, run_id)
        inproc.append(time.perf_counter() - t)
    ctl.registry.close()
    status = median_of(5, [*cli, "status", run_id], env)
    # the same command through typer, SQLAlchemy and the views' SQLAlchemy path (what every run that is not
    # finished, or a PostgreSQL registry, takes): the path `status` of a finished run took before
    typer_code = f"import sys; from llmjobs.cli import app; sys.argv = ['llmjobs', 'status', {run_id!r}]; app()"
    typer_path = median_of(3, [sys.executable, "-c", typer_code], env)
    as_json = median_of(1, [*cli, "status", run_id, "--json"], env)
    runs = median_of(3, [*cli, "runs"], env)
    steps = json.loads(as_json[2])["steps"]
    assert sum(len(sh["attempts"]) for st in steps for sh in st["shards"]) == n
    print(f"{'command':34} {'wall s':>8} {'CPU s':>8} {'peak MB':>8}")
    assert status[2] == typer_path[2]  # the fast path prints what the full command prints
    for name, (wall, mb, _, cpu) in (("python -c pass (baseline)", bare), ("llmjobs --help", helped),
                                     ("python -c 'import llmjobs.cli'", floor), ("llmjobs status RUN", status),
                                     ("  same, through typer + SQLAlchemy", typer_path),
                                     ("llmjobs status RUN --json", as_json), ("llmjobs runs", runs)):
        print(f"{name:34} {wall:8.3f} {cpu:8.3f} {mb:8.1f}")
    print(f"{'status work in process (median)':34} {statistics.median(inproc):8.3f}")
    work = statistics.median(inproc)
    print(f"whole `llmjobs status RUN`: {status[0]:.3f} s wall = {status[0] / bare[0]:.1f}x `python -c pass`, "
          f"{status[0] / helped[0]:.2f}x `llmjobs --help`, {typer_path[0] / status[0]:.1f}x faster than through "
          f"typer + SQLAlchemy; CPU {status[3]:.3f} s = {status[3] / max(bare[3], 1e-3):.1f}x `python -c pass`")
    print(f"status vs goal ({GOAL_S} s, {GOAL_MB} MB): work {work / GOAL_S:.2f}x of the time, whole command "
          f"{status[0] / GOAL_S:.2f}x of the time (CPU {status[3] / GOAL_S:.2f}x), {status[1] / GOAL_MB:.2f}x of "
          "the memory")
    if not args.no_baseline:
        code = f"import sys; sys.path.insert(0, {str(REPO)!r}); import registry_scale as b; " \
               f"b.naive_view({url!r}, {run_id!r})"
        base_cmd = [sys.executable, "-c", code]
        base = run_measured(base_cmd, {**env, "PYTHONPATH": f"{REPO}:{REPO / 'bench'}"})
        base_cpu = CPU[" ".join(base_cmd)]
        print(f"pre-change view path (once; the old status did it 3x): {base[0]:.2f} s ({base_cpu:.2f} s CPU), "
              f"{base[1]:.0f} MB -> the whole status command is {base[0] / status[0]:.0f}x faster "
              f"({base_cpu / status[3]:.0f}x less CPU), {base[1] / status[1]:.1f}x less memory")
    c = concurrency(url, run_id, args.seconds)
    print(f"8 readers + 1 writer for {args.seconds:g} s: {c['reads']} status views, {c['writes']} write "
          f"transactions ({c['writes'] * 50} attempts), {len(c['errors'])} errors"
          + (f": {sorted(set(c['errors']))[:3]}" if c["errors"] else ""), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--attempts", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--shards", type=int, default=10_000, help="shards in each of the big run's two steps")
    ap.add_argument("--no-baseline", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="llmjobs-scale-") as tmp:
        home = Path(tmp)
        bench("SQLite", f"sqlite:///{home / 'registry.db'}", home, args)
        admin = os.environ.get("LLMJOBS_TEST_POSTGRES_URL")
        if admin:
            from sqlalchemy import create_engine, text
            from sqlalchemy.engine import make_url

            name = f"llmjobs_bench_{uuid.uuid4().hex[:8]}"
            eng = create_engine(admin, isolation_level="AUTOCOMMIT")
            with eng.connect() as c:
                c.execute(text(f'CREATE DATABASE "{name}"'))
            try:
                url = make_url(admin).set(database=name).render_as_string(hide_password=False)
                bench("PostgreSQL", url, home / "pg", args)
            finally:
                with eng.connect() as c:
                    c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        else:
            print("\n(PostgreSQL skipped: set LLMJOBS_TEST_POSTGRES_URL, e.g. from scripts/postgres-testbed.sh)")


if __name__ == "__main__":
    main()
