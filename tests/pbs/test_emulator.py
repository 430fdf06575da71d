"""The PBS command emulator against the outputs of a real OpenPBS server (tests/pbs/captures).

No PBS server can run in CI, so the emulator is checked here against what a real one printed: the same
keys in the same order with the same JSON value types for each job state, the same exit codes and error
text; and its jobs are real processes (arrays, dependencies, qdel, walltime kills, faults).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CAPTURES = HERE / "captures"
sys.path.insert(0, str(HERE / "emulator"))

import pbs_emulator
from pbs_emulator import render

SERVER = "pbs1"


def captured(name: str) -> dict:
    jobs = json.loads((CAPTURES / name).read_text())["Jobs"]
    assert len(jobs) == 1
    return next(iter(jobs.values()))


def shape(value, key: str = ""):
    """Keys in order with the JSON type of each value (Variable_List depends on the submitter's env)."""
    if isinstance(value, dict) and key != "Variable_List":
        return [(k, shape(v, k)) for k, v in value.items()]
    return type(value).__name__


class Pbs:
    def __init__(self, home: Path, workdir: Path, env: dict):
        self.home, self.workdir, self.env = home, workdir, env

    def run(self, *args: str, env: dict | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), check=False, capture_output=True, text=True, cwd=self.workdir,
                              env={**self.env, **(env or {})}, input=stdin, timeout=60)

    def script(self, name: str, body: str) -> str:
        (self.workdir / name).write_text("#!/bin/bash\n" + body)
        return name

    def qsub(self, *args: str, **kw) -> str:
        result = self.run("qsub", *args, **kw)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def job(self, job_id: str) -> dict:
        result = self.run("qstat", "-x", "-f", "-F", "json", job_id)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["Jobs"][job_id]

    def wait(self, job_id: str, until, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if until(job):
                return job
            assert time.monotonic() < deadline, f"{job_id} stuck: {job['job_state']}/{job['substate']}"
            time.sleep(0.1)


def gated(flag: str, then: str = "") -> str:
    """A job body that waits until the test creates ``flag`` in the submit directory."""
    return f"while [ ! -e $PBS_O_WORKDIR/{flag} ]; do sleep 0.05; done\n{then}"


def state(*states: str):
    return lambda job: job["job_state"] in states


def running_with_session(job: dict) -> bool:
    return job["job_state"] == "R" and "session_id" in job


@pytest.fixture
def pbs(tmp_path, monkeypatch):
    home, workdir = tmp_path / "server", tmp_path / "work"
    workdir.mkdir()
    env = pbs_emulator.environment(home, server=SERVER, slots=1, PBS_EMULATOR_KILL_DELAY="1")
    env.pop("PBS_EMULATOR_REQUIRE_PROJECT", None)
    env.pop("PBS_EMULATOR_JSON_RULE", None)
    emulator = Pbs(home, workdir, env)
    yield emulator
    pbs_emulator.restart(home)
    # Leave no job processes behind.
    states = pbs_emulator.job_states(home)
    active = [j for j, s in states.items() if s != "F" and not re.search(r"\[\d+\]", j)]
    if active:
        emulator.run("qdel", *active)
    pbs_emulator.wait_idle(home, timeout=30)


# ---- text layouts --------------------------------------------------------------------------------


def test_default_text_rows_are_laid_out_like_real_qstat():
    for name in ("15_qstat_t_array.txt", "22_qstat_t_array_running.txt", "51_qstat_x_multi.txt",
                 "52_qstat_x_all.txt"):
        lines = (CAPTURES / name).read_text().splitlines(keepends=True)
        assert "".join(lines[:2]) == render.default_header()
        for line in lines[2:]:
            job_id, job_name, user, time_use, st, queue = line.split()
            assert render.default_row(job_id, job_name, user, time_use, st, queue) == line


def test_alternate_text_rows_are_laid_out_like_real_qstat_a():
    lines = (CAPTURES / "10_qstat_a_while_running.txt").read_text().splitlines(keepends=True)
    assert "".join(lines[:5]) == render.alt_header("vm")
    for line in lines[5:]:
        job_id, user, queue, job_name, sess, nds, tsk, _mem, _req, st, elap = line.split()
        blank = " -- "
        row = render.alt_row(job_id, user, queue, job_name, blank if sess == "--" else sess, nds, tsk,
                             blank, blank, st, blank if elap == "--" else elap)
        assert row == line


# ---- JSON layouts per job state, from real jobs ------------------------------------------------------


def test_job_lifecycle_matches_captured_json_layouts(pbs):
    long_id = pbs.qsub("-l", "select=1:ncpus=2", "-N", "longjob", pbs.script("long.sh", gated("go_long")))
    ok_id = pbs.qsub("-l", "select=1:ncpus=1", "-N", "okjob", pbs.script("ok.sh", "echo ok\n"))
    dep_id = pbs.qsub("-W", f"depend=afterok:{long_id}", "-l", "select=1:ncpus=1", "-N", "depjob",
                      pbs.script("dep.sh", "echo dep\n"))
    arr_id = pbs.qsub("-J", "0-3", "-l", "select=1:ncpus=1", "-N", "arrjob",
                      pbs.script("arr.sh", gated("go_arr")))
    assert [long_id, ok_id, dep_id, arr_id] == ["1.pbs1", "2.pbs1", "3.pbs1", "4[].pbs1"]

    running = pbs.wait(long_id, running_with_session)
    assert shape(running) == shape(captured("11_qstat_f_json_running.json"))
    assert running["depend"] == f"beforeok:{dep_id}@{SERVER}"
    assert running["exec_host"].endswith("/0*2") and running["exec_vnode"].endswith(":ncpus=2)")
    queued = pbs.job(ok_id)
    assert shape(queued) == shape(captured("12_qstat_f_json_queued.json"))
    assert (queued["job_state"], queued["substate"]) == ("Q", 10)
    held = pbs.job(dep_id)
    assert shape(held) == shape(captured("13_qstat_f_json_afterok_held.json"))
    assert (held["job_state"], held["substate"], held["Hold_Types"]) == ("H", 22, "s")
    parent = pbs.job(arr_id)
    assert shape(parent) == shape(captured("14_qstat_f_json_array_parent_queued.json"))
    assert parent["array_indices_remaining"] == "0-3"

    (pbs.workdir / "go_long").touch()
    sub_id = "4[0].pbs1"
    sub = pbs.wait(sub_id, state("R"))
    assert shape(sub) == shape(captured("21_qstat_f_json_array_subjob.json"))
    assert sub["array_id"] == arr_id and sub["array_index"] == 0
    parent = pbs.job(arr_id)
    assert shape(parent) == shape(captured("20_qstat_f_json_array_parent_running.json"))
    assert (parent["job_state"], parent["substate"]) == ("B", 70)
    assert parent["array_indices_remaining"] == "1-3"
    (pbs.workdir / "go_arr").touch()

    parent = pbs.wait(arr_id, state("F"))
    assert shape(parent) == shape(captured("23_qstat_x_f_json_array_parent_finished.json"))
    assert (parent["substate"], parent["Exit_status"]) == (92, 0)
    assert parent["comment"].endswith(" and finished")
    assert shape(pbs.job("4[1].pbs1")) == shape(captured("24_qstat_x_f_json_array_subjob_finished.json"))
    finished = pbs.job(long_id)
    assert shape(finished) == shape(captured("26_qstat_x_f_json_finished_long.json"))
    assert (finished["substate"], finished["Exit_status"]) == (92, 0)
    dep = pbs.job(dep_id)
    expected = captured("27_qstat_x_f_json_afterok_finished.json")
    assert [k for k in dep if k != "session_id"] == list(expected)
    assert shape({k: v for k, v in dep.items() if k != "session_id"}) == shape(expected)

    # Default output paths are NAME.oNUM (NAME.oNUM.INDEX for subjobs) in the submit directory.
    assert (pbs.workdir / "okjob.o2").read_text() == "ok\n"
    assert sorted(p.name for p in pbs.workdir.glob("arrjob.o4.*")) == [f"arrjob.o4.{i}" for i in range(4)]

    listing = pbs.run("qstat", "-t", "-x", arr_id)
    assert listing.returncode == 0
    assert [line.split()[0] for line in listing.stdout.splitlines()[2:]] == [
        arr_id, "4[0].pbs1", "4[1].pbs1", "4[2].pbs1", "4[3].pbs1"]


def test_failed_job_and_dependent_deleted_at_once(pbs):
    fail_id = pbs.qsub("-N", "failjob", pbs.script("fail.sh", "echo about to fail\necho error text >&2\nexit 3\n"))
    dep_id = pbs.qsub("-W", f"depend=afterok:{fail_id}", pbs.script("dep.sh", "touch ran\n"))
    failed = pbs.wait(fail_id, state("F"))
    expected = captured("31_qstat_x_f_json_failed_exit3.json")
    assert [k for k in failed if k != "session_id"] == list(expected)
    assert (failed["substate"], failed["Exit_status"]) == (93, 3)
    assert failed["comment"].endswith(" and failed")
    assert "depend" not in failed  # the deleted dependent no longer shows as beforeok
    dep = pbs.wait(dep_id, state("F"))
    assert shape(dep) == shape(captured("33_qstat_x_f_json_afterok_on_failed.json"))
    assert dep["substate"] == 92 and "Exit_status" not in dep and "comment" not in dep
    assert not (pbs.workdir / "ran").exists()
    assert (pbs.workdir / "failjob.e1").read_text() == "error text\n"


def test_qdel_queued_and_running_jobs(pbs):
    run_id = pbs.qsub("-N", "delr", pbs.script("long.sh", "echo start\nsleep 30\n"))
    queued_id = pbs.qsub("-N", "delq", pbs.script("ok.sh", "echo ok\n"))
    running = pbs.wait(run_id, running_with_session)
    assert shape(running) == shape(captured("41_qstat_f_json_running_before_qdel.json"))
    assert shape(pbs.job(queued_id)) == shape(captured("16_qstat_f_json_queued_before_qdel.json"))

    result = pbs.run("qdel", queued_id)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    deleted = pbs.job(queued_id)
    assert shape(deleted) == shape(captured("18_qstat_x_f_json_deleted_while_queued.json"))
    assert deleted["comment"] == "Not Running: Not enough free nodes available and terminated"

    session = running["session_id"]
    assert os.getsid(session) != os.getsid(0)  # the job lives in its own session, detached from us
    result = pbs.run("qdel", run_id)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    deleted = pbs.wait(run_id, state("F"))
    assert shape(deleted) == shape(captured("43_qstat_x_f_json_deleted_while_running.json"))
    assert (deleted["substate"], deleted["Exit_status"]) == (91, 271)
    assert deleted["comment"].endswith(f" and terminated by {deleted['Job_Owner']}")
    assert (pbs.workdir / "delr.o1").read_text() == "start\n"

    # A finished job asked for without -x: rc 35, header-only JSON, PBS's message.
    result = pbs.run("qstat", "-f", "-F", "json", run_id)
    real_stdout = (CAPTURES / "44_qstat_f_json_deleted_without_x.json").read_text()
    assert result.returncode == int((CAPTURES / "44_qstat_f_json_deleted_without_x.json.rc").read_text())
    assert list(json.loads(result.stdout)) == list(json.loads(real_stdout))
    assert result.stdout.endswith("}") and real_stdout.endswith("}")
    real_err = (CAPTURES / "44_qstat_f_json_deleted_without_x.json.stderr").read_text()
    assert result.stderr == real_err.replace("20.vm", run_id)

    result = pbs.run("qdel", "99999.pbs1")
    assert result.returncode == int((CAPTURES / "65_qdel_unknown.txt.rc").read_text())
    assert result.stderr == (CAPTURES / "65_qdel_unknown.txt.stderr").read_text().replace(".vm", ".pbs1")


def test_unknown_and_malformed_ids(pbs):
    known = pbs.qsub(pbs.script("ok.sh", "true\n"))
    pbs.wait(known, state("F"))
    for capture, args in (("61_qstat_f_json_unknown.json", ["-f", "-F", "json", "99999.pbs1"]),
                          ("62_qstat_x_f_json_unknown.json", ["-x", "-f", "-F", "json", "99999.pbs1"]),
                          ("60_qstat_unknown.txt", ["99999.pbs1"]),
                          ("64_qstat_unknown_bare_number.txt", ["99999"]),
                          ("66_qstat_malformed_id.txt", ["not_a_job"])):
        result = pbs.run("qstat", *args)
        assert result.returncode == int((CAPTURES / f"{capture}.rc").read_text()), capture
        assert result.stderr == (CAPTURES / f"{capture}.stderr").read_text().replace(".vm", ".pbs1")
        real = (CAPTURES / capture).read_text()
        if capture.endswith(".json"):
            assert list(json.loads(result.stdout)) == list(json.loads(real))
        else:
            assert result.stdout == real == ""

    result = pbs.run("qstat", "-x", "-f", "-F", "json", known, "99999.pbs1")
    assert result.returncode == 153
    assert list(json.loads(result.stdout)["Jobs"]) == [known]
    assert result.stderr == "qstat: Unknown Job Id 99999.pbs1\n"


# ---- the job's world -------------------------------------------------------------------------------


def test_array_job_environment_and_paths(pbs):
    body = """#PBS -N envjob
#PBS -v FROM_SCRIPT=1
out=$PBS_O_WORKDIR/env.$PBS_ARRAY_INDEX
{
  echo "index=$PBS_ARRAY_INDEX id=$PBS_JOBID array=$PBS_ARRAY_ID name=$PBS_JOBNAME"
  echo "workdir=$PBS_O_WORKDIR pwd=$(pwd) scriptdir=$(dirname $0)"
  echo "nodes=$(tr '\\n' ' ' < $PBS_NODEFILE)"
  echo "localdir=$([ -d "$PBS_LOCALDIR" ] && echo yes) seed=$SEED from_script=${FROM_SCRIPT:-unset}"
} > $out
"""
    arr_id = pbs.qsub("-J", "0-4:2", "-l", "select=1:ncpus=3", "-v", "SEED=0042",
                      "-o", "logs/out.^array_index^", pbs.script("env.sh", body))
    pbs.wait(arr_id, state("F"))
    node = pbs_emulator.store.node_name()
    for index in (0, 2, 4):
        lines = (pbs.workdir / f"env.{index}").read_text().splitlines()
        assert lines[0] == f"index={index} id=1[{index}].pbs1 array={arr_id} name=envjob"
        workdir, pwd, scriptdir = (part.split("=", 1)[1] for part in lines[1].split())
        assert workdir == str(pbs.workdir)
        assert pwd == os.path.expanduser("~")  # PBS starts jobs in the home directory
        assert scriptdir != str(pbs.workdir)  # the script runs from a spool copy
        assert lines[2] == "nodes=" + f"{node} " * 3
        # -v on the command line replaces the script's #PBS -v
        assert lines[3] == "localdir=yes seed=0042 from_script=unset"
        assert (pbs.workdir / "logs" / f"out.{index}").exists()
    assert not (pbs.workdir / "env.1").exists()
    parent = pbs.job(arr_id)
    assert parent["array_indices_submitted"] == "0-4:2"
    assert parent["Variable_List"]["SEED"] == "0042"  # quoted: not a valid JSON number


def test_slot_cap_queues_jobs_fifo(pbs):
    first = pbs.qsub(pbs.script("a.sh", gated("go")))
    second = pbs.qsub(pbs.script("b.sh", "true\n"))
    pbs.wait(first, state("R"))
    waiting = pbs.job(second)
    assert waiting["job_state"] == "Q" and waiting["comment"] == "Not Running: Not enough free nodes available"
    (pbs.workdir / "go").touch()
    first_done = pbs.wait(first, state("F"))
    second_done = pbs.wait(second, state("F"))
    started = time.mktime(time.strptime(second_done["stime"]))
    assert started >= time.mktime(time.strptime(first_done["obittime"]))


def test_walltime_kill_escalates_to_sigkill(pbs):
    body = "trap 'echo got TERM' TERM\necho start\nfor i in $(seq 100); do sleep 0.2; done\n"
    job_id = pbs.qsub("-l", "walltime=00:00:01", "-N", "wall", pbs.script("wall.sh", body))
    job = pbs.wait(job_id, state("F"), timeout=20)
    assert (job["substate"], job["Exit_status"]) == (93, -29)
    assert job["Resource_List"]["walltime"] == "00:00:01"
    assert "walltime" in (pbs.workdir / "wall.e1").read_text()
    assert "got TERM" in (pbs.workdir / "wall.o1").read_text()  # TERM first, then KILL after kill_delay


# ---- qsub input handling ---------------------------------------------------------------------------


def test_qsub_rejects_bad_input(pbs):
    script = pbs.script("ok.sh", "true\n")
    result = pbs.run("qsub", "-J", "5", script)
    assert result.returncode == 2 and result.stderr.startswith("qsub: illegal -J value\nusage: qsub")
    result = pbs.run("qsub", "-W", "depend=afterok:77.pbs1", script)
    assert (result.returncode, result.stderr) == (153, "qsub: Unknown Job Id 77.pbs1\n")
    result = pbs.run("qsub", script, env={"PBS_EMULATOR_REQUIRE_PROJECT": "1"})
    assert result.returncode != 0 and "-P" in result.stderr and result.stdout == ""
    ok = pbs.run("qsub", "-P", "gxa50001", script, env={"PBS_EMULATOR_REQUIRE_PROJECT": "1"})
    assert ok.returncode == 0 and pbs.job(ok.stdout.strip())["project"] == "gxa50001"
    assert ok.stdout.strip() == "1.pbs1"  # rejected submissions take no id


def test_directives_and_stdin(pbs):
    script = pbs.script("d.sh", "#PBS -N fromscript\n#PBS -l walltime=1:00:00\n#PBS -j oe\necho out\necho err >&2\n")
    job_id = pbs.qsub("-q", "rt_HG", "-l", "select=1:ncpus=16:ngpus=1", script)
    job = pbs.wait(job_id, state("F"))
    assert job["Job_Name"] == "fromscript" and job["queue"] == "rt_HG" and job["Join_Path"] == "oe"
    assert job["Resource_List"] == {"ncpus": 16, "ngpus": 1, "nodect": 1, "place": "free",
                                    "select": "1:ncpus=16:ngpus=1", "walltime": "01:00:00"}
    assert (pbs.workdir / "fromscript.o1").read_text() == "out\nerr\n"
    assert not (pbs.workdir / "fromscript.e1").exists()
    stdin_id = pbs.qsub(stdin="echo piped\n")
    assert pbs.wait(stdin_id, state("F"))["Job_Name"] == "STDIN"
    assert (pbs.workdir / "STDIN.o2").read_text() == "piped\n"


# ---- fault injection -------------------------------------------------------------------------------


def test_fault_transient_server_errors(pbs):
    pbs_emulator.inject(pbs.home, "qsub_transient", count=1)
    script = pbs.script("ok.sh", "true\n")
    result = pbs.run("qsub", script)
    assert result.returncode == 162 and result.stdout == ""
    assert result.stderr == "Connection refused\nqsub: cannot connect to server pbs1 (errno=15010)\n"
    job_id = pbs.qsub(script)
    assert job_id == "1.pbs1"

    pbs_emulator.inject(pbs.home, "qstat_transient", count=2)
    for _ in range(2):
        result = pbs.run("qstat", "-x", "-f", "-F", "json", job_id)
        assert result.returncode == 255
        assert result.stderr == "Connection refused\nqstat: cannot connect to server pbs1 (errno=15010)\n"
        assert "Jobs" not in json.loads(result.stdout)
    assert pbs.run("qstat", "-x", "-f", "-F", "json", job_id).returncode == 0


def test_fault_invalid_json_like_pbs_2022(pbs):
    job_id = pbs.qsub("-v", "SEED=0042,N=5", pbs.script("ok.sh", "true\n"))
    pbs.wait(job_id, state("F"))
    # Fixed writer (as captured): valid JSON, a valid number printed bare, a leading-zero string quoted.
    good = pbs.run("qstat", "-x", "-f", "-F", "json", job_id).stdout
    assert '"SEED":"0042"' in good and '"N":5' in good

    pbs_emulator.inject(pbs.home, "qstat_bad_json", count=1)
    bad = pbs.run("qstat", "-x", "-f", "-F", "json", job_id)
    assert bad.returncode == 0
    with pytest.raises(json.JSONDecodeError):
        json.loads(bad.stdout)
    assert '"SEED":0042' in bad.stdout and '"PBS_EMULATOR_FAULT":0123' in bad.stdout
    json.loads(pbs.run("qstat", "-x", "-f", "-F", "json", job_id).stdout)  # the fault is spent

    always = pbs.run("qstat", "-x", "-f", "-F", "json", job_id, env={"PBS_EMULATOR_JSON_RULE": "2022"})
    assert '"SEED":0042' in always.stdout and "PBS_EMULATOR_FAULT" not in always.stdout


def test_fault_job_vanishes_from_history(pbs):
    done = pbs.qsub(pbs.script("ok.sh", "echo done\n"))
    pbs.wait(done, state("F"))
    pbs_emulator.inject(pbs.home, "vanish", job_id=done)
    result = pbs.run("qstat", "-x", "-f", "-F", "json", done)
    assert (result.returncode, result.stderr) == (153, f"qstat: Unknown Job Id {done}\n")

    later = pbs.qsub(pbs.script("slow.sh", gated("go", "echo slow\n")))
    pbs.wait(later, state("R"))
    pbs_emulator.inject(pbs.home, "vanish", job_id=later, when="finish")
    assert pbs.job(later)["job_state"] == "R"  # still listed while it runs
    (pbs.workdir / "go").touch()
    deadline = time.monotonic() + 20
    while pbs.run("qstat", "-x", later).returncode != 153:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert (pbs.workdir / "slow.sh.o2").read_text() == "slow\n"  # it did run to the end


def test_qdel_array_and_one_poll_for_many_ids(pbs):
    arr_id = pbs.qsub("-J", "0-3", "-N", "arr", pbs.script("arr.sh", "sleep 30\n"))
    pbs.wait("1[0].pbs1", state("R"))
    # The backend's poll: one call, parent and subjobs with -t, plus an unknown id.
    result = pbs.run("qstat", "-x", "-f", "-F", "json", "-t", arr_id, "99.pbs1")
    assert result.returncode == 153 and result.stderr == "qstat: Unknown Job Id 99.pbs1\n"
    jobs = json.loads(result.stdout)["Jobs"]
    assert {k: v["job_state"] for k, v in jobs.items()} == {
        arr_id: "B", "1[0].pbs1": "R", "1[1].pbs1": "Q", "1[2].pbs1": "Q", "1[3].pbs1": "Q"}
    assert jobs[arr_id]["array_indices_remaining"] == "1-3"
    assert jobs[arr_id]["array_state_count"] == "Queued:3 Running:1 Exiting:0 Expired:0"

    assert pbs.run("qdel", arr_id).returncode == 0
    parent = pbs.wait(arr_id, state("F"))
    assert parent["substate"] == 91 and parent["comment"].endswith(" and terminated")
    subjobs = json.loads(pbs.run("qstat", "-x", "-f", "-F", "json", "-t", arr_id).stdout)["Jobs"]
    assert subjobs["1[0].pbs1"]["Exit_status"] == 271
    assert all(subjobs[f"1[{i}].pbs1"]["substate"] == 91 and "Exit_status" not in subjobs[f"1[{i}].pbs1"]
               for i in (1, 2, 3))
    result = pbs.run("qdel", arr_id)
    assert (result.returncode, result.stderr) == (35, f"qdel: Job has finished {arr_id}\n")


def test_dependency_on_already_finished_jobs(pbs):
    ok = pbs.qsub(pbs.script("ok.sh", "true\n"))
    bad = pbs.qsub(pbs.script("bad.sh", "exit 1\n"))
    pbs.wait(bad, state("F"))
    after_ok = pbs.qsub("-W", f"depend=afterok:{ok}", pbs.script("a.sh", "echo ran\n"))
    after_bad = pbs.qsub("-W", f"depend=afterok:{ok}:{bad}", pbs.script("b.sh", "echo ran\n"))
    after_any = pbs.qsub("-W", f"depend=afterany:{bad}", pbs.script("c.sh", "echo ran\n"))
    assert pbs.wait(after_ok, state("F"))["Exit_status"] == 0
    assert "Exit_status" not in pbs.wait(after_bad, state("F"))
    assert pbs.wait(after_any, state("F"))["Exit_status"] == 0
    assert not (pbs.workdir / "b.sh.o4").exists() and (pbs.workdir / "c.sh.o5").read_text() == "ran\n"


def test_job_that_cannot_start_fails_with_a_pbs_code(pbs):
    job_id = pbs.qsub("-S", "/nonexistent/shell", "-N", "nostart", pbs.script("x.sh", "true\n"))
    job = pbs.wait(job_id, state("F"))
    assert (job["substate"], job["Exit_status"]) == (93, -1)  # JOB_EXEC_FAIL1
    assert "could not start" in (pbs.workdir / "nostart.e1").read_text()


def test_full_text_format_wraps_long_values(pbs):
    job_id = pbs.qsub("-v", "LONG=" + "x" * 150, pbs.script("ok.sh", "true\n"))
    pbs.wait(job_id, state("F"))
    text = pbs.run("qstat", "-x", "-f", job_id).stdout
    lines = text.split("\n")
    assert lines[0] == f"Job Id: {job_id}" and text.endswith("\n\n")
    assert all(len(line.expandtabs(8)) <= 80 for line in lines)
    variables = text.split("    Variable_List = ", 1)[1].split("\n    ", 1)[0].replace("\n\t", "")
    assert f"PBS_O_WORKDIR={pbs.workdir}" in variables.split(",") and "LONG=" + "x" * 150 in variables
    assert "    Exit_status = 0\n" in text and "    Resource_List.select = 1:ncpus=1\n" in text


def test_array_afterok_follows_the_last_subjob_to_end(pbs):
    # OpenPBS 23.06 overwrites an array's exit status subjob by subjob: a failed subjob that ends before
    # the others is forgotten, and the array's afterok dependents are released (slots=1: 0, 1, 2, 3 in turn)
    body = '[ "$PBS_ARRAY_INDEX" = {bad} ] && exit 3\nexit 0\n'
    early = pbs.qsub("-J", "0-3", pbs.script("early.sh", body.format(bad=1)))
    after_early = pbs.qsub("-W", f"depend=afterok:{early}", pbs.script("a.sh", "echo ran\n"))
    parent = pbs.wait(early, state("F"))
    assert (parent["Exit_status"], parent["substate"]) == (0, 92)
    assert pbs.job("1[1].pbs1")["Exit_status"] == 3
    assert pbs.wait(after_early, state("F"))["Exit_status"] == 0  # released: it ran
    assert (pbs.workdir / "a.sh.o2").read_text() == "ran\n"

    late = pbs.qsub("-J", "0-3", pbs.script("late.sh", body.format(bad=3)))
    after_late = pbs.qsub("-W", f"depend=afterok:{late}", pbs.script("b.sh", "echo ran\n"))
    assert (pbs.wait(late, state("F"))["Exit_status"]) == 1
    assert "Exit_status" not in pbs.wait(after_late, state("F"))  # the failed subjob ended last: deleted

    # PBS_EMULATOR_ARRAY_EXIT=any: the documented rule (any failed subjob fails the array)
    documented = pbs.qsub("-J", "0-3", pbs.script("doc.sh", body.format(bad=1)),
                          env={"PBS_EMULATOR_ARRAY_EXIT": "any"})
    after_documented = pbs.qsub("-W", f"depend=afterok:{documented}", pbs.script("c.sh", "echo ran\n"))
    assert (pbs.wait(documented, state("F"))["Exit_status"]) == 1
    assert "Exit_status" not in pbs.wait(after_documented, state("F"))
