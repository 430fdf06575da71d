"""The submitit plugin end to end through the PBS command emulator: ``submitit.AutoExecutor(cluster="pbs")``
running real functions as real processes, arrays, failures, qdel, and the emulator's injected faults
(transient qstat errors, PBS 2022's invalid JSON, jobs that vanish from the server)."""

from __future__ import annotations

import sys
import time

import cloudpickle
import pytest
import submitit

from llmjobs.cluster.backends.base import JobState
from llmjobs.cluster.pbs import tracking
from llmjobs.cluster.pbs.executor import PBSExecutor, PBSJob

pytestmark = pytest.mark.timeout(180)
# the jobs cannot import this test module: ship its functions by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _boom(x):
    raise ValueError(f"bad input {x}")


def _sleep(seconds):
    time.sleep(seconds)
    return seconds


def _executor(folder, **params) -> submitit.AutoExecutor:
    ex = submitit.AutoExecutor(folder, cluster="pbs")
    ex.update_parameters(timeout_min=5, name="t", pbs_project="gtest", **params)
    return ex


def _wait_state(job, states, timeout=60.0) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = job.watcher.get_state(job.job_id, mode="force")
        if state in states:
            return state
        time.sleep(0.2)
    raise AssertionError(f"{job.job_id} never reached {states}; last {state}")


def test_auto_executor_finds_the_plugin(pbs_server, tmp_path):
    ex = _executor(tmp_path / "logs")
    assert isinstance(ex._executor, PBSExecutor)
    job = ex.submit(pow, 3, 4)
    assert isinstance(job, PBSJob)
    assert job.job_id == "1.pbs1"  # exactly as qsub printed it
    assert job.result() == 81
    assert _wait_state(job, {"SUCCEEDED"}) == "SUCCEEDED"
    assert "#PBS -P gtest" in job.paths.submission_file.read_text()
    assert tracking.exit_path(tmp_path / "logs", job.job_id).read_text().strip() == "0"


def test_array_and_job_environment(pbs_server, tmp_path):
    ex = _executor(tmp_path / "logs")

    def whoami(i):
        env = submitit.JobEnvironment()
        return (i, env.job_id, env.array_task_id, env.global_rank, env.num_nodes, env.cluster)

    jobs = ex.map_array(whoami, [0, 1, 2])
    assert [j.job_id for j in jobs] == ["1[0].pbs1", "1[1].pbs1", "1[2].pbs1"]
    results = [j.result() for j in jobs]
    assert results == [(i, f"1[{i}].pbs1", str(i), 0, 1, "pbs") for i in range(3)]
    assert {_wait_state(j, {"SUCCEEDED"}) for j in jobs} == {"SUCCEEDED"}


def test_failure_is_reported_with_exit_code(pbs_server, tmp_path):
    job = _executor(tmp_path / "logs").submit(_boom, 7)
    with pytest.raises(submitit.core.utils.FailedJobError, match="bad input 7"):
        job.result()
    assert _wait_state(job, {"FAILED"}) == "FAILED"
    assert job.get_info(mode="cache")["Reason"] == "exit code 1"


def test_qdel_of_a_running_job_is_cancelled(pbs_server, tmp_path):
    job = _executor(tmp_path / "logs").submit(_sleep, 60)
    _wait_state(job, {"RUNNING"})
    job.cancel()
    assert _wait_state(job, {"CANCELLED", "FAILED", "SUCCEEDED"}) == "CANCELLED"
    # the TERM trap still wrote the exit sentinel
    deadline = time.time() + 10
    while not tracking.exit_path(tmp_path / "logs", job.job_id).exists() and time.time() < deadline:
        time.sleep(0.1)
    assert tracking.exit_path(tmp_path / "logs", job.job_id).read_text().strip() == "143"


def test_transient_qstat_errors_are_retried(pbs_server, tmp_path):
    job = _executor(tmp_path / "logs").submit(pow, 2, 5)
    assert job.result() == 32
    _wait_state(job, {"SUCCEEDED"})  # the result pickle comes a moment before PBS records the end
    pbs_server.inject("qstat_transient", count=2)  # fewer than the retries
    statuses = tracking.poll([tracking.JobKey(job.job_id, str(tmp_path / "logs"))])
    assert statuses[job.job_id].state == JobState.SUCCEEDED
    pbs_server.inject("qstat_transient", count=50)  # the server stays down: no answer, no verdict
    assert tracking.poll([tracking.JobKey(job.job_id, str(tmp_path / "logs"))]) == {}


def test_invalid_json_from_qstat_is_read(pbs_server, tmp_path):
    job = _executor(tmp_path / "logs").submit(pow, 2, 6)
    assert job.result() == 64
    _wait_state(job, {"SUCCEEDED"})
    pbs_server.inject("qstat_bad_json", count=1)
    statuses = tracking.poll([tracking.JobKey(job.job_id, str(tmp_path / "logs"))])
    assert statuses[job.job_id].state == JobState.SUCCEEDED


def test_vanished_jobs_resolve_from_sentinels(pbs_server, tmp_path):
    folder = tmp_path / "logs"
    ok = _executor(folder).submit(pow, 2, 2)
    bad = _executor(folder).submit(_boom, 1)
    assert ok.result() == 4
    with pytest.raises(submitit.core.utils.FailedJobError):
        bad.result()
    _wait_state(ok, {"SUCCEEDED"})
    _wait_state(bad, {"FAILED"})
    for job in (ok, bad):
        pbs_server.inject("vanish", job_id=job.job_id)
    keys = [tracking.JobKey(j.job_id, str(folder)) for j in (ok, bad)]
    got = tracking.poll(keys)
    assert got[ok.job_id].state == JobState.SUCCEEDED
    assert got[bad.job_id].state == JobState.FAILED and got[bad.job_id].exit_code == 1
    # a job PBS never heard of and that never started: nothing until the grace period, then lost
    ghost = tracking.JobKey("999.pbs1", str(folder))
    assert tracking.poll([ghost], grace_s=3600) == {}
    assert tracking.poll([ghost], grace_s=0)["999.pbs1"].state == JobState.LOST


def test_qsub_transient_error_is_retried(pbs_server, tmp_path):
    pbs_server.inject("qsub_transient", count=2)
    job = _executor(tmp_path / "logs").submit(pow, 5, 2)
    assert job.job_id == "1.pbs1"
    assert job.result() == 25


def test_qsub_refusal_is_a_clear_error(pbs_server, tmp_path):
    ex = submitit.AutoExecutor(tmp_path / "logs", cluster="pbs")
    ex.update_parameters(timeout_min=5)  # no -P: the emulated server requires a project, as ABCI does
    with pytest.raises(submitit.core.utils.FailedSubmissionError, match="qsub"):
        ex.submit(pow, 1, 1)


def test_walltime_kill_is_a_timeout(pbs_server, tmp_path):
    from llmjobs.cluster.pbs import commands
    from llmjobs.cluster.pbs.script import render_script

    folder = tmp_path / "logs"
    folder.mkdir()
    script = folder / "long.sh"
    script.write_text(render_script("sleep 60", folder, project="gtest", walltime="00:00:02", modules_init=None))
    job_id = commands.qsub(script)
    key = tracking.JobKey(job_id, str(folder))
    deadline = time.time() + 60
    while time.time() < deadline:
        status = tracking.poll([key]).get(job_id)
        if status is not None and not status.state.live:
            break
        time.sleep(0.3)
    assert status.state == JobState.FAILED and status.reason == "timeout", status
