"""Whole runs on the local backend: real processes through submitit, real SQLite, the real CLI."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ABC = """
name: abc
defaults: {{resources: {{walltime: "00:05:00"}}}}
steps:
  A:
    kind: shell
    params: {{command: "echo A >> {log}; echo hello > a.txt"}}
  B:
    kind: shell
    shards: 4
    params:
      command: >-
        echo "B$LLMJOBS_SHARD" >> {log};
        sleep {sleep};
        if [ "$LLMJOBS_SHARD" = 2 ] && [ ! -e {ok} ]; then echo "shard 2 refuses" >&2; exit 3; fi;
        cat ${{steps.A.output}}/a.txt > b-$LLMJOBS_SHARD.txt
  C:
    kind: shell
    after: [B]
    params: {{command: "echo C >> {log}; cat ${{steps.B.output}}/b-*.txt | wc -l > c.txt"}}
"""


def _recipe(tmp_path: Path, sleep: float = 0) -> tuple[Path, Path, Path]:
    log, ok = tmp_path / "ran.log", tmp_path / "ok"
    path = tmp_path / "abc.yaml"
    path.write_text(ABC.format(log=log, ok=ok, sleep=sleep))
    return path, log, ok


def _ran(log: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in log.read_text().split() if log.exists() else []:
        counts[line] = counts.get(line, 0) + 1
    return counts


def _attempts(home: Path) -> dict[str, int]:
    """Attempts per step/shard straight from the registry file."""
    con = sqlite3.connect(home / "registry.db")
    rows = con.execute("SELECT st.name, sh.'index', count(a.id) FROM steps st JOIN shards sh ON sh.step_id = st.id "
                       "LEFT JOIN attempts a ON a.shard_id = sh.id GROUP BY st.name, sh.'index'").fetchall()
    con.close()
    return {f"{n}[{i}]": c for n, i, c in rows}


def _shards(view: dict, step: str) -> list[dict]:
    return next(s for s in view["steps"] if s["name"] == step)["shards"]


def test_failed_shard_stops_the_dag_and_resume_reruns_only_it(cli, home, tmp_path):
    recipe, log, ok = _recipe(tmp_path)
    r = cli("submit", recipe, "--wait")
    assert r.returncode == 1, r.stderr
    run_id = r.stdout.strip().splitlines()[0]
    assert _ran(log) == {"A": 1, "B0": 1, "B1": 1, "B2": 1, "B3": 1}  # C never ran

    view = cli.status(run_id)
    assert (view["id"], view["name"], view["status"]) == (run_id, "abc", "failed")
    steps = {s["name"]: s for s in view["steps"]}
    assert [sh["status"] for sh in steps["B"]["shards"]] == ["succeeded", "succeeded", "failed", "succeeded"]
    assert steps["B"]["status"] == "failed"
    assert steps["C"]["status"] != "succeeded"
    failed = steps["B"]["shards"][2]["attempts"]
    assert len(failed) == 1 and failed[0]["state"] == "failed" and "code 3" in failed[0]["reason"]
    assert "shard 2 refuses" in Path(failed[0]["stderr"]).read_text()

    ok.touch()
    r = cli("resume", run_id, "--wait")
    assert r.returncode == 0, r.stderr
    # exactly one new attempt for B[2] and one for C: in the registry and in what the commands appended
    assert _ran(log) == {"A": 1, "B0": 1, "B1": 1, "B2": 2, "B3": 1, "C": 1}
    assert _attempts(home) == {"A[0]": 1, "B[0]": 1, "B[1]": 1, "B[2]": 2, "B[3]": 1, "C[0]": 2}
    view = cli.status(run_id)
    assert view["status"] == "succeeded"
    assert [a["state"] for a in _shards(view, "B")[2]["attempts"]] == ["failed", "succeeded"]
    assert (Path(view["run_dir"]) / "C" / "c.txt").read_text().strip() == "4"

    r = cli("resume", run_id)  # a finished run: nothing to do, nothing runs again
    assert r.returncode == 0 and "nothing to resume" in r.stderr
    assert _ran(log)["B2"] == 2


def test_killed_submitter_loses_nothing_and_runs_nothing_twice(cli, home, tmp_path):
    recipe, log, ok = _recipe(tmp_path, sleep=3)
    proc = cli.popen("submit", recipe, "--wait")
    run_id = proc.stdout.readline().strip()
    assert run_id
    cli.wait_until(run_id, lambda v: any(sh["status"] == "running" for sh in _shards(v, "B")))
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)

    # the jobs were detached: they finish without the submitter; status sees them through
    view = cli.wait_until(run_id, lambda v: v["status"] not in ("queued", "running"))
    assert view["status"] == "failed"
    assert [sh["status"] for sh in _shards(view, "B")] == ["succeeded", "succeeded", "failed", "succeeded"]
    ok.touch()
    r = cli("resume", run_id, "--wait")
    assert r.returncode == 0, r.stderr
    assert _ran(log) == {"A": 1, "B0": 1, "B1": 1, "B2": 2, "B3": 1, "C": 1}
    assert _attempts(home) == {"A[0]": 1, "B[0]": 1, "B[1]": 1, "B[2]": 2, "B[3]": 1, "C[0]": 2}


def test_submit_returns_at_once_and_the_dag_runs_unattended(cli, tmp_path):
    recipe, log, ok = _recipe(tmp_path, sleep=5)
    ok.touch()
    r = cli("submit", recipe)
    assert r.returncode == 0, r.stderr
    run_id = r.stdout.strip()
    assert "C" not in _ran(log)  # submit came back before the DAG ran; C waits for B's 5 s shards
    assert cli.status(run_id)["status"] in ("queued", "running")
    view = cli.wait_until(run_id, lambda v: v["status"] in ("succeeded", "failed"))
    assert view["status"] == "succeeded"
    assert _ran(log) == {"A": 1, "B0": 1, "B1": 1, "B2": 1, "B3": 1, "C": 1}
    for step in view["steps"]:
        for shard in step["shards"]:
            (attempt,) = shard["attempts"]
            assert attempt["job_id"] and attempt["state"] == "succeeded"
            assert attempt["started_at"] and attempt["ended_at"]


def test_resume_of_a_running_run_is_refused(cli, home, tmp_path):
    recipe, log, ok = _recipe(tmp_path, sleep=60)
    ok.touch()  # no shard fails on its own: the run ends only by the cancel below
    run_id = cli("submit", recipe).stdout.strip()
    cli.wait_until(run_id, lambda v: any(sh["status"] == "running" for sh in _shards(v, "B")))
    before = _attempts(home)
    r = cli("resume", run_id)
    assert r.returncode == 2 and "still running" in r.stderr
    assert _attempts(home) == before
    r = cli("cancel", run_id)
    assert r.returncode == 0, r.stderr
    view = cli.status(run_id)
    assert view["status"] == "cancelled"
    b = [sh["status"] for sh in _shards(view, "B")]
    assert "cancelled" in b and set(b) <= {"cancelled", "succeeded"}
    for shard in _shards(view, "B"):
        if shard["status"] == "cancelled":
            assert shard["attempts"][-1]["reason"] == "cancelled by user"
    assert _shards(view, "C")[0]["status"] == "cancelled"
    time.sleep(1)
    assert "C" not in _ran(log)


def test_cancelled_step_can_be_resumed(cli, tmp_path):
    recipe, log, ok = _recipe(tmp_path, sleep=20)
    ok.touch()
    run_id = cli("submit", recipe).stdout.strip()
    cli.wait_until(run_id, lambda v: _shards(v, "B")[0]["status"] == "running")
    assert cli("cancel", run_id, "B").returncode == 0
    view = cli.wait_until(run_id, lambda v: v["status"] not in ("queued", "running"))
    assert view["status"] == "cancelled"
    c_attempt = _shards(view, "C")[0]["attempts"][-1]
    assert c_attempt["state"] == "cancelled" and "dependency" in c_attempt["reason"]
    assert "C" not in _ran(log)
    # the cancelled shard's log says what happened; no traceback of an interrupt
    b0 = Path(_shards(view, "B")[0]["attempts"][-1]["stderr"]).read_text()
    assert "cancelled by user" in b0 and "Traceback" not in b0


def test_done_shard_is_not_run_again_even_by_a_stray_job(cli, tmp_path):
    """A job for a shard whose DONE marker exists does nothing (idempotent steps)."""
    from llmjobs.jobs.runner import run_shard
    from llmjobs.jobs.task import ShardTask

    recipe, log, ok = _recipe(tmp_path)
    ok.touch()
    r = cli("submit", recipe, "--wait")
    assert r.returncode == 0, r.stderr
    view = cli.status(r.stdout.split()[0])
    b = next(s for s in view["steps"] if s["name"] == "B")
    task = ShardTask(run_id=view["id"], step="B", kind="shell", shard=1, num_shards=4,
                     params={"command": f"echo again >> {log}"}, output_dir=b["output"],
                     state_dir=str(Path(view["run_dir"]) / ".llmjobs" / "B"))
    assert run_shard(task) == {"skipped": True}
    assert "again" not in _ran(log)


def test_python_kind_gets_params_and_context(cli, tmp_path, monkeypatch):
    mod = tmp_path / "mymod.py"
    mod.write_text("import json\n"
                   "def work(ctx, factor, items):\n"
                   "    out = ctx.output_dir / f'part-{ctx.shard}.json'\n"
                   "    out.write_text(json.dumps({'shard': ctx.shard, 'of': ctx.num_shards, 'factor': factor,\n"
                   "        'items': items, 'ckpt': str(ctx.checkpoint_dir), 'attempt': ctx.attempt}))\n"
                   "    return {'written': out.name}\n")
    recipe = tmp_path / "py.yaml"
    recipe.write_text("name: py\nsteps:\n  p:\n    kind: python\n    shards: 2\n"
                      "    params: {function: 'mymod:work', factor: 3, items: [a, b]}\n")
    cli.env["PYTHONPATH"] = str(tmp_path)
    r = cli("submit", recipe, "--set", "steps.p.params.factor=7", "--wait")
    assert r.returncode == 0, r.stderr
    view = cli.status(r.stdout.split()[0])
    out = Path(view["steps"][0]["output"])
    parts = [json.loads((out / f"part-{i}.json").read_text()) for i in range(2)]
    assert [p["shard"] for p in parts] == [0, 1]
    assert all(p["of"] == 2 and p["factor"] == 7 and p["items"] == ["a", "b"] and p["attempt"] == 1 for p in parts)
    assert parts[1]["ckpt"].endswith("shard-00001")


def test_logs_prints_the_attempts_output(cli, tmp_path):
    recipe = tmp_path / "hello.yaml"
    recipe.write_text("name: hello\nsteps:\n  h:\n    kind: shell\n    params: {command: 'echo out-$LLMJOBS_PARAM_WHO; echo err-line >&2', who: there}\n")
    r = cli("submit", recipe, "--wait")
    run_id = r.stdout.split()[0]
    r = cli("logs", run_id, "h")
    assert r.returncode == 0
    assert "out-there" in r.stdout and "err-line" in r.stdout
    assert cli("logs", run_id, "h", "--attempt", "5").returncode == 2
    assert cli("logs", run_id, "nope").returncode == 2


def test_status_table_runs_list_and_dry_run(cli, home, tmp_path):
    recipe, log, ok = _recipe(tmp_path)
    r = cli("submit", recipe, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "### step B (kind shell, 4 shard(s))" in r.stdout and "waits for: <A[0]>" in r.stdout
    assert not (home / "registry.db").exists()  # a dry run records nothing
    assert not log.exists()

    ok.touch()
    run_id = cli("submit", recipe, "--name", "my run", "--wait").stdout.split()[0]
    assert run_id.startswith("my-run-")
    table = cli("status", run_id[:9]).stdout
    assert "succeeded" in table and "4/4" in table
    listed = json.loads(cli("runs", "--json").stdout)
    assert [(x["id"], x["name"], x["status"]) for x in listed] == [(run_id, "my run", "succeeded")]


def test_slots_cap_parallel_shards(cli, tmp_path):
    """With max_parallel: 2, never more than two shards run at once."""
    profile = tmp_path / "two.yaml"
    profile.write_text("backend: local\nscheduler: {max_parallel: 2}\n")
    stamp = tmp_path / "stamps"
    recipe = tmp_path / "many.yaml"
    recipe.write_text("name: many\nsteps:\n  m:\n    kind: shell\n    shards: 5\n    params:\n"
                      f"      command: 'echo start $(date +%s.%N) >> {stamp}; sleep 1; echo end $(date +%s.%N) >> {stamp}'\n")
    r = cli("submit", recipe, "--cluster", profile, "--wait")
    assert r.returncode == 0, r.stderr
    events = sorted((float(t), kind) for kind, t in (line.split() for line in stamp.read_text().splitlines()))
    running, peak = 0, 0
    for _, kind in events:
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    assert peak == 2


def test_logs_follow_streams_until_the_attempt_ends(cli, tmp_path):
    go = tmp_path / "go"
    recipe = tmp_path / "slowlog.yaml"
    # the job holds after its first line until the test is following, so a fast machine cannot outrun it
    recipe.write_text("name: slowlog\nsteps:\n  s:\n    kind: shell\n"
                      f"    params: {{command: 'echo line-1; while [ ! -e {go} ]; do sleep 0.2; done; "
                      "for i in 2 3; do echo line-$i; sleep 1; done'}\n")
    run_id = cli("submit", recipe).stdout.strip()
    cli.wait_until(run_id, lambda v: v["steps"][0]["shards"][0]["attempts"]
                   and v["steps"][0]["shards"][0]["attempts"][0]["state"] == "running")
    follow = cli.popen("logs", run_id, "s", "--follow")
    time.sleep(1)
    go.touch()
    out, _ = follow.communicate(timeout=120)
    assert follow.returncode == 0
    assert [x for x in out.split() if x.startswith("line-")] == ["line-1", "line-2", "line-3"]
    assert cli.status(run_id)["status"] == "succeeded"


def test_a_run_recorded_in_postgresql(cli, tmp_path, postgres_url):
    """The same CLI with --registry on a real PostgreSQL server: submit, fail, resume, list."""
    recipe, log, ok = _recipe(tmp_path)
    r = cli("--registry", postgres_url, "submit", recipe, "--wait")
    assert r.returncode == 1, r.stderr
    run_id = r.stdout.split()[0]
    ok.touch()
    assert cli("--registry", postgres_url, "resume", run_id, "--wait").returncode == 0
    listed = json.loads(cli("--registry", postgres_url, "runs", "--json").stdout)
    assert [(x["id"], x["status"]) for x in listed] == [(run_id, "succeeded")]
    assert _ran(log) == {"A": 1, "B0": 1, "B1": 1, "B2": 2, "B3": 1, "C": 1}
    assert not (Path(cli.env["LLMJOBS_HOME"]) / "registry.db").exists()  # nothing went to SQLite


CHECKPOINTING = """
import time


def work(ctx):
    ctx.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    progress = ctx.checkpoint_dir / "progress"
    with open(ctx.output_dir / "starts.txt", "a") as f:
        f.write("start\\n")
    if not progress.exists():
        progress.write_text("half")  # what a real step saves as it goes
        time.sleep(600)  # the walltime's checkpoint signal interrupts this
    (ctx.output_dir / "result.txt").write_text("resumed from " + progress.read_text())
"""


@pytest.mark.parametrize("requeues", [1, 0])
def test_timeout_requeues_a_checkpointing_step(requeues, cli, tmp_path):
    """On its walltime signal a step with requeues left is requeued and continues from its checkpoint;
    without requeues it fails with reason timeout, and resume picks it up from the same checkpoint."""
    (tmp_path / "ckmod.py").write_text(CHECKPOINTING)
    recipe = tmp_path / "ck.yaml"
    recipe.write_text(f"name: ck\nsteps:\n  w:\n    kind: python\n    requeues: {requeues}\n"
                      "    resources: {walltime: '00:01:00'}\n    params: {function: 'ckmod:work'}\n")
    cli.env["PYTHONPATH"] = str(tmp_path)
    r = cli("submit", recipe, "--wait", timeout=400)
    run_id = r.stdout.split()[0]
    out = Path(cli.status(run_id)["steps"][0]["output"])
    if requeues:
        assert r.returncode == 0, r.stderr
        assert (out / "starts.txt").read_text().split() == ["start", "start"]  # one job, started twice
        (attempt,) = cli.status(run_id)["steps"][0]["shards"][0]["attempts"]
        assert attempt["state"] == "succeeded"
    else:
        assert r.returncode == 1
        (attempt,) = cli.status(run_id)["steps"][0]["shards"][0]["attempts"]
        assert (attempt["state"], attempt["reason"]) == ("failed", "timeout")
        assert cli("resume", run_id, "--wait", timeout=400).returncode == 0
    assert (out / "result.txt").read_text() == "resumed from half"


# ---- the local scheduler itself: queue rows, session liveness, fresh jobs, thousands of shards -------------


def _queue_row(home: Path, job_id: str) -> dict:
    con = sqlite3.connect(home / "local" / "queue.db")
    con.row_factory = sqlite3.Row
    row = dict(con.execute("SELECT * FROM jobs WHERE id = ?", (int(job_id),)).fetchone())
    con.close()
    return row


def test_a_command_outliving_its_killed_worker_keeps_the_shard_running(cli, home, tmp_path):
    """Killing the job's Python process leaves its shell command running: the shard stays running (one
    session), resume is refused, and the second attempt starts only after the command ended."""
    log, release = tmp_path / "ran.log", tmp_path / "release"
    recipe = tmp_path / "orphan.yaml"
    recipe.write_text("name: orphan\nsteps:\n  s:\n    kind: shell\n    params:\n      command: >-\n"
                      f"        echo start-$LLMJOBS_ATTEMPT >> {log}; while [ ! -e {release} ]; do sleep 0.2; done;\n"
                      f"        echo end-$LLMJOBS_ATTEMPT >> {log}\n")
    run_id = cli("submit", recipe).stdout.strip()
    view = cli.wait_until(run_id, lambda v: log.exists() and _shards(v, "s")[0]["status"] == "running")
    job_id = _shards(view, "s")[0]["attempts"][0]["job_id"]
    worker = _queue_row(home, job_id)["pid"]
    os.kill(worker, signal.SIGKILL)
    time.sleep(1.5)  # the dispatcher has reaped the worker by now
    view = cli.status(run_id)
    assert _shards(view, "s")[0]["status"] == "running"
    r = cli("resume", run_id)
    assert r.returncode == 2 and "still running" in r.stderr
    release.touch()  # the command ends now; only then does the shard stop running
    view = cli.wait_until(run_id, lambda v: v["status"] not in ("queued", "running"))
    (attempt,) = _shards(view, "s")[0]["attempts"]
    assert attempt["state"] == "failed" and "killed by signal 9" in attempt["reason"]
    assert attempt["exit_code"] == 137
    assert cli("resume", run_id, "--wait").returncode == 0
    assert log.read_text().split() == ["start-1", "end-1", "start-2", "end-2"]  # never two at once


def test_fresh_jobs_are_never_lost_and_exit_codes_are_kept(home, tmp_path):
    """Polled from the first instant after submit, a job is queued or running, never lost (issue: an empty
    /proc/PID/cmdline of a just-spawned job read as a vanished process); a failed shard keeps its code."""
    from llmjobs.cluster.backends.base import JobRef, JobState, StepJob
    from llmjobs.cluster.backends.local import LocalBackend
    from llmjobs.cluster.profiles import Profile
    from llmjobs.jobs.task import ShardTask
    from llmjobs.resources import Resources

    backend = LocalBackend(Profile(name="t", scheduler={"max_parallel": 3}))
    n = 24
    tasks = [ShardTask(run_id="r", step="s", kind="shell", shard=i, num_shards=n, output_dir=str(tmp_path / "out"),
                       state_dir=str(tmp_path / "state"),
                       params={"command": "exit 3" if i == 5 else f"echo shard-{i}"}) for i in range(n)]
    job = StepJob(run_id="r", step="s", tasks=tasks, resources=Resources(walltime="00:05:00"),
                  folder=tmp_path / "logs")
    submitted = backend.submit(job)
    refs = [JobRef(s.job_id, s.folder) for s in submitted]
    seen: set[JobState] = set()
    deadline = time.time() + 120
    while time.time() < deadline:
        states = backend.poll(refs)
        seen |= {st.state for st in states.values()}
        if not any(st.state.live for st in states.values()):
            break
        time.sleep(0.01)
    assert JobState.LOST not in seen and JobState.QUEUED in seen
    failed = states[submitted[5].job_id]
    assert (failed.state, failed.exit_code) == (JobState.FAILED, 3) and "code 3" in failed.reason
    assert all(states[s.job_id].state == JobState.SUCCEEDED for i, s in enumerate(submitted) if i != 5)
    assert Path(submitted[7].stdout).read_text().strip() == "shard-7"


def _backend_processes(home: Path) -> int:
    """Processes of the local backend of this home: the dispatcher, its jobs and everything in their sessions."""
    from llmjobs.cluster.backends.local.procs import sessions

    mine = set()
    needle = f"llmjobs.cluster.backends.local.dispatcher\0{home / 'local'}".encode()
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and needle in Path(f"/proc/{pid}/cmdline").read_bytes():
                mine.add(int(pid))
        except OSError:
            continue
    live = sessions()
    return len(mine | {p for sid, pids in live.items() if sid in mine for p in pids})


@pytest.mark.slow
def test_two_thousand_shards_run_with_a_bounded_process_count(cli, home, tmp_path):
    (tmp_path / "noop.py").write_text("def mark(ctx):\n    (ctx.output_dir / str(ctx.shard)).touch()\n")
    log = tmp_path / "ran.log"
    recipe = tmp_path / "wide.yaml"
    recipe.write_text("name: wide\nsteps:\n  m:\n    kind: python\n    shards: 2000\n"
                      "    params: {function: 'noop:mark'}\n"
                      f"  c:\n    kind: shell\n    params: {{command: 'echo c >> {log}; ls ${{steps.m.output}} | wc -l > n'}}\n")
    profile = tmp_path / "four.yaml"
    profile.write_text("backend: local\nscheduler: {max_parallel: 4}\n")
    cli.env["PYTHONPATH"] = str(tmp_path)
    r = cli("submit", recipe, "--cluster", profile)
    assert r.returncode == 0, r.stderr
    run_id = r.stdout.strip()
    peak, deadline = 0, time.time() + 240
    while not log.exists() and time.time() < deadline:
        peak = max(peak, _backend_processes(home))
        time.sleep(0.05)
    assert log.exists(), "the successor step never ran"
    assert 1 <= peak <= 4 + 2
    view = cli.wait_until(run_id, lambda v: v["status"] not in ("queued", "running"), timeout=120)
    assert view["status"] == "succeeded"
    assert log.read_text().split() == ["c"]
    out = next(s["output"] for s in view["steps"] if s["name"] == "c")
    assert (Path(out) / "n").read_text().strip() == "2000"


def test_a_job_outliving_its_dispatcher_starts_a_new_one_and_the_dag_goes_on(home, tmp_path):
    """With its dispatcher killed and no llmjobs command running, a finishing job starts a dispatcher, which
    records it and runs the step after it."""
    from llmjobs.cluster.backends.base import JobRef, JobState, StepJob
    from llmjobs.cluster.backends.local import LocalBackend
    from llmjobs.cluster.profiles import Profile
    from llmjobs.jobs.task import ShardTask, done_marker
    from llmjobs.resources import Resources

    backend = LocalBackend(Profile(name="t"))
    release, out = tmp_path / "release", tmp_path / "out"

    def step(name: str, command: str, after: list[JobRef]) -> list[JobRef]:
        task = ShardTask(run_id="r", step=name, kind="shell", shard=0, num_shards=1, params={"command": command},
                         output_dir=str(out), state_dir=str(tmp_path / name))
        (sub,) = backend.submit(StepJob(run_id="r", step=name, tasks=[task], after=after,
                                        resources=Resources(walltime="00:05:00"), folder=tmp_path / "logs" / name))
        return [JobRef(sub.job_id, sub.folder, str(done_marker(tmp_path / name, 0)))]

    a = step("a", f"while [ ! -e {release} ]; do sleep 0.1; done", [])
    b = step("b", "touch b-ran", a)
    lock = home / "local" / "dispatcher.lock"
    deadline = time.time() + 60
    while backend.poll(a)[a[0].job_id].state != JobState.RUNNING and time.time() < deadline:
        time.sleep(0.1)
    dispatcher = int(lock.read_text())
    os.kill(dispatcher, signal.SIGKILL)
    time.sleep(0.5)
    release.touch()
    while not (out / "b-ran").exists() and time.time() < deadline:  # nothing polls meanwhile
        time.sleep(0.1)
    assert (out / "b-ran").exists()
    assert int(lock.read_text()) != dispatcher
    # b's command has run; its wrapper may still be writing the outcome, so wait for b to leave `running`.
    while backend.poll(b)[b[0].job_id].state.live and time.time() < deadline:
        time.sleep(0.1)
    states = backend.poll(a + b)
    assert [states[r.job_id].state for r in a + b] == [JobState.SUCCEEDED, JobState.SUCCEEDED]


def test_a_job_from_another_interpreter_is_exec_d_not_forked(home, tmp_path, monkeypatch):
    """The dispatcher forks jobs only for its own interpreter and llmjobs; a submission from another one
    (here the same venv through another name) is exec'd there, with the same session, logs and outcome."""
    from llmjobs.cluster.backends.base import JobRef, JobState, StepJob
    from llmjobs.cluster.backends.local import LocalBackend
    from llmjobs.cluster.profiles import Profile
    from llmjobs.jobs.task import ShardTask
    from llmjobs.resources import Resources

    backend = LocalBackend(Profile(name="t", scheduler={"max_parallel": 2}))
    release = tmp_path / "release"

    def submit(name: str, command: str) -> JobRef:
        task = ShardTask(run_id="r", step=name, kind="shell", shard=0, num_shards=1, params={"command": command},
                         output_dir=str(tmp_path / "out"), state_dir=str(tmp_path / name))
        (sub,) = backend.submit(StepJob(run_id="r", step=name, tasks=[task], resources=Resources(walltime="00:05:00"),
                                        folder=tmp_path / "logs" / name))
        return JobRef(sub.job_id, sub.folder)

    # a first job keeps the dispatcher (started with this interpreter) alive
    holder = submit("hold", f"while [ ! -e {release} ]; do sleep 0.1; done")
    deadline = time.time() + 60  # the holder runs: its dispatcher (this interpreter) is up before we switch
    while backend.poll([holder])[holder.job_id].state != JobState.RUNNING and time.time() < deadline:
        time.sleep(0.1)
    other = Path(sys.executable).with_name("python3" if Path(sys.executable).name != "python3" else "python")
    assert other.exists() and str(other) != sys.executable
    monkeypatch.setattr(sys, "executable", str(other))
    ref = submit("other", "tr '\\0' ' ' < /proc/$PPID/cmdline > parent.txt")
    deadline = time.time() + 60
    while backend.poll([ref])[ref.job_id].state.live and time.time() < deadline:
        time.sleep(0.1)
    release.touch()
    assert backend.poll([ref])[ref.job_id].state == JobState.SUCCEEDED
    parent = (tmp_path / "out" / "parent.txt").read_text()
    assert parent.startswith(f"{other} -u -m llmjobs.cluster.backends.local.job ")
    while backend.poll([holder])[holder.job_id].state.live and time.time() < deadline:
        time.sleep(0.1)


def test_only_a_jobs_own_session_may_be_signalled():
    """A job id is a queue row (1, 2, ...), not a session: a wrong id must never reach ``kill``/``killpg``.
    The signalling itself is checked only on the caller's own session, in a process of its own session, so a
    broken guard ends that process and nothing else (signalling session 0 or 1 for real would end the
    machine's other processes)."""
    from llmjobs.cluster.backends.local.procs import may_signal

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        assert [may_signal(sid) for sid in (0, 1, os.getsid(0), child.pid)] == [False, False, False, True]
    finally:
        child.kill()
        child.wait()
    code = ("import os, signal\n"
            "from llmjobs.cluster.backends.local.procs import signal_session\n"
            "signal_session(os.getsid(0), signal.SIGKILL)\n"
            "print('alive')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       start_new_session=True, check=False)
    assert (r.returncode, r.stdout.strip()) == (0, "alive"), r.stderr


def test_a_job_computes_on_its_cpus_threads(home, tmp_path, monkeypatch):
    """A local job's torch/BLAS thread pools are bounded by its `cpus` (two jobs side by side must not each
    start a thread per core); a value the user set is kept."""
    from llmjobs.cluster.backends.base import JobRef, JobState, StepJob
    from llmjobs.cluster.backends.local import LocalBackend
    from llmjobs.cluster.profiles import Profile
    from llmjobs.jobs.task import ShardTask
    from llmjobs.resources import Resources

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    backend = LocalBackend(Profile(name="t"))
    probe = (f"{sys.executable} -c 'import os, torch; print(os.environ.get(\"OMP_NUM_THREADS\"), "
             "torch.get_num_threads())' > threads")

    def run(name: str, cpus: int) -> str:
        out = tmp_path / name
        task = ShardTask(run_id="r", step=name, kind="shell", shard=0, num_shards=1, params={"command": probe},
                         output_dir=str(out), state_dir=str(tmp_path / f"{name}-state"))
        (sub,) = backend.submit(StepJob(run_id="r", step=name, tasks=[task], after=[],
                                        resources=Resources(cpus=cpus, walltime="00:05:00"),
                                        folder=tmp_path / "logs" / name))
        ref = JobRef(sub.job_id, sub.folder, None)
        deadline = time.time() + 120
        while backend.poll([ref])[ref.job_id].state.live and time.time() < deadline:
            time.sleep(0.1)
        assert backend.poll([ref])[ref.job_id].state == JobState.SUCCEEDED
        return (out / "threads").read_text().split()

    assert run("two", 2) == ["2", "2"]
    assert run("one", 1) == ["1", "1"]
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert run("user", 1) == ["2", "2"]
