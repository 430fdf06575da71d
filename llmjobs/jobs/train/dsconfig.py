"""DeepSpeed ZeRO-2/3 configuration generated from the step's params (no file for the user to keep in sync)."""

from __future__ import annotations

from typing import Any

from llmjobs.jobs.train.params import DeepSpeedSpec, SFTParams


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def generate(p: SFTParams, spec: DeepSpeedSpec, world: int, bf16: bool, rows: int | None = None) -> dict[str, Any]:
    rows = rows or p.per_device_train_batch_size or 1  # rows per micro-batch, as the loop resolved it
    zero: dict[str, Any] = {"stage": spec.zero, "overlap_comm": True, "contiguous_gradients": True,
                            "reduce_bucket_size": 5e8}
    if spec.zero == 2:
        zero.update(allgather_partitions=True, allgather_bucket_size=5e8, reduce_scatter=True)
    else:
        # the final model is gathered to rank 0 in 16-bit and saved in Hugging Face format
        zero.update(stage3_prefetch_bucket_size=5e8, stage3_param_persistence_threshold=1e6,
                    stage3_gather_16bit_weights_on_model_save=True)
    if spec.offload in ("optimizer", "all"):
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if spec.offload == "all":
        if spec.zero != 3:
            raise ValueError("deepspeed.offload: all (parameters to CPU) needs zero: 3")
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    config = {
        "train_micro_batch_size_per_gpu": rows,
        "gradient_accumulation_steps": p.gradient_accumulation_steps,
        "train_batch_size": rows * p.gradient_accumulation_steps * world,
        "gradient_clipping": p.max_grad_norm if p.max_grad_norm > 0 else 0.0,
        "bf16": {"enabled": bf16},
        "zero_optimization": zero,
        "steps_per_print": 10**9,  # llmjobs prints progress itself
        "wall_clock_breakdown": False,
    }
    return _merge(config, spec.config)
