"""Requeue on timeout through the CLI on the Slurm testbed: a checkpointing python step is signalled before
its walltime and requeued as the same job (``requeues: 1``), or ends with ``timeout`` and ``resume`` picks
it up from its checkpoint (``requeues: 0``)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from .conftest import PROFILE, llmjobs_cli
from .test_cli import status, wait_run

pytestmark = pytest.mark.slurm

CHECKPOINTING = """
import time


def work(ctx):
    ctx.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    progress = ctx.checkpoint_dir / "progress"
    with open(ctx.output_dir / "starts.txt", "a") as f:
        f.write("start\\n")
    if not progress.exists():
        progress.write_text("half")  # what a real step saves as it goes
        time.sleep(600)  # the walltime's checkpoint signal (or Slurm's kill) interrupts this
    (ctx.output_dir / "result.txt").write_text("resumed from " + progress.read_text())
"""


@pytest.mark.parametrize("requeues", [1, 0])
def test_timeout_requeues_a_checkpointing_step(slurm, home, tmp_path, requeues):
    (tmp_path / "ckmod.py").write_text(CHECKPOINTING)
    profile = yaml.safe_load(PROFILE.read_text())
    # Slurm sends the signal from a periodic check, up to a minute off the time asked (it came at the very
    # time limit of a one-minute walltime with a 30 s delay once): 90 s before a three-minute walltime leaves
    # the handler its time whichever tick sends it
    profile["scheduler"]["signal_delay_s"] = 90
    profile["env"] = {**profile.get("env", {}), "PYTHONPATH": str(tmp_path)}
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(profile))
    recipe = {"name": "ck", "steps": {"w": {"kind": "python", "requeues": requeues,
                                            "resources": {"walltime": "00:03:00"},
                                            "params": {"function": "ckmod:work"}}}}
    (tmp_path / "ck.yaml").write_text(yaml.safe_dump(recipe))

    # the module is importable where we submit (checked at submit) and, through the profile's env, in the job
    r = llmjobs_cli("submit", str(tmp_path / "ck.yaml"), "--cluster", str(tmp_path / "cluster.yaml"),
                    env={"PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))})
    assert r.returncode == 0, r.stderr
    run_id = r.stdout.strip().splitlines()[-1]
    # a requeued job waits out Slurm's credential lifetime (about two minutes) before it starts again
    view = wait_run(run_id, timeout=600)
    out = Path(view["steps"][0]["output"])
    (attempt,) = view["steps"][0]["shards"][0]["attempts"]
    if requeues:
        assert view["status"] == "succeeded", json.dumps(view, indent=1)
        assert attempt["state"] == "succeeded"
        assert (out / "starts.txt").read_text().split() == ["start", "start"]  # one job, started twice
        # Slurm itself requeued that job: its accounting (with duplicates) shows the same id twice
        states = subprocess.run(["sacct", "-X", "-n", "-D", "-P", "-j", attempt["job_id"], "-o", "State"],
                                capture_output=True, text=True, check=True).stdout.split()
        assert states == ["REQUEUED", "COMPLETED"], states
    else:
        assert view["status"] == "failed", json.dumps(view, indent=1)
        assert (attempt["state"], attempt["reason"]) == ("failed", "timeout")
        assert (out / "starts.txt").read_text().split() == ["start"]
        assert not (out / "result.txt").exists()
        r = llmjobs_cli("resume", run_id, "--wait", timeout=400)
        assert r.returncode == 0, r.stderr
        view = status(run_id)
        assert view["status"] == "succeeded", json.dumps(view, indent=1)
        first, second = view["steps"][0]["shards"][0]["attempts"]
        assert (first["state"], second["state"]) == ("failed", "succeeded")
        assert first["job_id"] != second["job_id"]
    assert (out / "result.txt").read_text() == "resumed from half"
