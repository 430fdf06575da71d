"""What a finished training run leaves in the step's output directory.

- the model (``train.sft``) or the adapter (``train.lora``) in Hugging Face format, with the tokenizer and its
  chat template, so ``eval.self_consistency`` takes the directory as ``model:`` or ``adapter:``;
- ``merged/`` when a LoRA run asks for ``merge: true``;
- ``metrics.json`` (summary, loss per step, data statistics) and ``loss.png``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("llmjobs.train")


def save_model(trainer: Any, full_state: dict[str, Any] | None = None) -> None:
    import torch

    p, out, model = trainer.p, trainer.out, trainer.model
    out.mkdir(parents=True, exist_ok=True)
    if p.is_lora:
        model.save_pretrained(out)
        trainer.tokenizer.save_pretrained(out)
        if p.merge:
            merge_adapter(p.model, out, out / "merged")
        return
    if trainer.autocast is not None:  # fp32 master weights trained under bf16 autocast: ship bf16
        model.to(torch.bfloat16)
        if full_state is not None:
            full_state = {k: v.to(torch.bfloat16) for k, v in full_state.items()}
    model.config.use_cache = True  # for inference
    model.save_pretrained(out, state_dict=full_state)
    trainer.tokenizer.save_pretrained(out)


def merge_adapter(base: str, adapter: Path, dest: Path) -> None:
    """The base (re-read in bf16, never the quantised copy) with the adapter folded in."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged.config.use_cache = True
    merged.save_pretrained(dest)
    AutoTokenizer.from_pretrained(adapter).save_pretrained(dest)


def write_metrics(out: Path, summary: dict[str, Any], history: list[dict[str, Any]], stats: dict[str, Any]) -> None:
    (out / "metrics.json").write_text(json.dumps({"summary": summary, "data": stats, "history": history},
                                                 indent=1))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no loss.png")
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([h["step"] for h in history], [h["loss"] for h in history], lw=1)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title(f"{summary['kind']}: {summary['tokens_per_s']:,.0f} tokens/s")
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=100)
    plt.close(fig)
