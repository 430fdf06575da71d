"""Fixtures for the tests against a real Slurm (``bash scripts/slurm-testbed.sh start``).

Without a running Slurm these tests skip, saying why; with ``CI=true`` they fail instead, so that CI never
passes by skipping them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmjobs.cluster.backends.base import JobRef, JobStatus, StepJob
from llmjobs.cluster.backends.slurm import SlurmBackend
from llmjobs.cluster.profiles import Profile, profile_from_file
from llmjobs.jobs.task import ShardTask
from llmjobs.resources import Resources

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "clusters" / "slurm.yaml"
TESTBED = REPO / "scripts" / "slurm-testbed.sh"


def slurm_problem() -> str | None:
    """Why Slurm cannot be used here, or None when it answers (controller, nodes and accounting)."""
    for tool in ("sbatch", "sacct", "scontrol", "sinfo"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    try:
        if subprocess.run(["scontrol", "ping"], capture_output=True, timeout=20, check=False).returncode != 0:
            return "slurmctld does not answer (scontrol ping)"
        if subprocess.run(["sacct", "-n", "-X", "-j", "1"], capture_output=True, timeout=20, check=False).returncode != 0:
            return "accounting (sacct/slurmdbd) does not answer"
        states = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True, check=False,
                                timeout=20).stdout
    except subprocess.TimeoutExpired as e:
        return f"{e.cmd[0]} timed out"
    up = {line.split()[0] for line in states.splitlines()
          if line.split()[1].rstrip("*~#") in ("idle", "mixed", "allocated", "completing")}
    if not {"n1", "n2"} <= up:
        return f"testbed nodes n1 and n2 are not both up:\n{states}"
    return None


@pytest.fixture(scope="session")
def slurm() -> None:
    problem = slurm_problem()
    if problem is None:
        return
    message = f"no Slurm testbed running ({problem}); start it with: bash {TESTBED.relative_to(REPO)} start"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def profile(slurm) -> Profile:
    return profile_from_file(PROFILE)


@pytest.fixture
def backend(profile) -> SlurmBackend:
    return SlurmBackend(profile)


def shell_tasks(root: Path, step: str, command: str, shards: int = 1, **fields) -> list[ShardTask]:
    return [ShardTask(run_id="t", step=step, kind="shell", shard=i, num_shards=shards,
                      params={"command": command}, output_dir=str(root / step),
                      state_dir=str(root / ".state" / step), **fields) for i in range(shards)]


def step_job(root: Path, step: str, tasks: list[ShardTask], walltime: str = "00:05:00", round: int = 1,
             **kw) -> StepJob:
    res = kw.pop("resources", None) or Resources(walltime=walltime)
    return StepJob(run_id="t", step=step, tasks=tasks, resources=res,
                   folder=root / "logs" / step / f"submit-{round}", **kw)


def refs(submitted) -> list[JobRef]:
    return [JobRef(s.job_id, s.folder) for s in submitted]


def wait_until(backend: SlurmBackend, jobs: list[JobRef], done, timeout: float = 240,
               interval: float = 2) -> dict[str, JobStatus]:
    """Poll until ``done(statuses)``; fails with the last statuses if it does not happen in time."""
    deadline = time.monotonic() + timeout
    statuses: dict[str, JobStatus] = {}
    while time.monotonic() < deadline:
        statuses = backend.poll(jobs)
        if done(statuses):
            return statuses
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s; last statuses: "
                f"{ {k: (v.state.value, v.reason) for k, v in statuses.items()} }")


def all_ended(jobs: list[JobRef]):
    return lambda st: len(st) == len(jobs) and all(not s.state.live for s in st.values())


def llmjobs_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmjobs.cli", *args], capture_output=True, text=True, check=False,
                          env={**os.environ, **(env or {})}, timeout=timeout)
