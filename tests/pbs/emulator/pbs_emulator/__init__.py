"""A PBS Professional command emulator for tests: ``qsub``, ``qstat`` and ``qdel`` executables that run
jobs as real local processes and answer in the formats of a real PBS server (docs/pbs-emulator.md).

Put :data:`BIN_DIR` first on ``PATH`` and point ``PBS_EMULATOR_HOME`` at a fresh directory; or call
:func:`environment` for the variables to set.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .faults import KINDS, clear, inject

BIN_DIR = Path(__file__).resolve().parent.parent / "bin"

__all__ = ["BIN_DIR", "KINDS", "clear", "environment", "inject", "is_down", "job_states", "restart", "wait_idle"]


def environment(home, server: str = "pbs1", slots: int = 2, require_project: bool = False,
                base: dict | None = None, **extra: str) -> dict:
    """Environment variables that make ``qsub``/``qstat``/``qdel`` resolve to this emulator."""
    env = dict(os.environ if base is None else base)
    env["PATH"] = f"{BIN_DIR}{os.pathsep}{env.get('PATH', '')}"
    env.update(PBS_EMULATOR_HOME=str(home), PBS_EMULATOR_SERVER=server, PBS_EMULATOR_SLOTS=str(slots))
    if require_project:
        env["PBS_EMULATOR_REQUIRE_PROJECT"] = "1"
    env.update({k: str(v) for k, v in extra.items()})
    return env


def job_states(home) -> dict[str, str]:
    """``{job id: state}`` for every job and subjob the server still knows (read-only peek for tests)."""
    path = Path(home) / "state.json"
    if not path.exists():
        return {}
    states = {}
    for job in json.loads(path.read_text()).get("jobs", {}).values():
        states[job["id"]] = job["state"]
        for index, sub in (job.get("subjobs") or {}).items():
            states[f"{job['num']}[{index}].{job['server']}"] = sub["state"]
    return states


def is_down(home) -> bool:
    """Whether the emulated server has crashed (see ``server.crashes_on_delete``)."""
    from . import server, store

    with store.locked(Path(home), write=False) as s:
        return server.is_down(s)


def restart(home) -> None:
    """Start a crashed server again (``pbs_server`` restarted by an administrator)."""
    from . import server, store

    with store.locked(Path(home)) as s:
        s.data.pop("down", None)
        server.schedule(s)


def wait_idle(home, timeout: float = 60.0) -> None:
    """Wait until no job is queued, held or running (e.g. before a test's tmp dir goes away)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(s == "F" for s in job_states(home).values()):
            return
        time.sleep(0.1)
    raise TimeoutError(f"PBS emulator jobs still active after {timeout}s: {job_states(home)}")
