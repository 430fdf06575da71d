"""The context a step kind receives: where it is, which shard, which rank."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmjobs.jobs.task import ShardTask


@dataclass
class StepContext:
    run_id: str
    step: str
    shard: int
    num_shards: int
    output_dir: Path
    checkpoint_dir: Path
    params: dict[str, Any]
    attempt: int = 1
    rank: int = 0  # node rank within a multi-node shard
    world_size: int = 1  # nodes of the shard
    head_node: str = field(default_factory=socket.gethostname)
    hostnames: list[str] = field(default_factory=list)

    @classmethod
    def from_task(cls, task: ShardTask) -> StepContext:
        rank, world, head, hosts = _distributed_env()
        return cls(
            run_id=task.run_id,
            step=task.step,
            shard=task.shard,
            num_shards=task.num_shards,
            output_dir=Path(task.output_dir),
            checkpoint_dir=task.checkpoint_dir,
            params=dict(task.params),
            attempt=task.attempt,
            rank=rank,
            world_size=world,
            head_node=head,
            hostnames=hosts,
        )

    @property
    def is_head(self) -> bool:
        return self.rank == 0

    def env(self) -> dict[str, str]:
        """The variables a child process (the shell kind's command) sees."""
        return {
            "LLMJOBS_RUN_ID": self.run_id,
            "LLMJOBS_STEP": self.step,
            "LLMJOBS_SHARD": str(self.shard),
            "LLMJOBS_NUM_SHARDS": str(self.num_shards),
            "LLMJOBS_OUTPUT": str(self.output_dir),
            "LLMJOBS_CHECKPOINT": str(self.checkpoint_dir),
            "LLMJOBS_ATTEMPT": str(self.attempt),
            "LLMJOBS_RANK": str(self.rank),
            "LLMJOBS_WORLD_SIZE": str(self.world_size),
            "LLMJOBS_HEAD_NODE": self.head_node,
        }


def _distributed_env() -> tuple[int, int, str, list[str]]:
    """Rank, world size, head host and host list from submitit's job environment, if inside a job."""
    host = socket.gethostname()
    if "SUBMITIT_EXECUTOR" not in os.environ:
        return 0, 1, host, [host]
    try:
        import submitit

        env = submitit.JobEnvironment()
        hosts = list(getattr(env, "hostnames", None) or [host])
        return env.node, env.num_nodes, hosts[0], hosts
    except Exception:  # noqa: BLE001 - outside a submitit job, or an executor without node info
        return 0, 1, host, [host]
