"""Starting the training processes of one node: torchrun with the node's rank, or one process on a CPU node.

Every node of the step runs the kind once (one task per node); each starts
``python -m llmjobs.jobs.train.torchrun --nnodes N --node_rank R --nproc_per_node G --master_addr HEAD
--master_port P -m llmjobs.jobs.train.worker CONFIG``. The port is the same on every node without talking:
a hash of the run, step, attempt and the scheduler's job id and restart count.
"""

from __future__ import annotations

import hashlib
import os
import sys
from typing import Any

from llmjobs.jobs.context import StepContext


def gpus_on_node() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0


def rendezvous_port(ctx: StepContext) -> int:
    job = os.environ.get("SLURM_JOB_ID") or os.environ.get("PBS_JOBID") or os.environ.get("SUBMITIT_JOB_ID", "")
    restart = os.environ.get("SLURM_RESTART_COUNT", "0")
    key = f"{ctx.run_id}/{ctx.step}/{ctx.shard}/{ctx.attempt}/{job}/{restart}"
    return 20000 + int(hashlib.sha1(key.encode()).hexdigest(), 16) % 20000


def command(ctx: StepContext, config: str, nproc: int,
            module: str = "llmjobs.jobs.train.worker") -> tuple[list[str], dict[str, str]]:
    worker = ["-m", module, config]
    if ctx.world_size * nproc == 1:
        env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}
        return [sys.executable, *worker], env
    cmd = [sys.executable, "-m", "llmjobs.jobs.train.torchrun", f"--nnodes={ctx.world_size}",
           f"--node_rank={ctx.rank}", f"--nproc_per_node={nproc}", f"--master_addr={ctx.head_node}",
           f"--master_port={rendezvous_port(ctx)}", "--max_restarts=0", *worker]
    env: dict[str, str] = {}
    if nproc > 1 or ctx.world_size > 1:
        env.setdefault("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1" if nproc > 1 else ""))
    return cmd, {k: v for k, v in env.items() if v}


def describe(cmd: list[str], env: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in env.items()) + (" " if env else "") + " ".join(cmd)
