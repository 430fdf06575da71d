"""Building the model to train: from the hub / a directory / a config, with LoRA adapters when asked."""

from __future__ import annotations

import logging
from typing import Any

from llmjobs.jobs.train import attention
from llmjobs.jobs.train.params import SFTParams

log = logging.getLogger("llmjobs.train")


# default tokens per GPU micro-batch: at least enough that launches and the optimizer step stop dominating a
# step, at most 32,768 (beyond it the gain is small and a step holds many samples)
MIN_TOKENS_PER_MICRO, MAX_TOKENS_PER_MICRO = 4096, 32768


def precision(p: SFTParams, device_type: str) -> str:
    """What ``precision: auto`` means here. Full fine-tuning on a GPU that computes in bf16 holds bf16 weights
    and gradients and keeps fp32 master weights in the optimizer (lr 1e-5 updates would vanish in bf16
    weights); a LoRA base is frozen, so it and its adapters live in bf16; CPUs train in fp32."""
    import torch

    if p.precision != "auto":
        return p.precision
    if device_type != "cuda" or not torch.cuda.is_bf16_supported():
        return "fp32"
    return "bf16" if p.is_lora else "bf16_master"


def weight_dtype(p: SFTParams, device_type: str) -> Any:
    """dtype of the weights the model holds (master copies, if any, live in the optimizer)."""
    import torch

    return torch.bfloat16 if precision(p, device_type) in ("bf16", "bf16_master") else torch.float32


def autocast_dtype(p: SFTParams, device_type: str) -> Any:
    import torch

    return torch.bfloat16 if precision(p, device_type) == "bf16_autocast" else None


# the model the budget was measured on (llm-jp-3-1.8b's hidden x layers): on the H200, 16,384 tokens
# peaked at 56.1 GiB and 32,768 at 86.9 GiB, so about 25 GiB of weights, fp32 masters and Adam states and
# 1.9 MiB of activations per token
REFERENCE_WIDTH_X_DEPTH = 2048 * 24
REFERENCE_STATIC_GIB = 25.3
REFERENCE_GIB_PER_TOKEN = 30.8 / 16384
USABLE_MEMORY = 0.85  # of the GPU's memory: the rest for fragmentation and the longest documents


def rows_per_micro(p: SFTParams, device_type: str, memory_gib: float | None = None) -> int:
    """per_device_train_batch_size, or its default: on GPUs as many rows as make the token budget. The budget
    is what the reference model's activations fit in the GPU's memory (``memory_gib``, read from the current
    device when not given), between MIN_ and MAX_TOKENS_PER_MICRO, and it
    shrinks with hidden x layers above the reference size (the activations a token keeps for the backward pass
    grow with both; a 13B shape at 16,384 tokens ran out of 141 GiB), unless gradient checkpointing keeps only
    the layers' inputs."""
    if p.per_device_train_batch_size:
        return p.per_device_train_batch_size
    if device_type != "cuda":
        return 1
    if memory_gib is None:
        import torch

        memory_gib = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / 2**30
    fits = (USABLE_MEMORY * memory_gib - REFERENCE_STATIC_GIB) / REFERENCE_GIB_PER_TOKEN
    budget = int(min(MAX_TOKENS_PER_MICRO, max(MIN_TOKENS_PER_MICRO, fits)))
    size = _width_x_depth(p)
    if size and not p.gradient_checkpointing:
        budget = int(budget * min(1.0, REFERENCE_WIDTH_X_DEPTH / size))
    return max(1, budget // p.max_length)


def _width_x_depth(p: SFTParams) -> int | None:
    """hidden_size x num_hidden_layers of the model to train, from its init config or its config.json."""
    if p.init is not None:
        cfg = p.init.config
    else:
        try:
            from transformers import AutoConfig

            cfg = AutoConfig.from_pretrained(p.model).to_dict()
        except Exception:  # noqa: BLE001 - no config to read: keep the plain budget
            return None
    cfg = cfg.get("text_config", cfg)
    hidden, layers = cfg.get("hidden_size"), cfg.get("num_hidden_layers")
    return int(hidden) * int(layers) if hidden and layers else None


def build(p: SFTParams, tokenizer: Any, device_type: str) -> tuple[Any, str]:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    attn = attention.resolve(p.attn_implementation, device_type, p.packing)
    if attn == attention.VARLEN:
        attention.register()
    dtype = weight_dtype(p, device_type)
    kwargs: dict[str, Any] = {"attn_implementation": attn, "dtype": dtype}
    if p.init is not None:
        cfg = dict(p.init.config)
        cfg.setdefault("vocab_size", len(tokenizer))
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            cfg.setdefault(name, getattr(tokenizer, name))
        config = AutoConfig.for_model(cfg.pop("model_type", "llama"), **cfg)
        torch.manual_seed(p.seed)
        model = AutoModelForCausalLM.from_config(config, **kwargs)
    else:
        if p.is_lora and p.quantize != "none":
            kwargs["quantization_config"] = _bnb_config(p)
            kwargs["device_map"] = {"": torch.cuda.current_device()} if torch.cuda.is_available() else None
        model = AutoModelForCausalLM.from_pretrained(p.model, **kwargs)
    model.config.use_cache = False  # a KV cache would re-open attention across packed documents
    if p.gradient_checkpointing:
        gc_kwargs = p.trainer_options.get("gradient_checkpointing_kwargs") or {"use_reentrant": False}
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)
        if p.is_lora:
            model.enable_input_require_grads()
    if p.is_lora:
        model = _lora(p, model)
    if compile_wanted(p, device_type):
        compile_layers(model)
    return model, attn


def compile_wanted(p: SFTParams, device_type: str) -> bool:
    if p.torch_compile == "auto":
        # measured on packed rows (varlen attention); padded rows with a mask ran slower compiled. Not under
        # DeepSpeed: its ZeRO-3 parameter hooks around each layer are untested with compiled layers here
        return (device_type == "cuda" and p.packing and p.deepspeed is None
                and not (p.is_lora and p.quantize != "none"))
    return bool(p.torch_compile)


def decoder_layers(model: Any) -> Any:
    """The model's stack of decoder layers: its longest ModuleList of modules of one class."""
    import torch

    stacks = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m)
              and len({type(x) for x in m}) == 1]
    if not stacks:
        raise ValueError(f"torch_compile: found no stack of decoder layers in {type(model).__name__}")
    return max(stacks, key=len)


def compile_layers(model: Any) -> int:
    """torch.compile every decoder layer. The layers share one code object and, with the weights as graph
    inputs, one compiled graph (the KV cache is off, so no per-layer cache state is guarded on). Packed
    micro-batches differ in token count: dynamo's automatic dynamic shapes recompile once, with only the token
    dimension (and the longest document) symbolic, so the matmuls keep their static hidden sizes. Layer by layer
    rather than the whole model: the model's forward (embedding, mask logic, logits_to_keep) is Python that
    would break the graph anyway."""
    layers = decoder_layers(model)
    for layer in layers:
        layer.compile()
    log.info("torch.compile: %d decoder layers", len(layers))
    return len(layers)


def _bnb_config(p: Any) -> Any:
    import importlib.util

    import torch
    from transformers import BitsAndBytesConfig

    if importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError(f"quantize: {p.quantize} needs bitsandbytes in the job's environment")
    if p.quantize == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=torch.bfloat16)
    return BitsAndBytesConfig(load_in_8bit=True)


def _lora(p: Any, model: Any) -> Any:
    from peft import LoraConfig, get_peft_model

    if p.quantize != "none":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=p.gradient_checkpointing)
    import torch

    linear = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    if isinstance(p.target_modules, list):
        missing = [t for t in p.target_modules if t not in linear]
        if missing:
            raise ValueError(f"target_modules {missing} are not linear layers of this model; it has "
                             f"{sorted(linear)} (or use target_modules: all-linear)")
    config = LoraConfig(r=p.r, lora_alpha=p.alpha, lora_dropout=p.dropout, target_modules=p.target_modules,
                        task_type="CAUSAL_LM")
    # peft casts adapters to fp32 by default; under a bf16 base that makes every adapter matmul an upcast
    # (slower than full fine-tuning on the benchmark shape). Keep them in the base's dtype.
    return get_peft_model(model, config, autocast_adapter_dtype=False)
