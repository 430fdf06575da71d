"""``llmjobs cancel`` on PBS must not crash a stock OpenPBS 23.06 server.

One qdel holding two or more subjobs of one array plus another job crashes that server (a double free in
its delete path), and the qdel client then exits 0 without a word; the emulator dies on the same request.
The backend deletes whole arrays by their array id, one array per qdel, plain jobs batched, and then
reports what the server says.
"""

from __future__ import annotations

import json

import pytest

from llmjobs.cluster.pbs.commands import qdel_groups


def test_qdel_groups_never_list_subjobs():
    # in submission order: 5 (array), 6, 7 (array), 8, 9 (array), <C>, 10; deleted downstream first
    ids = ["5[0].pbs1", "5[1].pbs1", "5[2].pbs1", "6.pbs1", "7[3].pbs1", "8.pbs1", "9[].pbs1", "<C>", "10.pbs1"]
    assert qdel_groups(ids) == [["10.pbs1", "<C>"], ["9[].pbs1"], ["8.pbs1"], ["7[].pbs1"], ["6.pbs1"],
                                ["5[].pbs1"]]
    batches = qdel_groups([f"{n}.pbs1" for n in range(250)], batch=100)
    assert [len(b) for b in batches] == [100, 100, 50] and batches[0][0] == "249.pbs1"
    assert qdel_groups([]) == []


def _qstat(pbs_server, *ids):
    return pbs_server.run("qstat", "-x", "-f", "-F", "json", "-t", *ids)


@pytest.mark.timeout(120)
def test_emulator_dies_on_the_qdel_that_crashes_openpbs(pbs_server, tmp_path):
    script = tmp_path / "nap.sh"
    script.write_text("#!/bin/bash\nsleep 30\n")
    qsub = ["qsub", "-P", "g", "-o", str(tmp_path), "-e", str(tmp_path)]
    array = pbs_server.run(*qsub, "-J", "0-2", str(script)).stdout.strip()
    plain = pbs_server.run(*qsub, str(script)).stdout.strip()
    assert (array, plain) == ("1[].pbs1", "2.pbs1")
    # shapes a buggy server survives: subjobs of one array alone; one array id; plain jobs together
    assert pbs_server.run("qdel", "1[0].pbs1", "1[1].pbs1").returncode == 0
    assert not pbs_server.is_down()

    r = pbs_server.run("qdel", "1[2].pbs1", "1[1].pbs1", plain)  # two subjobs of one array + another job
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")  # the client says nothing, as the real one
    assert pbs_server.is_down()
    r = _qstat(pbs_server, array, plain)
    assert r.returncode == 255 and "cannot connect to server pbs1" in r.stderr
    assert pbs_server.run(*qsub, str(script)).returncode != 0
    assert pbs_server.run("qdel", plain).returncode != 0

    pbs_server.restart()
    jobs = json.loads(_qstat(pbs_server, array, plain).stdout)["Jobs"]
    # nothing of the crashing request was done: the subjob and the plain job still run
    assert jobs["1[2].pbs1"]["job_state"] == "R" and jobs[plain]["job_state"] == "R"
    assert pbs_server.run("qdel", array).returncode == 0
    assert pbs_server.run("qdel", plain).returncode == 0


RECIPE = """
name: cancelme
defaults: {resources: {walltime: "00:05:00"}}
steps:
  gen:
    kind: shell
    shards: 3
    params: {command: "sleep 60"}
  score:
    kind: shell
    after: [gen]
    params: {command: "true"}
"""


def _attempts(view: dict, step: str) -> list[dict]:
    [s] = [s for s in view["steps"] if s["name"] == step]
    return [a for sh in s["shards"] for a in sh["attempts"]]


@pytest.mark.timeout(180)
@pytest.mark.slow
def test_llmjobs_cancel_of_an_array_and_its_dependent_keeps_the_server_alive(pbs_cli, pbs_server, tmp_path, pbs_profile):
    profile = pbs_profile(lost_grace_s=60, cancel_wait_s=20)
    recipe = tmp_path / "cancelme.yaml"
    recipe.write_text(RECIPE)
    r = pbs_cli("submit", recipe, "--cluster", profile)
    assert r.returncode == 0, r.stderr
    run_id = r.stdout.split()[0]
    pbs_cli.wait_until(run_id, lambda v: all(a["state"] == "running" for a in _attempts(v, "gen")), timeout=60)

    # a server that cannot be reached: cancel says so, and nothing is called cancelled
    pbs_server.inject("qdel_transient", count=1000)
    pbs_cli.env["LLMJOBS_PBS_RETRIES"] = "1"  # no retries of the qdel that cannot succeed
    r = pbs_cli("cancel", run_id)
    del pbs_cli.env["LLMJOBS_PBS_RETRIES"]
    assert r.returncode == 1 and "qdel failed for" in r.stderr and "1[].pbs1" in r.stderr, r.stderr
    assert "cancelled" not in {a["state"] for a in _attempts(pbs_cli.status(run_id), "gen")}
    pbs_server.clear()

    r = pbs_cli("cancel", run_id)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not pbs_server.is_down(), "llmjobs cancel sent the qdel that crashes OpenPBS 23.06"
    # the server itself says every job ended: nothing left running behind a 'cancelled'
    states = pbs_server.states()
    assert states and all(s == "F" for s in states.values()), states
    view = pbs_cli.status(run_id)
    assert [a["state"] for a in _attempts(view, "gen")] == ["cancelled"] * 3
    assert [a["state"] for a in _attempts(view, "score")] == ["cancelled"]
    assert view["status"] == "cancelled"
