"""Containers on Slurm, end to end, with a stand-in runtime.

Neither SingularityCE nor Apptainer can be installed here, so an executable named ``singularity`` is put
first on PATH: it records its arguments, applies the runtime's SINGULARITYENV_* rule, and runs the inner
command on the host. Everything else (llmjobs, sbatch, srun, submitit, the job) runs for real.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import PROFILE, llmjobs_cli

pytestmark = pytest.mark.slurm

STANDIN = """#!/usr/bin/env bash
# stand-in for `singularity`: record argv, then run the inner command here
printf '%s\\n' "$(printf '%q ' "$@")" >> {log}
[ "$1" = exec ] || {{ echo "stand-in only knows exec" >&2; exit 64; }}
shift
while [ $# -gt 0 ]; do
  case "$1" in
    --nv) shift ;;
    --bind|-B) shift 2 ;;
    *) break ;;
  esac
done
[ -f "$1" ] || {{ echo "no image $1" >&2; exit 65; }}
shift
for v in $(compgen -e); do
  case "$v" in SINGULARITYENV_*) export "${{v#SINGULARITYENV_}}=${{!v}}" ;; esac
done
exec "$@"
"""


def test_step_runs_inside_the_container_command(slurm, home, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    argv_log = tmp_path / "singularity-argv.log"
    (bin_dir / "singularity").write_text(STANDIN.format(log=shlex.quote(str(argv_log))))
    (bin_dir / "singularity").chmod(0o755)
    image = tmp_path / "llmjobs.sif"
    image.write_bytes(b"stand-in image")
    # python3 inside the "container" is this interpreter's environment
    path = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]])
    monkeypatch.setenv("PATH", path)

    profile = yaml.safe_load(PROFILE.read_text())
    profile["container"] = {"runtime": "singularity", "image": str(image), "binds": [str(tmp_path), "/opt:/opt:ro"],
                            "env": {"HF_HUB_OFFLINE": "1"}, "gpu": True}
    profile["env"] = {"PROFILE_VAR": "from-profile"}
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(profile))
    recipe = {"name": "contained", "steps": {"hello": {"kind": "shell", "shards": 2, "resources": {"walltime": 5},
              "params": {"command": 'echo "$HF_HUB_OFFLINE $PROFILE_VAR $LLMJOBS_SHARD" > seen-$LLMJOBS_SHARD'}}}}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))

    r = llmjobs_cli("submit", str(tmp_path / "recipe.yaml"), "--cluster", str(tmp_path / "cluster.yaml"), "--wait",
                    env={"PATH": path})
    assert r.returncode == 0, r.stdout + r.stderr
    run_id = r.stdout.strip().splitlines()[0]
    view = json.loads(llmjobs_cli("status", run_id, "--json").stdout)
    out = Path(view["steps"][0]["output"])
    assert sorted(p.read_text() for p in out.glob("seen-*")) == ["1 from-profile 0\n", "1 from-profile 1\n"]

    calls = [shlex.split(line) for line in argv_log.read_text().splitlines()]
    assert len(calls) == 2  # one per shard, through srun
    folder = view["steps"][0]["shards"][0]["attempts"][0]["stdout"].rsplit("/", 1)[0]
    for argv in calls:
        assert argv == ["exec", "--nv", "--bind", f"{tmp_path},/opt:/opt:ro", str(image),
                        "python3", "-u", "-m", "submitit.core._submit", folder]
