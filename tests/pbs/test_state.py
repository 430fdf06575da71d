"""qstat JSON parsing and state classification, on every ``qstat -f -F json`` output captured from a real
PBS server (OpenPBS 23.06, see ``captures/README.md``).

That server prints valid JSON; the invalid JSON of PBS Professional 2022 (bare numeric-looking values,
invalid escapes) is reproduced by editing a captured file the way the server's known bug prints it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmjobs.cluster.backends.base import JobState
from llmjobs.cluster.pbs import state

CAPTURES = Path(__file__).parent / "captures"


def capture(name: str) -> str:
    return (CAPTURES / name).read_text()


def capture_rc(name: str) -> int:
    return int((CAPTURES / f"{name}.rc").read_text())


def capture_stderr(name: str) -> str:
    path = CAPTURES / f"{name}.stderr"
    return path.read_text() if path.exists() else ""

# file -> {job id: (state, reason or None)}; every JSON capture is listed (test_every_capture_is_covered)
EXPECTED = {
    "11_qstat_f_json_running.json": {"13.vm": (JobState.RUNNING, None)},
    "12_qstat_f_json_queued.json": {"14.vm": (JobState.QUEUED, None)},
    "13_qstat_f_json_afterok_held.json": {"15.vm": (JobState.QUEUED, "waiting for dependency")},
    "14_qstat_f_json_array_parent_queued.json": {"16[].vm": (JobState.QUEUED, None)},
    "16_qstat_f_json_queued_before_qdel.json": {"17.vm": (JobState.QUEUED, None)},
    "18_qstat_x_f_json_deleted_while_queued.json": {"17.vm": (JobState.CANCELLED, "deleted")},
    "20_qstat_f_json_array_parent_running.json": {"16[].vm": (JobState.RUNNING, None)},
    "21_qstat_f_json_array_subjob.json": {"16[1].vm": (JobState.RUNNING, None)},
    "23_qstat_x_f_json_array_parent_finished.json": {"16[].vm": (JobState.SUCCEEDED, None)},
    "24_qstat_x_f_json_array_subjob_finished.json": {"16[1].vm": (JobState.SUCCEEDED, None)},
    "25_qstat_x_f_json_finished_ok.json": {"14.vm": (JobState.SUCCEEDED, None)},
    "26_qstat_x_f_json_finished_long.json": {"13.vm": (JobState.SUCCEEDED, None)},
    "27_qstat_x_f_json_afterok_finished.json": {"15.vm": (JobState.SUCCEEDED, None)},
    "31_qstat_x_f_json_failed_exit3.json": {"18.vm": (JobState.FAILED, "exit code 3")},
    "33_qstat_x_f_json_afterok_on_failed.json": {"19.vm": (JobState.CANCELLED, "dependency failed")},
    "41_qstat_f_json_running_before_qdel.json": {"20.vm": (JobState.RUNNING, None)},
    "43_qstat_x_f_json_deleted_while_running.json": {
        "20.vm": (JobState.CANCELLED, "deleted by pbsuser@localhost")},
    "44_qstat_f_json_deleted_without_x.json": {},
    "50_qstat_x_f_json_multi.json": {
        "14.vm": (JobState.SUCCEEDED, None), "18.vm": (JobState.FAILED, "exit code 3"),
        "20.vm": (JobState.CANCELLED, "deleted by pbsuser@localhost"), "16[].vm": (JobState.SUCCEEDED, None),
        "16[1].vm": (JobState.SUCCEEDED, None)},
    "61_qstat_f_json_unknown.json": {},
    "62_qstat_x_f_json_unknown.json": {},
    "63_qstat_x_f_json_known_and_unknown.json": {"14.vm": (JobState.SUCCEEDED, None)},
}


def test_every_capture_is_covered():
    json_files = {p.name for p in CAPTURES.glob("*_qstat_*json*.json")} - {"53_qstat_x_f_json_all.json",
                                                                           "70_qstat_Bf_json.json"}
    assert json_files == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_capture_states(name):
    jobs = state.jobs_from_qstat(capture(name))
    assert set(jobs) == set(EXPECTED[name])
    for job_id, (want_state, want_reason) in EXPECTED[name].items():
        status = state.classify(jobs[job_id])
        assert status.state == want_state, job_id
        if want_reason is not None:
            assert status.reason == want_reason, job_id


def test_all_jobs_history():
    """``qstat -x -f -F json`` of the whole server: every finished job classified, the tricky ones right."""
    jobs = state.jobs_from_qstat(capture("53_qstat_x_f_json_all.json"))
    got = {job_id: state.classify(attrs) for job_id, attrs in jobs.items()}
    assert all(not s.state.live for s in got.values())
    assert got["9.vm"].state == JobState.CANCELLED and got["9.vm"].reason == "dependency failed"
    assert got["8.vm"].state == JobState.FAILED and got["8.vm"].exit_code == 3
    assert got["12.vm"].state == JobState.CANCELLED and got["12.vm"].exit_code == 271
    assert got["10.vm"].reason == "deleted by root@localhost"
    assert got["7.vm"].state == JobState.CANCELLED


def test_running_job_details():
    attrs = state.jobs_from_qstat(capture("11_qstat_f_json_running.json"))["13.vm"]
    status = state.classify(attrs)
    assert status.nodes == "vm"
    assert status.started_at is not None and status.started_at.hour == 18 and status.started_at.minute == 43


def test_unknown_ids_from_stderr():
    name = "63_qstat_x_f_json_known_and_unknown.json"
    assert capture_rc(name) == 153
    assert state.unknown_ids(capture_stderr(name)) == {"99999.vm"}
    assert state.unknown_ids(capture_stderr("44_qstat_f_json_deleted_without_x.json")) == set()


def test_exit_status_meanings():
    base = {"job_state": "F", "substate": 93}
    assert state.classify({**base, "Exit_status": -29}).reason == "timeout"
    assert state.classify({**base, "Exit_status": -27}).reason == "out of memory"
    assert state.classify({**base, "Exit_status": 265}).reason == "killed by SIGKILL"
    assert state.classify({**base, "Exit_status": -14}).reason == "requeued: a sister node failed"
    # a finished job with a failing exit code is failed even if the substate claims success
    assert state.classify({"job_state": "F", "substate": 92, "Exit_status": 1}).state == JobState.FAILED
    assert state.classify({"job_state": "X", "substate": 92, "Exit_status": 0}).state == JobState.SUCCEEDED
    held = state.classify({"job_state": "H", "substate": 20})
    assert held.state == JobState.QUEUED and held.reason == "held"


def _pbs2022(text: str) -> str:
    """The captured running job as PBS 2022 prints it when the job has ``-v`` values that look numeric."""
    return text.replace('"PBS_O_HOME":"/home/pbsuser",',
                        '"PBS_O_HOME":"/home/pbsuser",\n                "FOO":005,\n                "BAR":.5,\n'
                        '                "BAZ":12.,\n                "QUX":"it\\\'s\\,here",')


def test_invalid_json_is_repaired():
    text = _pbs2022(capture("11_qstat_f_json_running.json"))
    with pytest.raises(ValueError):
        json.loads(text)
    attrs = state.jobs_from_qstat(text)["13.vm"]
    assert attrs["Variable_List"]["FOO"] == "005"
    assert attrs["Variable_List"]["BAR"] == ".5"
    assert attrs["Variable_List"]["BAZ"] == "12."
    assert attrs["Variable_List"]["QUX"] == "it's,here"
    assert attrs["Priority"] == 0  # valid numbers stay numbers
    assert state.classify(attrs).state == JobState.RUNNING


def test_hopeless_json_raises():
    with pytest.raises(ValueError):
        state.jobs_from_qstat('{\n "Jobs": {\n  "1.pbs1": {\n')


def test_job_ids():
    assert state.split_job_id("1234[3].pbs1") == ("1234", "3", "pbs1")
    assert state.array_parent("1234[3].pbs1") == "1234[].pbs1"
    assert state.array_parent("1234.pbs1") is None
    assert state.array_parent("1234[].pbs1") is None
    assert state.subjob_id("1234[].pbs1", 7) == "1234[7].pbs1"
    assert state.query_id("16[1].vm") == "16[].vm"
    assert state.exec_hosts({"exec_host": "hA/0*8+hB/0*8+hA/1"}) == "hA,hB"


def test_watcher_reads_qstat_text():
    from llmjobs.cluster.pbs.executor import PBSInfoWatcher

    info = PBSInfoWatcher().read_info(capture("50_qstat_x_f_json_multi.json").encode())
    assert {k: v["State"] for k, v in info.items()} == {
        "14.vm": "SUCCEEDED", "18.vm": "FAILED", "20.vm": "CANCELLED", "16[].vm": "SUCCEEDED",
        "16[1].vm": "SUCCEEDED"}
    assert info["18.vm"]["ExitCode"] == "3" and info["14.vm"]["NodeList"] == "vm"
