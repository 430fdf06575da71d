"""What the PBS backend refuses at submit, before anything is recorded or queued."""

from __future__ import annotations

import pytest

REQUEUES = """
name: requeued
defaults: {resources: {walltime: "00:05:00"}}
steps:
  train:
    kind: shell
    requeues: 2
    params: {command: "true"}
"""


@pytest.mark.timeout(120)
def test_requeues_are_refused_on_pbs(pbs_cli, pbs_server, tmp_path, pbs_profile):
    # PBS sends no signal before the walltime: a requeue could never happen, so the field is refused
    profile = pbs_profile()
    recipe = tmp_path / "requeued.yaml"
    recipe.write_text(REQUEUES)
    r = pbs_cli("submit", recipe, "--cluster", profile)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "step 'train': requeues: 2 cannot work on PBS" in " ".join(r.stderr.split())
    assert "Traceback" not in r.stderr
    assert pbs_server.states() == {}  # nothing queued
    runs = pbs_cli("runs", "--json")
    assert runs.returncode == 0 and "requeued" not in runs.stdout  # nothing recorded
    # without requeues the same recipe is accepted
    recipe.write_text(REQUEUES.replace("requeues: 2", "retries: 0"))
    r = pbs_cli("submit", recipe, "--cluster", profile, "--dry-run")
    assert r.returncode == 0, r.stderr
