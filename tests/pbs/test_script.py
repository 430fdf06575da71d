"""Golden tests of the qsub scripts the PBS backend renders for the ABCI profile.

Regenerate after an intended change with ``LLMJOBS_UPDATE_GOLDEN=1 pytest tests/pbs/test_script.py`` and
review the diff of ``tests/pbs/golden/``.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from llmjobs.cluster.backends.base import JobRef, StepJob
from llmjobs.cluster.backends.pbs import PBSBackend
from llmjobs.cluster.container import ContainerSpec, container_env
from llmjobs.cluster.pbs.script import render_script
from llmjobs.cluster.profiles import profile_from_file
from llmjobs.jobs.task import ShardTask
from llmjobs.resources import Resources

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
RUN_DIR = "/groups/gaa00000/llmjobs/runs/demo-0a1b2c"


def abci(**scheduler) -> PBSBackend:
    profile = profile_from_file(ROOT / "clusters" / "abci.yaml")
    profile.work_dir = "/groups/gaa00000/llmjobs/runs"
    profile.scheduler = {**profile.scheduler, "group": "gaa00000", **scheduler}
    return PBSBackend(profile)


def step_job(step: str, shards: int, resources: dict, after: list[str] = (), container: bool = True) -> StepJob:
    spec = ContainerSpec(image="/groups/gaa00000/images/llmjobs.sif", binds=["/groups"]) if container else None
    tasks = [ShardTask(run_id="demo-0a1b2c", step=step, kind="shell", shard=i, num_shards=shards,
                       params={"command": "true"}, output_dir=f"{RUN_DIR}/{step}",
                       state_dir=f"{RUN_DIR}/.state/{step}") for i in range(shards)]
    return StepJob(run_id="demo-0a1b2c", step=step, tasks=tasks, resources=Resources(**resources),
                   folder=Path(RUN_DIR) / "logs" / step / "submit-1",
                   after=[JobRef(j, f"{RUN_DIR}/logs/up/submit-1") for j in after], container=spec,
                   env=container_env(spec, {}) if spec else {})


CASES = {
    "single_node": (abci(), step_job("eval", 1, {"gpus_per_node": 1, "cpus": 8, "walltime": "02:00:00"})),
    "multi_node_rt_HF_x2": (abci(), step_job("train", 1, {"nodes": 2, "gpus_per_node": 8, "cpus": 96,
                                                          "walltime": "24:00:00"})),
    "multi_node_ssh": (abci(launcher="ssh"), step_job("train", 1, {"nodes": 2, "gpus_per_node": 8})),
    "array": (abci(), step_job("synth", 4, {"cpus": 16, "walltime": "00:30:00"})),
    "dependent": (abci(), step_job("score", 1, {"cpus": 4},
                                   after=["12[0].pbs1", "12[1].pbs1", "13.pbs1"])),
    "reservation": (abci(reservation="R1234"), step_job("train", 1, {"gpus_per_node": 8, "cpus": 64})),
    # PBS takes seconds: 20 s stays 20 s, not a minute
    "short_walltime": (abci(), step_job("probe", 1, {"cpus": 1, "walltime": "00:00:20"})),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name):
    backend, job = CASES[name]
    text = backend.batch_script(job, uid="0123456789abcdef")
    path = GOLDEN / f"{name}.sh"
    if os.environ.get("LLMJOBS_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{path} differs; if intended, regenerate with LLMJOBS_UPDATE_GOLDEN=1"


@pytest.mark.parametrize("name", sorted(CASES))
def test_script_rules(name):
    backend, job = CASES[name]
    text = backend.batch_script(job, uid="u")
    directives = [line for line in text.splitlines() if line.startswith("#PBS")]
    assert sum(d.startswith("#PBS -v") for d in directives) <= 1
    assert not any(re.match(r"#PBS -V\b", d) for d in directives)
    assert "#PBS -P gaa00000" in directives
    body = [line for line in text.splitlines()[1:] if line and not line.startswith("#")]
    assert body[0] == "source /etc/profile.d/modules.sh"
    assert body[1] == "module load singularitypro"
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)


def test_matched_types_and_queues():
    text = {name: backend.batch_script(job) for name, (backend, job) in CASES.items()}
    assert "#PBS -q rt_HG" in text["single_node"] and "#PBS -l select=1\n" in text["single_node"]
    assert "#PBS -q rt_HF" in text["multi_node_rt_HF_x2"] and "#PBS -l select=2\n" in text["multi_node_rt_HF_x2"]
    assert "mpirun -np 2 -hostfile" in text["multi_node_rt_HF_x2"]
    assert "#PBS -v USE_SSH=1" in text["multi_node_ssh"]
    assert "#PBS -q rt_HC" in text["array"] and "#PBS -J 0-3" in text["array"]
    assert "^array_index^" in text["array"]
    assert "#PBS -W depend=afterok:12[].pbs1:13.pbs1" in text["dependent"]
    assert "#PBS -q R1234" in text["reservation"] and "#PBS -v RTYPE=rt_HF" in text["reservation"]
    assert "#PBS -l walltime=00:00:20\n" in text["short_walltime"]


def test_one_combined_v_line():
    text = render_script("true", "/f", variables={"RTYPE": "rt_HF", "A": "1"}, nodes=2, launcher="pdsh")
    assert [line for line in text.splitlines() if line.startswith("#PBS -v")] == \
        ["#PBS -v RTYPE=rt_HF,A=1,USE_SSH=1"]
    with pytest.raises(ValueError, match="commas"):
        render_script("true", "/f", variables={"A": "x,y"})


def test_select_with_resources_when_asked():
    text = render_script("true", "/f", nodes=2, ncpus=8, ngpus=1, mem_gb=64)
    assert "#PBS -l select=2:ncpus=8:ngpus=1:mem=64gb" in text


def test_dry_run_description():
    backend, job = CASES["array"]
    text = backend.describe(job)
    assert text.startswith("# step synth: array of 4 tasks (shards 0,1,2,3) on rt_HC x1; submitted as:")
    assert "#PBS -J 0-3" in text
