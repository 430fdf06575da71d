"""The kind ``train.grpo``: one call per node, like ``train.sft`` (the same launch, walltime relay, checkpoints).

Generation modes (``generation:``):

- colocate (default): every training process also runs a vLLM engine on its GPU (TRL's ``vllm_mode=colocate``)
  when vLLM is installed and there is a GPU; transformers' ``generate`` otherwise (CPU, tests);
- server, on a step with ``resources.nodes >= 2``: the allocation's last node runs ``trl vllm-serve`` on all its
  GPUs and the other nodes train (torchrun over nodes 0..N-2), asking that node for completions. The server
  stops when the head writes its final status.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from llmjobs.jobs.context import StepContext
from llmjobs.jobs.train.grpo_params import GRPOParams

log = logging.getLogger("llmjobs.train")
WORKER = "llmjobs.jobs.train.grpo_worker"


def run_grpo(ctx: StepContext) -> dict[str, Any]:
    from llmjobs.jobs.train.step import _run

    p = GRPOParams.model_validate(ctx.params)
    if p.generation.mode == "server" and p.generation.engine != "transformers":
        if ctx.world_size < 2:
            raise ValueError("train.grpo: generation.mode server needs resources.nodes >= 2 (the last node serves "
                             "vLLM); on one node use mode colocate")
        if p.model is None:
            raise ValueError("train.grpo: generation.mode server needs model: (a path the server can load)")
        hosts = ctx.hostnames or []
        server = hosts[-1] if len(hosts) == ctx.world_size else None
        if server is None:
            raise ValueError("train.grpo: the step context does not list the allocation's hostnames")
        if ctx.rank == ctx.world_size - 1:
            return serve(ctx, p)
        trainers = dataclasses.replace(ctx, world_size=ctx.world_size - 1, hostnames=hosts[:-1])
        return _run(trainers, "train.grpo", GRPOParams, WORKER, extra={"vllm_server_host": server})
    return _run(ctx, "train.grpo", GRPOParams, WORKER)


def serve(ctx: StepContext, p: GRPOParams) -> dict[str, Any]:
    """The last node: TRL's vLLM server over this node's GPUs, until the trainers' head writes its status."""
    from llmjobs.jobs.train import launch

    status = Path(ctx.output_dir) / ".train" / f"attempt-{ctx.attempt}.status.json"
    gpus = max(1, launch.gpus_on_node())
    cmd = [sys.executable, "-m", "trl.cli", "vllm-serve", "--model", str(p.model), "--host", "0.0.0.0",
           "--port", str(p.generation.server_port), "--data_parallel_size", str(gpus)]
    log.info("node %d: vLLM server: %s", ctx.rank, " ".join(cmd))
    proc = subprocess.Popen(cmd, env=dict(os.environ))
    try:
        while proc.poll() is None and not status.exists():
            time.sleep(2)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    if not status.exists():
        raise RuntimeError(f"train.grpo: the vLLM server exited with code {proc.returncode} before training ended")
    return {"role": "vLLM server", "rank": ctx.rank}
