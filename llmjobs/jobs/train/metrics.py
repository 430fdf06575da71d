"""Training metrics: the loss history, model FLOPs per token (for MFU) and the peak of the device."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

# dense bf16 peak per GPU, FLOP/s; LLMJOBS_PEAK_TFLOPS overrides (MFU is left out on unknown devices)
PEAKS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "GH200": 989e12, "B200": 2250e12}


class MetricsLog:
    def __init__(self, history: list[dict[str, Any]] | None = None) -> None:
        self.history = list(history or [])

    def add(self, step: int, loss: float, lr: float, tokens: int) -> None:
        self.history.append({"step": step, "loss": loss, "lr": lr, "tokens": tokens})


def peak_flops(device: Any) -> float | None:
    if os.environ.get("LLMJOBS_PEAK_TFLOPS"):
        return float(os.environ["LLMJOBS_PEAK_TFLOPS"]) * 1e12
    if getattr(device, "type", "cpu") != "cuda":
        return None
    import torch

    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAKS.items() if k in name), None)


def flops_per_token(model: Any, lengths: Any) -> float:
    """Training FLOPs per real token: 6 x matmul parameters (4x for a frozen LoRA base: no weight gradients)
    plus causal attention, 6 x layers x hidden x mean document length."""
    config = getattr(model, "config", None)
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    n_embed = embed.weight.numel() if embed is not None else 0
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    dense = total - n_embed
    factor = 6 if trainable > total / 2 else 4
    layers = getattr(config, "num_hidden_layers", 0) or 0
    hidden = getattr(config, "hidden_size", 0) or 0
    mean_ctx = float((lengths.astype("float64") ** 2).sum() / max(1, lengths.sum()))
    return factor * dense + 6 * layers * hidden * mean_ctx


def flops_per_step(model: Any, ds: Any) -> Callable[[float], float]:
    """A function: tokens/s of one device -> model FLOP/s of that device."""
    per_token = flops_per_token(model, ds.lengths)
    return lambda tokens_per_s: tokens_per_s * per_token
