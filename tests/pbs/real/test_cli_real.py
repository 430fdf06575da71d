"""Whole runs through the real ``llmjobs`` CLI on a real OpenPBS 23.06 server (``scripts/pbs-testbed.sh``).

The emulator (tests/pbs/test_cli_emulator.py) knows only what was captured from a server; these tests meet the
server's own behaviour, bugs included: an array's ``afterok`` released although a subjob failed, a ``qdel``
that can crash the server, times printed in the client's time zone.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from .conftest import REPO, attempts, wait_for

pytestmark = [pytest.mark.pbs_real, pytest.mark.slow, pytest.mark.timeout(300)]

# shard 3 of B fails at once while the other three are still busy: the LAST subjob to end exits 0, and on
# this server that releases C's afterok on B's array although B failed
PARTIAL = """
name: partial
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
        if [ "$LLMJOBS_SHARD" = 3 ] && [ ! -e {ok} ]; then echo "shard 3 refuses" >&2; exit 3; fi;
        sleep 4; cat ${{steps.A.output}}/a.txt > b-$LLMJOBS_SHARD.txt
  C:
    kind: shell
    after: [B]
    params: {{command: "echo C ran >> {effects}; ls ${{steps.B.output}}/b-*.txt | wc -l > c.txt"}}
"""

# 10 subjobs and one more job on a node of 8 slots: some subjobs are still queued when the run is cancelled.
# One qdel naming several subjobs of such an array plus another job crashes this release's server.
LIVE = """
name: live
defaults: {resources: {walltime: "00:05:00"}}
steps:
  work:
    kind: shell
    shards: 10
    params: {command: "sleep 240"}
  other:
    kind: shell
    params: {command: "sleep 240"}
"""

NAP = """
name: nap
defaults: {resources: {walltime: "00:05:00"}}
steps:
  nap:
    kind: shell
    params: {command: "sleep 3; echo rested > nap.txt"}
"""


def _submit(cli, *args) -> str:
    r = cli("submit", *args)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.strip().splitlines()[0]


def _ended(view: dict) -> bool:
    return view["status"] not in ("pending", "queued", "running", "submitting")


def test_quickstart_runs_as_one_array_between_two_jobs(real_cli, profile, tmp_path):
    r = real_cli("submit", REPO / "recipes" / "quickstart.yaml", "--cluster", profile, "--wait")
    assert r.returncode == 0, r.stdout + r.stderr
    run_id = r.stdout.strip().splitlines()[0]
    view = real_cli.status(run_id)
    assert view["status"] == "succeeded", view
    square = attempts(view, "square")
    array = square[0][0]["job_id"].split("[")[0]
    assert [square[i][0]["job_id"] for i in range(4)] == [f"{array}[{i}].pbs-testbed" for i in range(4)]
    run_dir = tmp_path / "runs" / run_id
    assert int((run_dir / "total" / "total.txt").read_text().split()[0]) == sum(i * i for i in range(1, 101))
    # the server took the DAG at once: afterok on the job before, on the whole array for the last step
    script = next((run_dir / "logs" / "total" / "submit-1").glob("*_submission.sh")).read_text()
    assert f"#PBS -W depend=afterok:{array}[].pbs-testbed" in script


def test_downstream_step_never_runs_on_partial_input_and_resume_completes(real_cli, profile, tmp_path):
    ok, effects = tmp_path / "ok", tmp_path / "effects.log"
    recipe = tmp_path / "partial.yaml"
    recipe.write_text(PARTIAL.format(ok=ok, effects=effects))
    r = real_cli("submit", recipe, "--cluster", profile, "--wait")
    assert r.returncode == 1, r.stdout + r.stderr
    run_id = r.stdout.strip().splitlines()[0]
    view = real_cli.status(run_id)
    assert view["status"] == "failed", view
    b = attempts(view, "B")
    assert [b[i][0]["state"] for i in range(4)] == ["succeeded"] * 3 + ["failed"]
    assert "[3]" in b[3][0]["job_id"]  # one array job on the server
    # C was released by the server or cancelled by llmjobs; either way its command never ran on 3 of 4 inputs
    [c] = attempts(view, "C")[0]
    assert c["state"] in ("failed", "cancelled"), c
    assert not effects.exists(), "C ran on partial input"
    run_dir = tmp_path / "runs" / run_id
    assert not (run_dir / "C" / "c.txt").exists()
    # what the user reads: the runner's own reason ("dependency not satisfied ..."), not the job's exit code
    assert "dependency" in (c["reason"] or ""), c

    ok.touch()
    r = real_cli("resume", run_id, "--wait")
    assert r.returncode == 0, r.stdout + r.stderr
    view = real_cli.status(run_id)
    assert view["status"] == "succeeded", view
    b = attempts(view, "B")
    assert [len(b[i]) for i in range(4)] == [1, 1, 1, 2]  # only the failed shard ran again
    assert (run_dir / "C" / "c.txt").read_text().strip() == "4"
    assert effects.read_text().splitlines() == ["C ran"]


def test_cancel_of_a_live_array_and_another_job_leaves_the_server_up_and_nothing_running(
        real_cli, real_pbs, profile, tmp_path):
    recipe = tmp_path / "live.yaml"
    recipe.write_text(LIVE)
    run_id = _submit(real_cli, recipe, "--cluster", profile)

    def node_full():
        view = real_cli.status(run_id)
        states = [a[-1]["state"] for s in ("work", "other") for a in attempts(view, s).values()]
        return view if states.count("running") == 8 and states.count("queued") == 3 else None

    view = wait_for("8 jobs running and 3 queued", node_full, timeout=120)
    ids = {a[-1]["job_id"] for s in ("work", "other") for a in attempts(view, s).values()}
    assert len(ids) == 11
    on_server = real_pbs.unfinished()
    assert set(on_server) >= ids  # the server has them, by the ids llmjobs recorded
    assert "Q" in {on_server[i] for i in ids if "[" in i}  # some subjobs of the array are still queued

    r = real_cli("cancel", run_id)
    assert r.returncode == 0, r.stdout + r.stderr
    assert real_pbs.answers(), "pbs_server stopped answering after llmjobs cancel"
    wait_for("the server to end every job of the run",
             lambda: not (set(real_pbs.unfinished()) & _with_arrays(ids)), timeout=60)
    assert real_pbs.answers(), "pbs_server stopped answering after llmjobs cancel"
    view = real_cli.wait_until(run_id, _ended, timeout=60)
    assert view["status"] == "cancelled", view
    for step in ("work", "other"):
        assert {a[-1]["state"] for a in attempts(view, step).values()} == {"cancelled"}


def _with_arrays(ids: set[str]) -> set[str]:
    """The ids and their arrays' ids (``12[3].server`` -> ``12[].server``)."""
    out = set(ids)
    for job_id in ids:
        if "[" in job_id:
            head, _, tail = job_id.partition("[")
            out.add(f"{head}[]{tail.partition(']')[2]}")
    return out


def test_times_of_a_finished_job_are_right_in_another_time_zone(real_cli, profile, tmp_path):
    recipe = tmp_path / "nap.yaml"
    recipe.write_text(NAP)
    real_cli.env["TZ"] = "Asia/Tokyo"  # qstat prints local times: ABCI's login nodes run in JST
    before = datetime.now(UTC)
    r = real_cli("submit", recipe, "--cluster", profile, "--wait")
    after = datetime.now(UTC)
    assert r.returncode == 0, r.stdout + r.stderr
    run_id = r.stdout.strip().splitlines()[0]
    view = real_cli.status(run_id)
    [attempt] = attempts(view, "nap")[0]
    started = datetime.fromisoformat(attempt["started_at"])
    ended = datetime.fromisoformat(attempt["ended_at"])
    slack = timedelta(seconds=5)  # PBS prints whole seconds
    assert before - slack <= started <= ended <= after + slack, \
        f"job ran between {before:%H:%M:%S} and {after:%H:%M:%S} UTC; recorded {started} .. {ended}"
    assert (ended - started).total_seconds() >= 2, attempt  # the job slept 3 s
    [step] = [s for s in view["steps"] if s["name"] == "nap"]
    assert 2 <= step["elapsed_s"] <= (after - before).total_seconds() + 5
    assert (Path(tmp_path / "runs" / run_id / "nap" / "nap.txt")).read_text().strip() == "rested"
