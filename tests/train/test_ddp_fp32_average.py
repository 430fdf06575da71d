"""Four real gloo ranks on this machine: DDP of a bf16 model averages gradients in fp32 (one rounding) with
llmjobs' hook, where DDP's own bf16 averaging rounds at every partial sum and loses the small ranks' gradients
(with two ranks both round once: halving is exact and one addition rounds once)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


RANKS = 4


def _parts() -> list:
    """One large gradient and three small ones (per rank)."""
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(512, generator=gen) * (1.0 if r == 0 else 4e-3) for r in range(RANKS)]


def _rank(rank: int, store: str, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from llmjobs.jobs.train import ddp_hooks

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=RANKS)
    parts = _parts()
    x = parts[rank].to(torch.bfloat16)[None, :]  # the weight's gradient is x
    grads = {}
    for hooked in (True, False):
        layer = torch.nn.Linear(512, 1, bias=False).to(torch.bfloat16)
        ddp = DistributedDataParallel(layer)
        if hooked:
            assert ddp_hooks.register(ddp)
        ddp(x).sum().backward()
        grads[hooked] = layer.weight.grad[0].clone()
    if rank == 0:
        torch.save({"hooked": grads[True], "plain": grads[False]}, out)
    dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_bf16_gradients_are_averaged_in_fp32(tmp_path):
    import torch.multiprocessing as mp

    out = tmp_path / "grads.pt"
    mp.spawn(_rank, args=(str(tmp_path / "store"), str(out)), nprocs=RANKS, join=True)
    got = torch.load(out)
    exact = sum(x.to(torch.bfloat16).float() for x in _parts()) / RANKS
    assert torch.equal(got["hooked"], exact.to(torch.bfloat16))  # rounded once
    assert not torch.equal(got["plain"], exact.to(torch.bfloat16))  # what the hook is for: DDP's own differs


def _fp32_rank(rank: int, store: str, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from llmjobs.jobs.train import ddp_hooks

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=1)
    ddp = DistributedDataParallel(torch.nn.Linear(4, 1))
    torch.save({"registered": ddp_hooks.register(ddp)}, out)
    dist.destroy_process_group()


def test_fp32_weights_keep_ddps_own_averaging(tmp_path):
    """A real one-rank DDP of fp32 weights: no hook (DDP's own fp32 averaging is already exact enough)."""
    import torch.multiprocessing as mp

    out = tmp_path / "fp32.pt"
    mp.spawn(_fp32_rank, args=(str(tmp_path / "store"), str(out)), nprocs=1, join=True)
    assert torch.load(out) == {"registered": False}
