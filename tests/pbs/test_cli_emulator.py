"""Whole runs on the ``pbs`` backend through the real ``llmjobs`` CLI, against the PBS command emulator:
a three-step recipe with a 4-shard array step, a failed subjob resumed alone, qdel of a running job, and a
qstat that keeps failing while jobs run."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

FLAKY = """
name: flaky
defaults: {{resources: {{walltime: "00:05:00"}}}}
steps:
  A:
    kind: shell
    params: {{command: "echo hello > a.txt"}}
  B:
    kind: shell
    shards: 4
    params:
      command: >-
        if [ "$LLMJOBS_SHARD" = 2 ] && [ ! -e {ok} ]; then echo "shard 2 refuses" >&2; exit 3; fi;
        cat ${{steps.A.output}}/a.txt > b-$LLMJOBS_SHARD.txt
  C:
    kind: shell
    after: [B]
    params: {{command: "cat ${{steps.B.output}}/b-*.txt | wc -l > c.txt"}}
"""

SLEEPY = """
name: sleepy
defaults: {{resources: {{walltime: "00:05:00"}}}}
steps:
  nap:
    kind: shell
    params: {{command: "sleep {seconds}; echo rested > nap.txt"}}
"""


@pytest.fixture
def profile(pbs_profile) -> Path:
    return pbs_profile(("rt_HC", "rt_HG", "rt_HF"), lost_grace_s=60)


def _attempts(view: dict, step: str) -> dict[int, list[dict]]:
    [s] = [s for s in view["steps"] if s["name"] == step]
    return {sh["index"]: sh["attempts"] for sh in s["shards"]}


def _submit(cli, *args) -> str:
    r = cli("submit", *args)
    assert r.returncode in (0, 1), r.stderr
    return r.stdout.strip().splitlines()[0]


def test_three_steps_with_an_array_complete(pbs_cli, profile, tmp_path):
    # a server that knows only ABCI's queues and prints JSON the way PBS 2022 does, for the whole run
    pbs_cli.env.update(PBS_EMULATOR_QUEUES="rt_HF,rt_HG,rt_HC", PBS_EMULATOR_JSON_RULE="2022")
    r = pbs_cli("submit", ROOT / "recipes" / "quickstart.yaml", "--cluster", profile, "--wait")
    assert r.returncode == 0, r.stdout + r.stderr
    run_id = r.stdout.strip().splitlines()[0]
    view = pbs_cli.status(run_id)
    assert view["status"] == "succeeded"
    square = _attempts(view, "square")
    ids = [square[i][0]["job_id"] for i in range(4)]
    assert ids == [f"2[{i}].pbs1" for i in range(4)]  # one array job, ids as PBS prints them
    run_dir = tmp_path / "runs" / run_id
    total = (run_dir / "total" / "total.txt").read_text().split()
    assert int(total[0]) == sum(i * i for i in range(1, 101))
    # the DAG was handed to PBS: every step was queued at once with afterok on the one before
    scripts = {s: next((run_dir / "logs" / s / "submit-1").glob("*_submission.sh")).read_text()
               for s in ("numbers", "square", "total")}
    assert "#PBS -W depend=afterok:1.pbs1" in scripts["square"]
    assert "#PBS -W depend=afterok:2[].pbs1" in scripts["total"]
    assert "#PBS -J 0-3" in scripts["square"]


def test_failed_subjob_is_resumed_alone(pbs_cli, profile, tmp_path):
    # the documented array rule (any failed subjob fails the array), so C is deleted whatever the order the
    # shards end in; test_partial_input.py covers the real 23.06 server, where the last subjob decides
    pbs_cli.env["PBS_EMULATOR_ARRAY_EXIT"] = "any"
    ok = tmp_path / "ok"
    recipe = tmp_path / "flaky.yaml"
    recipe.write_text(FLAKY.format(ok=ok))
    r = pbs_cli("submit", recipe, "--cluster", profile, "--wait")
    assert r.returncode == 1, r.stdout + r.stderr
    run_id = r.stdout.strip().splitlines()[0]
    view = pbs_cli.status(run_id)
    b = _attempts(view, "B")
    assert [len(b[i]) for i in range(4)] == [1, 1, 1, 1]
    assert b[2][0]["state"] == "failed" and b[2][0]["job_id"] == "2[2].pbs1"
    c = _attempts(view, "C")[0]
    assert c[0]["state"] in ("cancelled", "failed") and c[0]["reason"] == "dependency failed"

    ok.touch()
    r = pbs_cli("resume", run_id, "--wait")
    assert r.returncode == 0, r.stdout + r.stderr
    view = pbs_cli.status(run_id)
    assert view["status"] == "succeeded"
    b = _attempts(view, "B")
    assert [len(b[i]) for i in range(4)] == [1, 1, 2, 1]  # only the failed shard ran again
    assert "[" not in b[2][1]["job_id"]  # alone: a plain job, not an array
    assert (tmp_path / "runs" / run_id / "C" / "c.txt").read_text().strip() == "4"


def test_qdel_of_a_running_job_ends_cancelled(pbs_cli, pbs_server, profile, tmp_path):
    recipe = tmp_path / "sleepy.yaml"
    recipe.write_text(SLEEPY.format(seconds=60))
    run_id = _submit(pbs_cli, recipe, "--cluster", profile)
    view = pbs_cli.wait_until(run_id, lambda v: _attempts(v, "nap")[0][-1]["state"] == "running", timeout=60)
    job_id = _attempts(view, "nap")[0][-1]["job_id"]
    assert pbs_server.run("qdel", job_id).returncode == 0
    view = pbs_cli.wait_until(run_id, lambda v: _attempts(v, "nap")[0][-1]["state"] not in ("queued", "running"))
    attempt = _attempts(view, "nap")[0][-1]
    assert attempt["state"] == "cancelled", attempt


def test_failing_qstat_fails_nothing(pbs_cli, pbs_server, profile, tmp_path):
    recipe = tmp_path / "sleepy.yaml"
    recipe.write_text(SLEEPY.format(seconds=6))
    run_id = _submit(pbs_cli, recipe, "--cluster", profile)
    pbs_server.inject("qstat_transient", count=2)  # retried within one status call
    view = pbs_cli.status(run_id)
    assert _attempts(view, "nap")[0][-1]["state"] in ("queued", "running", "succeeded")
    pbs_server.inject("qstat_transient", count=1000)  # the server stays unreachable for a while
    for _ in range(3):
        view = pbs_cli.status(run_id)
        assert _attempts(view, "nap")[0][-1]["state"] in ("queued", "running", "succeeded")
        assert view["status"] not in ("failed", "lost", "cancelled")
    assert pbs_server.states()  # the emulated server itself was fine all along
    pbs_server.clear()
    view = pbs_cli.wait_until(run_id, lambda v: v["status"] not in ("queued", "running", "pending"))
    assert view["status"] == "succeeded"
    assert len(_attempts(view, "nap")[0]) == 1


def test_llmjobs_cancel_deletes_queued_and_running_jobs(pbs_cli, pbs_server, profile, tmp_path):
    recipe = tmp_path / "two.yaml"
    recipe.write_text(SLEEPY.format(seconds=60) + """
  after_nap:
    kind: shell
    after: [nap]
    params: {command: "true"}
""")
    run_id = _submit(pbs_cli, recipe, "--cluster", profile)
    pbs_cli.wait_until(run_id, lambda v: _attempts(v, "nap")[0][-1]["state"] == "running", timeout=60)
    r = pbs_cli("cancel", run_id)
    assert r.returncode == 0, r.stderr
    view = pbs_cli.wait_until(run_id, lambda v: all(
        _attempts(v, s)[0][-1]["state"] not in ("queued", "running") for s in ("nap", "after_nap")))
    assert _attempts(view, "nap")[0][-1]["state"] == "cancelled"
    assert _attempts(view, "after_nap")[0][-1]["state"] == "cancelled"
    assert all(state == "F" for state in pbs_server.states().values())
