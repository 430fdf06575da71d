"""`llmjobs` end to end on the real Slurm testbed: submit, status, resume, bad input, dry run."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from .conftest import PROFILE, REPO, llmjobs_cli

pytestmark = pytest.mark.slurm


def status(run_id: str) -> dict:
    r = llmjobs_cli("status", run_id, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def wait_run(run_id: str, timeout: float = 300, until=lambda v: v["status"] not in ("pending", "queued", "running")):
    deadline = time.monotonic() + timeout
    view = status(run_id)
    while not until(view):
        if time.monotonic() > deadline:
            pytest.fail(f"run {run_id} still {view['status']} after {timeout}s:\n{json.dumps(view, indent=1)}")
        time.sleep(3)
        view = status(run_id)
    return view


def llmjobs_processes(home: Path) -> list[str]:
    """Command lines of running llmjobs CLI processes of this test (its LLMJOBS_HOME); the DAG needs none."""
    found = []
    mine = f"LLMJOBS_HOME={home}".encode()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        text = b" ".join(argv).decode(errors="replace")
        if ("llmjobs.cli" in text or any(a.endswith(b"/llmjobs") for a in argv[:2])) and mine in environ:
            found.append(text)
    return found


def attempts(view: dict, step: str) -> list[list[dict]]:
    st = next(s for s in view["steps"] if s["name"] == step)
    return [sh["attempts"] for sh in st["shards"]]


def test_quickstart_dag_runs_unattended(slurm, home):
    r = llmjobs_cli("submit", str(REPO / "recipes" / "quickstart.yaml"), "--cluster", str(PROFILE))
    assert r.returncode == 0, r.stderr
    run_id = r.stdout.strip().splitlines()[-1]
    # submit returned before the work was done, and left nothing of llmjobs running
    assert status(run_id)["status"] in ("queued", "running")
    assert llmjobs_processes(home) == []
    view = wait_run(run_id)
    assert view["status"] == "succeeded", json.dumps(view, indent=1)
    square = attempts(view, "square")
    base = square[0][0]["job_id"].split("_")[0]
    assert [a[0]["job_id"] for a in square] == [f"{base}_{i}" for i in range(4)]  # one array job
    for st in view["steps"]:
        for sh in st["shards"]:
            assert [(a["state"], bool(a["job_id"])) for a in sh["attempts"]] == [("succeeded", True)]
    total = next(s for s in view["steps"] if s["name"] == "total")
    assert (Path(total["output"]) / "total.txt").read_text().strip() == str(sum(i * i for i in range(1, 101)))


def _recipe(tmp_path: Path, work_sleep: int) -> Path:
    log = tmp_path / "effects.log"
    line = f'echo "$LLMJOBS_STEP $LLMJOBS_SHARD {{}}" >> {log}'
    recipe = {
        "name": "cancel-one",
        "defaults": {"resources": {"walltime": "00:05:00"}},
        "steps": {
            "prep": {"kind": "shell", "params": {"command": line.format("end")}},
            "work": {"kind": "shell", "shards": 4, "after": ["prep"],
                     "params": {"command": f"{line.format('start')}; sleep {work_sleep}; {line.format('end')}"}},
            "final": {"kind": "shell", "after": ["work"], "params": {"command": line.format("end")}},
        },
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_scancel_one_array_task_then_resume_reruns_only_what_is_needed(slurm, home, tmp_path):
    r = llmjobs_cli("submit", str(_recipe(tmp_path, 15)), "--cluster", str(PROFILE))
    assert r.returncode == 0, r.stderr
    run_id = r.stdout.strip().splitlines()[-1]
    view = wait_run(run_id, until=lambda v: all(a and a[-1]["job_id"] for a in attempts(v, "work")))
    victim = attempts(view, "work")[2][0]["job_id"]
    subprocess.run(["scancel", victim], check=True)
    view = wait_run(run_id)
    assert view["status"] == "failed", json.dumps(view, indent=1)
    work = attempts(view, "work")
    assert work[2][0]["state"] == "cancelled"
    assert [a[0]["state"] for i, a in enumerate(work) if i != 2] == ["succeeded"] * 3
    assert (attempts(view, "final")[0][0]["state"], attempts(view, "final")[0][0]["reason"]) == \
        ("failed", "dependency failed")

    r = llmjobs_cli("resume", run_id, "--wait", timeout=300)
    assert r.returncode == 0, r.stderr
    view = status(run_id)
    assert view["status"] == "succeeded"
    assert [len(a) for a in attempts(view, "prep")] == [1]
    assert [len(a) for a in attempts(view, "work")] == [1, 1, 2, 1]
    assert [len(a) for a in attempts(view, "final")] == [2]
    ends = [tuple(line.split()) for line in (tmp_path / "effects.log").read_text().splitlines()
            if line.endswith("end")]
    assert sorted(ends) == sorted([("prep", "0", "end"), ("final", "0", "end")]
                                  + [("work", str(i), "end") for i in range(4)])


def _profile_with(tmp_path: Path, **scheduler) -> Path:
    data = yaml.safe_load(PROFILE.read_text())
    data["scheduler"].update(scheduler)
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("profile_change, overrides, slurm_says", [
    ({"partition": "nosuch"}, [], "invalid partition name"),
    ({"account": "nosuch"}, [], "invalid account"),
    ({}, ["steps.square.resources.gpus_per_node=1"], "requested node configuration is not available"),
    ({}, ["steps.square.resources.walltime=02:00:00"], "time limit"),
])
def test_bad_input_is_refused_at_submit(slurm, home, tmp_path, profile_change, overrides, slurm_says):
    queue = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True).stdout
    args = [a for o in overrides for a in ("--set", o)]
    r = llmjobs_cli("submit", str(REPO / "recipes" / "quickstart.yaml"), "--cluster",
                    str(_profile_with(tmp_path, **profile_change)), *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert slurm_says in " ".join(r.stderr.split()).lower()
    runs = llmjobs_cli("runs", "--json")
    assert runs.returncode == 0 and json.loads(runs.stdout) == []
    assert subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True,
                          check=True).stdout == queue


def test_dry_run_prints_the_batch_scripts_and_queues_nothing(slurm, home):
    queue = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True).stdout
    r = llmjobs_cli("submit", str(REPO / "recipes" / "quickstart.yaml"), "--cluster", str(PROFILE), "--dry-run")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.count("#!/bin/bash") == 3
    assert "#SBATCH --array=0-3%4" in out
    assert "#SBATCH --partition=debug" in out and "#SBATCH --account=llm" in out
    assert "#SBATCH --dependency='afterok:<numbers>'" in out
    assert "#SBATCH --dependency='afterok:<square>'" in out  # the whole array
    assert "-u -m submitit.core._submit" in out
    assert subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True,
                          check=True).stdout == queue
