"""The exact batch script the Slurm backend submits (what ``submit --dry-run`` prints). Needs no Slurm."""

from __future__ import annotations

from pathlib import Path

from llmjobs.cluster.backends.base import JobRef, JobState, StepJob
from llmjobs.cluster.backends.slurm import SlurmBackend, job_status
from llmjobs.cluster.container import ContainerSpec, container_env
from llmjobs.cluster.profiles import Profile
from llmjobs.jobs.task import ShardTask
from llmjobs.resources import Resources

GOLDEN = """\
#!/bin/bash

# Parameters
#SBATCH --account=grp
#SBATCH --array=0-2%2
#SBATCH --constraint=h200
#SBATCH --cpus-per-task=16
#SBATCH --dependency=afterok:41:7
#SBATCH --error=/runs/r1/logs/gen/submit-1/%A_%a_0_log.err
#SBATCH --gpus-per-node=8
#SBATCH --job-name=r1.gen
#SBATCH --kill-on-invalid-dep=yes
#SBATCH --mail-type=END
#SBATCH --mem=256G
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --open-mode=append
#SBATCH --output=/runs/r1/logs/gen/submit-1/%A_%a_0_log.out
#SBATCH --partition=gpu
#SBATCH --qos=high
#SBATCH --requeue
#SBATCH --signal=USR2@120
#SBATCH --time=90
#SBATCH --wckey=submitit

# setup
module load cuda/12.4
export SINGULARITYENV_HF_HOME=/shared/hf
export SINGULARITYENV_HF_HUB_OFFLINE=1

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output /runs/r1/logs/gen/submit-1/%A_%a_%t_log.out --error \
/runs/r1/logs/gen/submit-1/%A_%a_%t_log.err singularity exec --nv --bind /shared,/scratch:/tmp \
/shared/llmjobs.sif python3 -u -m submitit.core._submit /runs/r1/logs/gen/submit-1
"""


def _job(requeues: int) -> tuple[SlurmBackend, StepJob]:
    profile = Profile(name="c", backend="slurm", env={"HF_HOME": "/shared/hf"}, setup=["module load cuda/12.4"],
                      scheduler={"partition": "gpu", "account": "grp", "qos": "high", "constraint": "h200",
                                 "array_parallelism": 2, "signal_delay_s": 120, "sbatch": {"mail-type": "END"}})
    container = ContainerSpec(image="/shared/llmjobs.sif", binds=["/shared", "/scratch:/tmp"],
                              env={"HF_HUB_OFFLINE": "1"})
    tasks = [ShardTask(run_id="r1", step="gen", kind="shell", shard=i, num_shards=3, params={"command": "x"},
                       output_dir="/runs/r1/gen", state_dir="/runs/r1/.llmjobs/gen", requeues=requeues)
             for i in range(3)]
    job = StepJob(run_id="r1", step="gen", tasks=tasks, folder=Path("/runs/r1/logs/gen/submit-1"),
                  resources=Resources(nodes=2, gpus_per_node=8, cpus=16, mem_gb=256, walltime="01:30:00"),
                  after=[JobRef("41_0", ""), JobRef("41_1", ""), JobRef("7", "")], container=container,
                  env=container_env(container, {}))  # as the controller passes it
    return SlurmBackend(profile), job


def test_batch_script_is_exactly_what_slurm_gets():
    backend, job = _job(requeues=2)
    expected = GOLDEN.replace("\\\n", "")
    assert backend.batch_script(job) == expected
    assert backend.describe(job).endswith(expected)


def test_shards_that_cannot_checkpoint_are_not_requeued_by_slurm():
    backend, job = _job(requeues=0)
    script = backend.batch_script(job)
    assert "#SBATCH --no-requeue" in script and "#SBATCH --requeue\n" not in script


def test_sacct_rows_map_to_states_and_reasons():
    rows = {
        ("PENDING", "Priority"): (JobState.QUEUED, "Priority"),
        ("PENDING", "DependencyNeverSatisfied"): (JobState.FAILED, "dependency failed"),
        ("CANCELLED", "Dependency"): (JobState.FAILED, "dependency failed"),  # --kill-on-invalid-dep
        ("CANCELLED", "None"): (JobState.FAILED, "dependency failed"),  # ... on a dependency failed already
        ("CANCELLED by 0", "Dependency"): (JobState.CANCELLED, "cancelled by 0"),
        ("RUNNING", "None"): (JobState.RUNNING, None),
        ("REQUEUED", "None"): (JobState.QUEUED, "requeued"),
        ("COMPLETED", "None"): (JobState.SUCCEEDED, None),
        ("TIMEOUT", "None"): (JobState.FAILED, "timeout"),
        ("NODE_FAIL", "None"): (JobState.FAILED, "node failure"),
        ("PREEMPTED", "None"): (JobState.FAILED, "preempted"),
        ("OUT_OF_MEMORY", "None"): (JobState.FAILED, "out of memory"),
    }
    for (state, reason), expected in rows.items():
        nodes = "None assigned" if state.startswith(("PENDING", "CANCELLED")) else "n1"
        st = job_status(state, reason, "0:0", nodes, "2026-01-01T00:00:00", "Unknown")
        assert (st.state, st.reason) == expected, (state, reason)
    failed = job_status("FAILED", "NonZeroExitCode", "3:0", "n2", "Unknown", "Unknown")
    assert (failed.state, failed.reason, failed.exit_code, failed.nodes) == (JobState.FAILED, "exit code 3", 3, "n2")
    assert job_status("FAILED", "None", "0:9", "", "", "").exit_code == 137  # killed by SIGKILL
    running_then_cancelled = job_status("CANCELLED", "None", "0:15", "n2", "Unknown", "Unknown")
    assert running_then_cancelled.state == JobState.CANCELLED  # it ran: not a dependency's doing
