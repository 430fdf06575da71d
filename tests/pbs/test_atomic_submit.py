"""Submission is all or nothing, through the real CLI against the PBS command emulator: when qsub refuses the
third step (its queue does not exist on this server; the refusal comes from qsub, not from llmjobs' own
checks), the jobs already queued for the first two steps are deleted, recorded as the scheduler reports
them, and the run ends failed with the scheduler's message."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

RECIPE = """
name: refused
defaults: {{resources: {{walltime: "00:05:00"}}}}
steps:
  A:
    kind: shell
    params: {{command: "sleep 30; echo A >> {log}"}}
  B:
    kind: shell
    shards: 2
    after: [A]
    params: {{command: "echo B >> {log}"}}
  C:
    kind: shell
    after: [B]
    resources: {{gpus_per_node: 1}}
    params: {{command: "echo C >> {log}"}}
"""


def test_a_refused_third_step_cancels_the_first_two(pbs_cli, pbs_server, tmp_path, pbs_profile):
    profile = pbs_profile(("rt_HC", "rt_HG"))
    log = tmp_path / "ran.log"
    recipe = tmp_path / "refused.yaml"
    recipe.write_text(RECIPE.format(log=log))
    pbs_cli.env["PBS_EMULATOR_QUEUES"] = "rt_HC"  # this server has no rt_HG queue: qsub refuses step C

    r = pbs_cli("submit", recipe, "--cluster", profile)
    assert r.returncode == 1, r.stderr
    assert "Unknown queue" in r.stderr and "cancelled" in r.stderr and "Traceback" not in r.stderr
    (listed,) = json.loads(pbs_cli("runs", "--json").stdout)
    run_id = listed["id"]
    assert f"run {run_id} failed at submission" in r.stderr
    view = pbs_cli.status(run_id)
    assert view["status"] == "failed"
    steps = {s["name"]: s for s in view["steps"]}
    for name in ("A", "B"):
        for shard in steps[name]["shards"]:
            (attempt,) = shard["attempts"]
            assert attempt["job_id"] and attempt["state"] == "cancelled", attempt
            assert "step 'C'" in attempt["reason"] and "refused" in attempt["reason"]
    (c,) = steps["C"]["shards"][0]["attempts"]
    assert c["state"] == "failed" and "Unknown queue" in c["reason"] and c["job_id"] is None
    # the server agrees: every job llmjobs queued is finished (deleted), none is left to run
    assert pbs_server.states() and all(state == "F" for state in pbs_server.states().values())
    assert not log.exists()
