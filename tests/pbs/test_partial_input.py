"""A step never runs on partial input, whatever PBS's dependency semantics.

A real OpenPBS 23.06 server releases an array's ``afterok`` dependents when the LAST subjob to end exits 0,
even if an earlier one failed (the emulator does the same, see docs/pbs-emulator.md). Here shard 3 of a
4-shard step fails first and the others succeed after it: PBS starts the next step, whose shard must
refuse to run its kind (no DONE marker for shard 3), so the run ends failed; ``resume`` then reruns shard 3
and the next step, which sees all 4 inputs.
"""

from __future__ import annotations

import pytest

from llmjobs.cluster.controller import step_state_dir
from llmjobs.jobs.task import read_failure

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

# shards 0-2 end only once the server has recorded the end of shard 3 (failed), so it is the first to end
RECIPE = """
name: partial
defaults: {{resources: {{walltime: "00:05:00"}}}}
steps:
  B:
    kind: shell
    shards: 4
    params:
      command: >-
        if [ "$LLMJOBS_SHARD" = 3 ]; then
          if [ ! -e {ok} ]; then echo "shard 3 refuses" >&2; exit 3; fi;
        else
          three="${{PBS_ARRAY_ID/\\[\\]/[3]}}";
          for i in $(seq 300); do qstat -x -f -F json "$three" | grep -q '"Exit_status":' && break; sleep 0.1; done;
        fi;
        echo "$LLMJOBS_SHARD" > b-$LLMJOBS_SHARD.txt
  C:
    kind: shell
    after: [B]
    params: {{command: "ls ${{steps.B.output}} | grep -c '^b-' > c.txt"}}
"""


def _attempts(view: dict, step: str) -> dict[int, list[dict]]:
    [s] = [s for s in view["steps"] if s["name"] == step]
    return {sh["index"]: sh["attempts"] for sh in s["shards"]}


def test_step_released_on_partial_input_refuses_to_run_and_resume_completes(pbs_cli, tmp_path, pbs_profile):
    profile = pbs_profile(lost_grace_s=60)
    ok = tmp_path / "ok"
    recipe = tmp_path / "partial.yaml"
    recipe.write_text(RECIPE.format(ok=ok))

    r = pbs_cli("submit", recipe, "--cluster", profile, "--wait")
    run_id = r.stdout.strip().splitlines()[0]
    assert r.returncode == 1, r.stdout + r.stderr
    view = pbs_cli.status(run_id)
    assert view["status"] == "failed"
    b = _attempts(view, "B")
    assert [b[i][0]["state"] for i in range(4)] == ["succeeded", "succeeded", "succeeded", "failed"]
    [c] = _attempts(view, "C")[0]
    # PBS released C (the last subjob of B to end exited 0): it ran, and refused to run on 3 of 4 inputs
    assert c["state"] == "failed" and c["job_id"] == "2.pbs1", c
    run_dir = tmp_path / "runs" / run_id
    record = read_failure(step_state_dir(run_dir, "C"), 0, 1)
    assert record is not None and record["reason"].startswith("dependency not satisfied"), record
    assert not (run_dir / "C" / "c.txt").exists()

    ok.touch()
    r = pbs_cli("resume", run_id, "--wait")
    assert r.returncode == 0, r.stdout + r.stderr
    view = pbs_cli.status(run_id)
    assert view["status"] == "succeeded"
    b = _attempts(view, "B")
    assert [len(b[i]) for i in range(4)] == [1, 1, 1, 2]  # only the failed shard ran again
    assert len(_attempts(view, "C")[0]) == 2
    assert (run_dir / "C" / "c.txt").read_text().strip() == "4"
