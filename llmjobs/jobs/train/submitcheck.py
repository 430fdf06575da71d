"""Submit-time checks that need transformers: run only when it is importable and the files are local.

On a login node without transformers they are skipped; the job makes the same checks and fails with the same
message before training.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmjobs.jobs.train.params import LoraParams, SFTParams

PEEK = 64  # records per source looked at on the login node


def _transformers() -> Any:
    try:
        import transformers
    except Exception:  # noqa: BLE001 - not installed here: the job checks instead
        return None
    return transformers


def prompts_fit(p: SFTParams) -> None:
    """``max_length`` must leave room for a completion after the prompt of at least one sample."""
    if _transformers() is None:
        return
    from llmjobs.jobs.train import sources
    from llmjobs.jobs.train.data import Encoder, load_tokenizer

    enc = Encoder(load_tokenizer(p), p)
    shortest = None
    for src in p.data:
        path = Path(src.path)
        rows = sources.peek(path, PEEK) if path.is_file() else []
        for row in rows:
            n = enc.prompt_tokens(row, src)
            if n is not None:
                shortest = n if shortest is None else min(shortest, n)
    if shortest is not None and shortest >= p.max_length:
        raise ValueError(f"max_length {p.max_length} is below the prompt of every sample checked (the shortest "
                         f"prompt has {shortest} tokens): no completion token would be trained; raise max_length")


def linear_module_names(p: SFTParams) -> set[str] | None:
    """Short names of the Linear modules of the model, built on the meta device (no weights read)."""
    transformers = _transformers()
    if transformers is None:
        return None
    import torch

    if p.init is not None:
        cfg = dict(p.init.config)
        config = transformers.AutoConfig.for_model(cfg.pop("model_type", "llama"), **cfg)
    elif p.model and "${" not in p.model and (Path(p.model) / "config.json").is_file():
        config = transformers.AutoConfig.from_pretrained(p.model)
    else:
        return None
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    return {name.rsplit(".", 1)[-1] for name, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)}


def targets_exist(p: LoraParams) -> None:
    names = linear_module_names(p)
    if names is None or not isinstance(p.target_modules, list):
        return
    missing = [t for t in p.target_modules if t not in names]
    if missing:
        raise ValueError(f"target_modules {missing} are not linear layers of this model; it has "
                         f"{sorted(names)} (or use target_modules: all-linear)")
