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


def read_done(marker: Path) -> dict[str, Any] | None:
    try:
        return json.loads(marker.read_text())
    except FileNotFoundError:
        return None
    except ValueError:  # never written by write_done; treat as absent rather than trust it
        return None
