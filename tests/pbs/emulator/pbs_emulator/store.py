"""On-disk state of the emulated PBS server: one JSON file guarded by an exclusive file lock.

Every command (qsub, qstat, qdel) and every job runner opens the store under the lock, changes it and
writes it back atomically, so concurrent commands see one consistent server.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path

STATE_FILE = "state.json"


def home_dir() -> Path:
    home = os.environ.get("PBS_EMULATOR_HOME")
    if not home:
        raise SystemExit("PBS_EMULATOR_HOME is not set: the PBS emulator needs a state directory")
    path = Path(home)
    path.mkdir(parents=True, exist_ok=True)
    return path


def server_name() -> str:
    return os.environ.get("PBS_EMULATOR_SERVER", "pbs1")


def node_name() -> str:
    return os.environ.get("PBS_EMULATOR_NODE") or socket.gethostname().split(".")[0]


def submit_host() -> str:
    return socket.gethostname()


def slots() -> int:
    return int(os.environ.get("PBS_EMULATOR_SLOTS", "2"))


def pbs_version() -> str:
    return os.environ.get("PBS_EMULATOR_VERSION", "23.06.06")


def kill_delay() -> float:
    # PBS's queue attribute kill_delay (default 10 s) separates SIGTERM from SIGKILL; tests want it short.
    return float(os.environ.get("PBS_EMULATOR_KILL_DELAY", "2"))


def array_exit_rule() -> str:
    """``last`` (default): the array's exit status is its last-ending subjob's, as OpenPBS 23.06 does;
    ``any``: non-zero when any subjob failed, as PBS documents it."""
    rule = os.environ.get("PBS_EMULATOR_ARRAY_EXIT", "last")
    if rule not in ("last", "any"):
        raise SystemExit(f"PBS_EMULATOR_ARRAY_EXIT must be 'last' or 'any', not {rule!r}")
    return rule


def now() -> int:
    return int(time.time())


class Store:
    """The server's state: ``jobs`` maps the sequence number (as a string) to a job record."""

    def __init__(self, home: Path, data: dict):
        self.home = home
        self.data = data

    @property
    def jobs(self) -> dict:
        return self.data.setdefault("jobs", {})

    @property
    def faults(self) -> dict:
        return self.data.setdefault("faults", {})

    def next_number(self) -> int:
        number = self.data.get("next", 0) + 1
        self.data["next"] = number
        return number

    def spool(self) -> Path:
        path = self.home / "spool"
        path.mkdir(exist_ok=True)
        return path


@contextlib.contextmanager
def locked(home: Path | None = None, write: bool = True):
    home = home or home_dir()
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            path = home / STATE_FILE
            data = json.loads(path.read_text()) if path.exists() else {}
            store = Store(home, data)
            yield store
            if write:
                tmp = path.with_suffix(f".tmp{os.getpid()}")
                tmp.write_text(json.dumps(store.data, indent=1))
                os.replace(tmp, path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
