"""What one shard's job carries to the node, and where its completion marker lives.

A ``ShardTask`` is pickled by submitit into the job folder. It holds paths, not registry handles: jobs
write files, only the submitting side writes the registry.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ShardTask:
    run_id: str
    step: str
    kind: str
    shard: int
    num_shards: int
    params: dict[str, Any]
    output_dir: str  # the step's output directory (LLMJOBS_OUTPUT)
    state_dir: str  # the step's bookkeeping directory: DONE markers, locks
    attempt: int = 1
    retries: int = 0  # re-runs in place after a failure, before the shard fails
    env: dict[str, str] = field(default_factory=dict)
    # times the scheduler may requeue the shard on timeout/preemption; > 0 only for kinds that checkpoint
    # (they resume from checkpoint_dir). 0: a timed-out shard fails with reason "timeout".
    requeues: int = 0
    # DONE markers of every upstream shard: the runner refuses to start the kind unless each one is valid,
    # whatever the scheduler's dependency semantics say (a real PBS server releases an array's afterok
    # when the last subjob to finish succeeds, even if an earlier one failed)
    requires: tuple[str, ...] = ()

    @property
    def done_marker(self) -> Path:
        return done_marker(Path(self.state_dir), self.shard)

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.output_dir) / ".checkpoints" / f"shard-{self.shard:05d}"


def done_marker(state_dir: Path, shard: int) -> Path:
    return Path(state_dir) / f"shard-{shard:05d}.done"


def write_done(marker: Path, info: dict[str, Any]) -> None:
    """Write the marker atomically: a reader sees no marker or a whole one, never a half-written file."""
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_name(f".{marker.name}.{socket.gethostname()}.{os.getpid()}.tmp")
    payload = {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time(), **info}
    with open(tmp, "w") as f:
        json.dump(payload, f, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, marker)


def read_done(marker: Path | str) -> dict[str, Any] | None:
    """The one reader of DONE markers, used by status, gates, resume and the runner alike.

    A marker counts only if it is what ``write_done`` writes: a JSON object with an integer ``attempt`` and a
    numeric ``time``. Anything else (truncated, hand-made, the wrong shape) means not done, never a crash.
    """
    try:
        data = json.loads(Path(marker).read_text())
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, UnicodeDecodeError,
            ValueError):
        return None
    if not isinstance(data, dict):
        return None
    if not isinstance(data.get("attempt"), int) or isinstance(data.get("attempt"), bool):
        return None
    if not isinstance(data.get("time"), int | float) or isinstance(data.get("time"), bool):
        return None
    if "seconds" in data and not isinstance(data["seconds"], int | float):
        return None
    return data


def missing_requirements(task: ShardTask) -> list[str]:
    """Upstream DONE markers this shard needs that are absent or invalid."""
    return [m for m in task.requires if read_done(m) is None]


# ---- failure records: what a failed attempt leaves for the submitting side -----------------------------
# Schedulers report a job's exit code in their own ways (submitit's local jobs always say 1); the runner
# writes the kind's own exit code and reason here, and ``status`` prefers it to the scheduler's word.


def failure_record(state_dir: Path | str, shard: int, attempt: int) -> Path:
    return Path(state_dir) / f"shard-{shard:05d}.attempt-{attempt}.failed"


def write_failure(state_dir: Path | str, shard: int, attempt: int, exit_code: int, reason: str) -> None:
    path = failure_record(state_dir, shard, attempt)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"exit_code": int(exit_code), "reason": str(reason)[:2000], "time": time.time(),
                               "host": socket.gethostname()}))
    os.replace(tmp, path)


def read_failure(state_dir: Path | str, shard: int, attempt: int) -> dict[str, Any] | None:
    try:
        data = json.loads(failure_record(state_dir, shard, attempt).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("exit_code"), int):
        return None
    return data
