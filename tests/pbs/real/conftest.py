"""Fixtures for the tests against a real OpenPBS server (``bash scripts/pbs-testbed.sh start``).

The test bed runs pbs_server, pbs_sched, pbs_comm and pbs_mom inside a network namespace; the PBS commands
work only in there, so these tests put the test bed's shim folder first on PATH: ``qsub``/``qstat``/``qdel``
that run the real commands inside the namespace. ``LLMJOBS_TEST_PBS_BIN`` names that folder
(``scripts/pbs-testbed.sh bin`` prints it); without it, the test bed's default folder is used.

Without a running server these tests skip, saying why; with ``CI=true`` they fail instead, so that CI never
passes by skipping them (the policy of the ``slurm`` tests).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
TESTBED = REPO / "scripts" / "pbs-testbed.sh"
DEFAULT_BIN = REPO / ".testbed" / "pbs" / "bin"

# ABCI's shape: resource types are queues (the test bed creates rt_HC, rt_HG, rt_HF); -P is accepted as is.
# The job's python imports this checkout's llmjobs (PYTHONPATH), whatever the venv has installed.
PROFILE = """
backend: pbs
work_dir: {work}
env:
  PYTHONPATH: {repo}
scheduler:
  group: gtest
  python: {python}
  modules_init: null
  lost_grace_s: 120
resources:
  types:
    - {{name: rt_HC, gpus: 0, cpus: 32, mem_gb: 320, max_nodes: 1}}
    - {{name: rt_HG, gpus: 1, cpus: 16, mem_gb: 160, max_nodes: 1}}
    - {{name: rt_HF, gpus: 8, cpus: 192, mem_gb: 1920, max_nodes: 128}}
"""


def shim_dir() -> Path:
    return Path(os.environ.get("LLMJOBS_TEST_PBS_BIN") or DEFAULT_BIN)


class RealPBS:
    """The test bed's server, through its shims (each command runs inside the namespace)."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bin / argv[0]), *argv[1:]], capture_output=True, text=True,
                              env=self.env, timeout=timeout, check=False)

    def answers(self) -> bool:
        try:
            return self.run("qstat", "-B", timeout=30).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def unfinished(self) -> dict[str, str]:
        """Job (and subjob) id -> state of every job the server has not finished."""
        r = self.run("qstat", "-t", "-f", "-F", "json")
        assert r.returncode in (0, 153), r.stderr
        jobs = json.loads(r.stdout or "{}").get("Jobs", {}) if r.stdout.strip() else {}
        return {job_id: attrs.get("job_state", "?") for job_id, attrs in jobs.items()
                if attrs.get("job_state") not in ("F", "X", "M")}

    def delete_all(self) -> None:
        """Delete what is left, one id at a time, arrays whole (several subjobs of one array plus another job in
        one qdel crash this release's server)."""
        for job_id in self.unfinished():
            if "[" in job_id and not job_id.split(".")[0].endswith("[]"):
                continue  # a subjob: its array is deleted whole
            self.run("qdel", "-W", "force", job_id)


def pbs_problem(bin_dir: Path) -> str | None:
    """Why the real server cannot be used, or None when it answers and its node is up."""
    if not (bin_dir / "qstat").exists():
        return f"no PBS shims in {bin_dir} (set LLMJOBS_TEST_PBS_BIN)"
    pbs = RealPBS(bin_dir)
    try:
        r = pbs.run("qstat", "-B", timeout=30)
        if r.returncode != 0:
            return f"pbs_server does not answer (qstat -B: {' '.join((r.stderr or r.stdout).split())[:300]})"
        nodes = pbs.run("pbsnodes", "-a", "-F", "json", timeout=30)
    except subprocess.TimeoutExpired as e:
        return f"{e.cmd[0]} timed out"
    states = [n.get("state", "") for n in json.loads(nodes.stdout or "{}").get("nodes", {}).values()] \
        if nodes.returncode == 0 else []
    if not any(s.split(",")[0] in ("free", "job-busy") for s in states):
        return f"no PBS node is up (pbsnodes: {states or nodes.stderr.strip()})"
    return None


@pytest.fixture(scope="session")
def pbs_real() -> RealPBS:
    bin_dir = shim_dir()
    problem = pbs_problem(bin_dir)
    if problem is None:
        return RealPBS(bin_dir)
    message = f"no OpenPBS test bed running ({problem}); start it with: bash {TESTBED.relative_to(REPO)} start"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def real_pbs(pbs_real):
    """The server for one test: whatever the test leaves queued or running is deleted afterwards, and a server
    the test crashed is started again (so that it fails alone, not every test after it)."""
    yield pbs_real
    if not pbs_real.answers():
        subprocess.run(["bash", str(TESTBED), "start"], capture_output=True, timeout=300, check=False)
    if pbs_real.answers():
        pbs_real.delete_all()


@pytest.fixture
def real_cli(real_pbs, cli):
    """The real ``llmjobs`` command with the test bed's qsub/qstat/qdel first on PATH."""
    cli.env["PATH"] = real_pbs.env["PATH"]
    cli.env["LLMJOBS_PBS_RETRY_DELAY"] = "0.5"
    return cli


@pytest.fixture
def profile(tmp_path) -> Path:
    path = tmp_path / "pbs-real.yaml"
    path.write_text(PROFILE.format(work=tmp_path / "runs", repo=REPO, python=sys.executable))
    return path


def attempts(view: dict, step: str) -> dict[int, list[dict]]:
    [s] = [s for s in view["steps"] if s["name"] == step]
    return {sh["index"]: sh["attempts"] for sh in s["shards"]}


def wait_for(what: str, predicate, timeout: float = 120, interval: float = 1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
