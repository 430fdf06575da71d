"""The Slurm backend against the real testbed: arrays, afterok chains, states and reasons, validation."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from llmjobs.cluster.backends.base import JobRef, JobState
from llmjobs.errors import UserError
from llmjobs.jobs.task import ShardTask, done_marker, read_done
from llmjobs.resources import Resources

from .conftest import all_ended, refs, shell_tasks, step_job, wait_until

pytestmark = pytest.mark.slurm


def test_three_step_dag_runs_on_the_cluster_alone(backend, tmp_path):
    """All three steps are queued at once; Slurm alone orders them through afterok."""
    a = backend.submit(step_job(tmp_path, "a", shell_tasks(tmp_path, "a", "seq 1 8 > numbers; date +%s.%N > t")))
    b = backend.submit(step_job(tmp_path, "b", shell_tasks(
        tmp_path, "b", 'awk -v s=$LLMJOBS_SHARD \'NR % 4 == s {t += $1} END {print t}\' ../a/numbers '
                       '> part-$LLMJOBS_SHARD; date +%s.%N > t-$LLMJOBS_SHARD', shards=4), after=refs(a)))
    c = backend.submit(step_job(tmp_path, "c", shell_tasks(tmp_path, "c", "cat ../b/part-* | paste -sd+ | bc > total"
                                                          if shutil.which("bc") else
                                                          "awk '{t += $1} END {print t}' ../b/part-* > total"),
                                after=refs(b)))
    # one array job for the 4 shards, ids as Slurm prints them
    base = b[0].job_id.split("_")[0]
    assert [s.job_id for s in b] == [f"{base}_{i}" for i in range(4)]
    jobs = refs(a + b + c)
    statuses = wait_until(backend, jobs, all_ended(jobs))
    assert {k: v.state for k, v in statuses.items()} == {j.job_id: JobState.SUCCEEDED for j in jobs}
    assert (tmp_path / "c" / "total").read_text().strip() == "36"
    # b started only after a had finished
    t_a = float((tmp_path / "a" / "t").read_text())
    assert all(float((tmp_path / "b" / f"t-{i}").read_text()) > t_a for i in range(4))
    assert all(read_done(done_marker(tmp_path / ".state" / "b", i)) for i in range(4))
    assert {statuses[s.job_id].nodes for s in b} <= {"n1", "n2"}


def test_failed_job_and_unsatisfiable_dependency(backend, tmp_path):
    a = backend.submit(step_job(tmp_path, "a", shell_tasks(tmp_path, "a", "exit 3")))
    b = backend.submit(step_job(tmp_path, "b", shell_tasks(tmp_path, "b", "touch ran"), after=refs(a)))
    jobs = refs(a + b)
    statuses = wait_until(backend, jobs, all_ended(jobs), timeout=120)
    failed, waiting = statuses[a[0].job_id], statuses[b[0].job_id]
    assert failed.state == JobState.FAILED and failed.exit_code == 1  # the runner's python exits 1
    assert waiting.state == JobState.FAILED and waiting.reason == "dependency failed"
    assert _queue().split().count(b[0].job_id) == 0  # not left pending forever
    # queued after its dependency had already failed: Slurm ends it with no reason given
    c = backend.submit(step_job(tmp_path, "c", shell_tasks(tmp_path, "c", "touch ran"), after=refs(a)))
    late = wait_until(backend, refs(c), all_ended(refs(c)), timeout=120)[c[0].job_id]
    assert (late.state, late.reason) == (JobState.FAILED, "dependency failed")
    assert not (tmp_path / "b" / "ran").exists() and not (tmp_path / "c" / "ran").exists()


def test_cancelled_array_task(backend, tmp_path):
    sub = backend.submit(step_job(tmp_path, "s", shell_tasks(tmp_path, "s", "sleep 20; touch done-$LLMJOBS_SHARD",
                                                             shards=3)))
    # a user's scancel of one task (llmjobs cancels whole arrays: see test_cancel.py)
    subprocess.run(["scancel", sub[1].job_id], check=True, timeout=60)
    jobs = refs(sub)
    statuses = wait_until(backend, jobs, all_ended(jobs), timeout=180)
    assert statuses[sub[1].job_id].state == JobState.CANCELLED
    assert statuses[sub[1].job_id].reason.startswith("cancelled")
    assert [statuses[s.job_id].state for s in (sub[0], sub[2])] == [JobState.SUCCEEDED] * 2
    assert sorted(p.name for p in (tmp_path / "s").glob("done-*")) == ["done-0", "done-2"]


def test_poll_costs_one_sacct_for_fifty_jobs(backend, tmp_path, monkeypatch):
    """50 live jobs (4 arrays of 10 and 10 single jobs) are tracked with one sacct call per poll."""
    real = shutil.which("sacct")
    wrap = tmp_path / "bin"
    wrap.mkdir()
    calls = tmp_path / "sacct-calls"
    (wrap / "sacct").write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {real} "$@"\n')
    (wrap / "sacct").chmod(0o755)
    blocker = subprocess.run(["sbatch", "--parsable", "--hold", "-A", "llm", "--wrap", "true"],
                             capture_output=True, text=True, check=True).stdout.strip()
    try:
        submitted = []
        for i in range(4):
            submitted += backend.submit(step_job(tmp_path, f"arr{i}", shell_tasks(tmp_path, f"arr{i}", "true", shards=10),
                                                 after=[JobRef(blocker, "")]))
        for i in range(10):
            submitted += backend.submit(step_job(tmp_path, f"one{i}", shell_tasks(tmp_path, f"one{i}", "true"),
                                                 after=[JobRef(blocker, "")]))
        jobs = refs(submitted)
        assert len(jobs) == 50
        monkeypatch.setenv("PATH", f"{wrap}{os.pathsep}{os.environ['PATH']}")
        polls = 0
        for _ in range(30):  # new jobs reach the accounting database within seconds
            statuses = backend.poll(jobs)
            polls += 1
            if len(statuses) == 50:
                break
            time.sleep(1)
        statuses = backend.poll(jobs)
        polls += 1
        assert len(statuses) == 50
        assert {s.state for s in statuses.values()} == {JobState.QUEUED}
        assert len(calls.read_text().splitlines()) == polls
    finally:
        subprocess.run(["scancel", blocker], check=False)
        backend.cancel(refs(submitted))


@pytest.mark.parametrize("change, slurm_says", [
    ({"scheduler": {"partition": "nosuch"}}, "Invalid partition name"),
    ({"scheduler": {"account": "nosuch"}}, "Invalid account"),
    ({"resources": {"gpus_per_node": 1}}, "Requested node configuration is not available"),
    ({"resources": {"walltime": "01:00:00"}}, "time limit"),
    ({"scheduler": {"partition": "short"}, "resources": {"walltime": "00:05:00"}}, "time limit"),
    ({"resources": {"nodes": 3}}, "node"),
])
def test_validate_refuses_with_slurms_reason(profile, change, slurm_says):
    from llmjobs.cluster.backends.slurm import SlurmBackend

    data = profile.model_dump()
    data["scheduler"] = {**data["scheduler"], **change.get("scheduler", {})}
    backend = SlurmBackend(type(profile).model_validate(data))
    before = _queue()
    with pytest.raises(UserError) as e:
        backend.validate("train", Resources(**{"walltime": "00:10:00", **change.get("resources", {})}), 4)
    assert slurm_says.lower() in str(e.value).lower()
    assert "train" in str(e.value)
    assert _queue() == before  # nothing was queued


def test_validate_accepts_what_fits(backend):
    backend.validate("ok", Resources(nodes=2, walltime="00:10:00"), 8)


def _queue() -> str:
    return subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=False).stdout


def test_two_node_step_runs_one_rank_per_node(backend, tmp_path):
    cmd = 'echo "$SLURMD_NODENAME $LLMJOBS_RANK $LLMJOBS_WORLD_SIZE $LLMJOBS_HEAD_NODE $(hostname)" > rank-$LLMJOBS_RANK'
    sub = backend.submit(step_job(tmp_path, "multi", shell_tasks(tmp_path, "multi", cmd),
                                  resources=Resources(nodes=2, walltime="00:05:00")))
    statuses = wait_until(backend, refs(sub), all_ended(refs(sub)))
    assert statuses[sub[0].job_id].state == JobState.SUCCEEDED
    ranks = {}
    for i in (0, 1):
        node, rank, world, head, host = (tmp_path / "multi" / f"rank-{i}").read_text().split()
        ranks[node] = (int(rank), int(world), head)
        assert host  # the real hostname; both "nodes" share this machine
    assert ranks == {"n1": (0, 2, "n1"), "n2": (1, 2, "n1")}
    assert read_done(done_marker(tmp_path / ".state" / "multi", 0))["attempt"] == 1


def test_step_context_on_two_nodes(backend, tmp_path):
    """The python kind's context, printed by each rank into its own log (builtins:print as the function)."""
    task = ShardTask(run_id="t", step="ctx", kind="python", shard=0, num_shards=1,
                     params={"function": "builtins:print"}, output_dir=str(tmp_path / "ctx"),
                     state_dir=str(tmp_path / ".state" / "ctx"))
    sub = backend.submit(step_job(tmp_path, "ctx", [task], resources=Resources(nodes=2, walltime="00:05:00")))
    statuses = wait_until(backend, refs(sub), all_ended(refs(sub)))
    assert statuses[sub[0].job_id].state == JobState.SUCCEEDED
    folder = Path(sub[0].folder)
    for rank in (0, 1):
        log = (folder / f"{sub[0].job_id}_{rank}_log.out").read_text()
        assert f"rank={rank}, world_size=2, head_node='n1', hostnames=['n1', 'n2']" in log


def test_walltime_with_and_without_checkpoint(backend, tmp_path):
    """Both at once (one node each): the checkpointing shard is requeued and finishes from where it was;
    the other is ended by Slurm at its walltime (reason timeout) and a second attempt finishes it."""
    ckpt_cmd = (
        'f="$LLMJOBS_CHECKPOINT/progress"; mkdir -p "$LLMJOBS_CHECKPOINT"; n=$(cat "$f" 2>/dev/null || echo 0); '
        'echo "$n" >> starts; '
        'while [ "$n" -lt 10 ]; do sleep 10; n=$((n+1)); echo $n > "$f.tmp"; mv "$f.tmp" "$f"; done; echo $n > final')
    plain_cmd = 'if [ -e ../first-attempt-was-here ]; then echo ok > final; else touch ../first-attempt-was-here; sleep 600; fi'
    ck = backend.submit(step_job(tmp_path, "ckpt", shell_tasks(tmp_path, "ckpt", ckpt_cmd, requeues=2),
                                 walltime="00:02:00"))
    plain = backend.submit(step_job(tmp_path, "plain", shell_tasks(tmp_path, "plain", plain_cmd),
                                    walltime="00:01:00"))
    jobs = refs(ck + plain)
    statuses = wait_until(backend, jobs, all_ended(jobs), timeout=420, interval=5)

    assert statuses[ck[0].job_id].state == JobState.SUCCEEDED
    starts = [int(x) for x in (tmp_path / "ckpt" / "starts").read_text().split()]
    assert len(starts) >= 2 and starts[0] == 0 and starts[1] > 0  # requeued, resumed past zero
    assert (tmp_path / "ckpt" / "final").read_text().strip() == "10"
    assert read_done(done_marker(tmp_path / ".state" / "ckpt", 0)) is not None

    timed_out = statuses[plain[0].job_id]
    assert (timed_out.state, timed_out.reason) == (JobState.FAILED, "timeout")
    assert read_done(done_marker(tmp_path / ".state" / "plain", 0)) is None
    again = backend.submit(step_job(tmp_path, "plain", shell_tasks(tmp_path, "plain", plain_cmd, attempt=2),
                                    walltime="00:01:00", round=2))
    final = wait_until(backend, refs(again), all_ended(refs(again)))
    assert final[again[0].job_id].state == JobState.SUCCEEDED
    assert read_done(done_marker(tmp_path / ".state" / "plain", 0))["attempt"] == 2


def _slurmd_pid(node: str) -> int:
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    pattern = next(line.split("=", 1)[1].strip() for line in config.splitlines()
                   if line.startswith("SlurmdPidFile"))
    return int(Path(pattern.replace("%n", node)).read_text())


def _kill_job_processes(job_id: str) -> None:
    """A dead node takes its jobs with it; two slurmd on one host do not: the first attempt's processes
    would outlive their 'node' (and hold the shard's lock) until the restarted slurmd reaps them."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(f"slurmstepd: [{job_id}".encode()) or f"SLURM_JOB_ID={job_id}\0".encode() in environ:
            try:
                os.kill(int(proc.name), 9)
            except ProcessLookupError:
                pass


def test_slurmd_killed_gives_node_failure_then_resubmission_completes(backend, tmp_path):
    from .conftest import TESTBED

    cmd = 'if [ -e ../first-attempt-was-here ]; then echo ok > final; else touch ../first-attempt-was-here; sleep 600; fi'
    sub = backend.submit(step_job(tmp_path, "n", shell_tasks(tmp_path, "n", cmd)))
    running = wait_until(backend, refs(sub), lambda st: sub[0].job_id in st
                         and st[sub[0].job_id].state == JobState.RUNNING and (tmp_path / "first-attempt-was-here").exists())
    node = running[sub[0].job_id].nodes
    assert node in ("n1", "n2")
    try:
        os.kill(_slurmd_pid(node), 9)
        _kill_job_processes(sub[0].job_id)
        failed = wait_until(backend, refs(sub), all_ended(refs(sub)), timeout=240, interval=5)
        assert (failed[sub[0].job_id].state, failed[sub[0].job_id].reason) == (JobState.FAILED, "node failure")
    finally:
        subprocess.run(["bash", str(TESTBED), "node-start", node], check=True, timeout=180)
    again = backend.submit(step_job(tmp_path, "n", shell_tasks(tmp_path, "n", cmd, attempt=2), round=2))
    final = wait_until(backend, refs(again), all_ended(refs(again)))
    assert final[again[0].job_id].state == JobState.SUCCEEDED
    assert (tmp_path / "n" / "final").read_text().strip() == "ok"
