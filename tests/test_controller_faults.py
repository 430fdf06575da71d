"""Controller behaviour under faults, with real processes on the local backend and a real SQLite registry:
a deleted DONE marker reruns its shard and the steps after it, the command's own exit code is recorded, a
killed submitter's `submitting` attempts do not block `resume`, a deleted registry is not silently recreated."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from llmjobs.cluster.controller import Controller, step_state_dir
from llmjobs.errors import UserError
from llmjobs.jobs.task import done_marker
from llmjobs.registry import Registry, Run, Shard, Step

TWO = """
name: two
defaults: {{resources: {{walltime: "00:05:00"}}}}
steps:
  A:
    kind: shell
    shards: 2
    params: {{command: "echo A$LLMJOBS_SHARD >> {log}; echo $LLMJOBS_SHARD > a-$LLMJOBS_SHARD.txt"}}
  B:
    kind: shell
    params: {{command: "echo B >> {log}; cat ${{steps.A.output}}/a-*.txt | wc -l > b.txt"}}
"""


def _lines(log: Path) -> list[str]:
    return sorted(log.read_text().split()) if log.exists() else []


def test_deleted_marker_reruns_its_shard_and_the_steps_after_it(cli, home, tmp_path):
    log = tmp_path / "ran.log"
    recipe = tmp_path / "two.yaml"
    recipe.write_text(TWO.format(log=log))
    r = cli("submit", recipe, "--wait")
    assert r.returncode == 0, r.stderr
    run_id = r.stdout.split()[0]
    view = cli.status(run_id)
    assert _lines(log) == ["A0", "A1", "B"]

    marker = done_marker(step_state_dir(view["run_dir"], "A"), 1)
    marker.unlink()
    assert cli.status(run_id)["status"] == "succeeded"  # a finished run is not re-scanned by status...
    r = cli("resume", run_id, "--wait")  # ...but resume re-checks every marker
    assert r.returncode == 0, r.stderr
    assert _lines(log) == ["A0", "A1", "A1", "B", "B"]  # A[1] again, and B, which read A's old output
    view = cli.status(run_id)
    assert view["status"] == "succeeded"
    attempts = {s["name"]: [len(sh["attempts"]) for sh in s["shards"]] for s in view["steps"]}
    assert attempts == {"A": [1, 2], "B": [2]}
    con = sqlite3.connect(home / "registry.db")
    rows = con.execute("SELECT st.name, count(*) FROM artifacts a JOIN steps st ON st.id = a.step_id "
                       "WHERE st.run_id = ? GROUP BY st.name", (run_id,)).fetchall()
    con.close()
    assert dict(rows) == {"A": 1, "B": 1}  # the second success updated each step's artifact in place


def test_the_commands_own_exit_code_is_recorded(cli, tmp_path):
    recipe = tmp_path / "three.yaml"
    recipe.write_text("name: three\nsteps:\n  x:\n    kind: shell\n    params: {command: 'echo no >&2; exit 3'}\n")
    r = cli("submit", recipe, "--wait")
    assert r.returncode == 1
    (attempt,) = cli.status(r.stdout.split()[0])["steps"][0]["shards"][0]["attempts"]
    assert (attempt["state"], attempt["exit_code"]) == ("failed", 3)
    assert "3" in attempt["reason"]


def test_a_killed_submitters_attempts_do_not_block_resume(home, tmp_path):
    """An attempt left `submitting` by a submitter process that is gone is lost at once, not after the two
    minutes a submitter on another host gets; resume then runs the shard."""
    reg = Registry()
    run_dir = tmp_path / "runs" / "cut-1"
    with reg.session() as s:
        run = Run(id="cut-1", name="cut", status="pending", recipe={}, backend="local", run_dir=str(run_dir),
                  profile={"name": "local", "backend": "local"}, version="0")
        step = Step(name="s", position=0, kind="shell", params={"command": "echo ran > out.txt"},
                    resources={"walltime": "00:05:00"}, after=[], num_shards=1, fingerprint="f",
                    status="pending", output_dir=str(run_dir / "s"))
        step.shards = [Shard(index=0, status="pending")]
        run.steps.append(step)
        s.add(run)
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer exists: the killed `llmjobs submit`
    with reg.session() as s:
        shard = s.get(Run, "cut-1").steps[0].shards[0]
        (a,) = reg.new_attempts(s, [shard.id], "local")
        a.submitter_pid = gone.pid
    ctl = Controller(reg)
    ctl.refresh("cut-1")
    assert ctl.resume("cut-1") == 1  # not "still running"
    assert ctl.wait("cut-1", interval=0.3) == "succeeded"
    with reg.read() as s:
        states = [(x.state, x.reason) for x in s.get(Run, "cut-1").steps[0].shards[0].attempts]
    assert states[0][0] == "lost" and f"process {gone.pid} is gone" in states[0][1]
    assert states[1][0] == "succeeded"
    assert (run_dir / "s" / "out.txt").read_text().strip() == "ran"


def test_a_deleted_registry_is_not_silently_recreated(cli, home, tmp_path):
    recipe = tmp_path / "one.yaml"
    recipe.write_text("name: one\nsteps:\n  x:\n    kind: shell\n    params: {command: 'true'}\n")
    r = cli("submit", recipe, "--wait")
    assert r.returncode == 0, r.stderr
    (home / "registry.db").unlink()
    r = cli("runs")
    assert r.returncode == 2
    assert "does not exist" in r.stderr and "LLMJOBS_NEW_REGISTRY=1" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (home / "registry.db").exists()
    with pytest.raises(UserError, match="run folder"):
        Registry()
    cli.env["LLMJOBS_NEW_REGISTRY"] = "1"
    r = cli("runs", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == []
