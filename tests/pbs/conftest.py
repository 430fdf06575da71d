"""Fixtures for the PBS tests: a PBS command emulator (``tests/pbs/emulator``) on PATH for each test.

The emulator's ``qsub``/``qstat``/``qdel`` run each job as a local process and answer in the formats captured
from a real server, with the faults a test injects; ``tests/pbs/real`` drives a real OpenPBS server instead.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

EMULATOR = Path(__file__).parent / "emulator"
if str(EMULATOR) not in sys.path:
    sys.path.insert(0, str(EMULATOR))


@dataclass
class PBSServer:
    home: Path
    env: dict[str, str]

    def inject(self, kind: str, count: int = 1, **params) -> None:
        import pbs_emulator

        pbs_emulator.inject(self.home, kind, count=count, **params)

    def clear(self) -> None:
        import pbs_emulator

        pbs_emulator.clear(self.home)

    def is_down(self) -> bool:
        import pbs_emulator

        return pbs_emulator.is_down(self.home)

    def restart(self) -> None:
        import pbs_emulator

        pbs_emulator.restart(self.home)

    def states(self) -> dict[str, str]:
        import pbs_emulator

        return pbs_emulator.job_states(self.home)

    def run(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), capture_output=True, text=True, env=self.env, timeout=60,
                              check=False)


@pytest.fixture
def pbs_server(tmp_path, monkeypatch):
    import pbs_emulator

    from llmjobs.cluster.pbs import executor

    home = tmp_path / "pbs-server"
    env = pbs_emulator.environment(home, server="pbs1", slots=4, require_project=True,
                                   LLMJOBS_PBS_RETRY_DELAY="0.05", PBS_EMULATOR_KILL_DELAY="1")
    for key in ("PATH", "PBS_EMULATOR_HOME", "PBS_EMULATOR_SERVER", "PBS_EMULATOR_SLOTS",
                "PBS_EMULATOR_REQUIRE_PROJECT", "LLMJOBS_PBS_RETRY_DELAY", "PBS_EMULATOR_KILL_DELAY"):
        monkeypatch.setenv(key, env[key])
    # job ids restart at 1 on every emulated server: the watcher's cache must not leak across tests
    monkeypatch.setattr(executor.PBSJob, "watcher", executor.PBSInfoWatcher(delay_s=1))
    server = PBSServer(home, env)
    yield server
    server.clear()
    pbs_emulator.restart(home)  # a test may have crashed it on purpose
    live = [j for j, s in server.states().items() if s != "F" and not ("[" in j and not j.endswith("[].pbs1"))]
    if live:
        server.run("qdel", *live)
    try:
        pbs_emulator.wait_idle(home, timeout=30)
    except TimeoutError:
        pass


@pytest.fixture
def pbs_cli(pbs_server, cli):
    cli.env.update(pbs_server.env)
    return cli


# the ABCI 3.0 resource types (clusters/abci.yaml)
RESOURCE_TYPES = {
    "rt_HC": {"name": "rt_HC", "gpus": 0, "cpus": 32, "mem_gb": 320, "max_nodes": 1},
    "rt_HG": {"name": "rt_HG", "gpus": 1, "cpus": 16, "mem_gb": 160, "max_nodes": 1},
    "rt_HF": {"name": "rt_HF", "gpus": 8, "cpus": 192, "mem_gb": 1920, "max_nodes": 128},
}


@pytest.fixture
def pbs_profile(tmp_path):
    """Writes a PBS cluster profile for the emulator: group gtest, this Python, runs under tmp_path/runs;
    ``types`` names the resource types it offers (None: the profile's defaults), ``scheduler`` adds options."""

    def make(types: tuple[str, ...] | None = None, **scheduler) -> Path:
        doc = {"backend": "pbs", "work_dir": str(tmp_path / "runs"),
               "scheduler": {"group": "gtest", "python": sys.executable, **scheduler}}
        if types is not None:
            doc["resources"] = {"types": [RESOURCE_TYPES[t] for t in types]}
        path = tmp_path / "pbs.yaml"
        path.write_text(yaml.safe_dump(doc))
        return path

    return make
