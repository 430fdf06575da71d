"""DDP gradient averaging in fp32 for bf16 weights.

DDP averages gradients in the parameters' dtype: with bf16 weights (``bf16_master``, ``bf16``) each rank's
gradient is divided and summed in bf16, so the average is rounded at every rank's addition and small
gradients of one rank vanish beside large ones of another. This hook sums the bucket in fp32 and rounds once.
"""

from __future__ import annotations

from typing import Any


def fp32_allreduce(process_group, bucket):  # DDP checks the annotations: none, or its own types
    import torch
    import torch.distributed as dist

    group = process_group if process_group is not None else dist.group.WORLD
    buffer = bucket.buffer()
    total = buffer.to(torch.float32)
    future = dist.all_reduce(total, group=group, async_op=True).get_future()

    def average(fut):
        buffer.copy_(fut.value()[0].div_(dist.get_world_size(group)))
        return buffer

    return future.then(average)


def register(ddp_model: Any) -> bool:
    """Average ``ddp_model``'s gradients in fp32 when its weights are of a lower precision; True if it did."""
    import torch

    if all(p.dtype == torch.float32 for p in ddp_model.parameters() if p.requires_grad):
        return False
    ddp_model.register_comm_hook(None, fp32_allreduce)
    return True
