"""Parameters of ``train.grpo``, checked at submit (pydantic only; TRL is consulted when it is importable).

Knobs carry TRL's ``GRPOConfig`` names. Two defaults differ from TRL's on purpose:

- ``beta`` (the KL penalty against the starting model) is 0.04, not TRL's 0.0: a published SFT-then-GRPO run
  with beta = 0 collapsed to 0% accuracy, and TRL changed its default from 0.04 to 0.0 in a recent release, so
  llmjobs sets it explicitly and a TRL upgrade cannot silently change a run;
- ``logging_steps`` is 1: a GRPO step is expensive and its reward curve is what one watches.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from llmjobs.jobs.eval.data import FieldMap
from llmjobs.jobs.train.params import InitSpec

BUILTIN_REWARDS = ("accuracy", "format", "length")

# GRPOConfig fields llmjobs sets itself (from the named params or the step context): refused in ``trainer:``
MANAGED = {"output_dir", "beta", "num_generations", "max_completion_length", "temperature", "learning_rate",
           "epsilon", "loss_type", "scale_rewards", "num_iterations", "per_device_train_batch_size",
           "gradient_accumulation_steps", "max_steps", "num_train_epochs", "save_steps", "save_strategy",
           "save_total_limit", "seed", "logging_steps", "reward_weights", "use_vllm", "vllm_mode",
           "vllm_gpu_memory_utilization", "vllm_enable_sleep_mode", "vllm_server_host", "vllm_server_port",
           "vllm_server_base_url", "report_to", "resume_from_checkpoint", "bf16", "use_cpu",
           "lr_scheduler_type", "warmup_ratio", "gradient_checkpointing", "max_grad_norm", "weight_decay"}

# Used when TRL is not importable here (a login node): GRPOConfig / TrainingArguments fields of TRL 1.x that
# are safe to pass on. With TRL importable the real GRPOConfig decides.
KNOWN_FIELDS = {
    "top_p", "top_k", "min_p", "repetition_penalty", "generation_kwargs", "mask_truncated_completions",
    "epsilon_high", "delta", "importance_sampling_level", "top_entropy_quantile", "steps_per_generation",
    "generation_batch_size", "shuffle_dataset", "disable_dropout", "cast_lm_head_to_fp32", "sync_ref_model",
    "ref_model_mixup_alpha", "ref_model_sync_steps", "log_completions", "num_completions_to_print",
    "vllm_tensor_parallel_size", "vllm_max_model_length", "vllm_model_impl", "adam_beta1", "adam_beta2",
    "adam_epsilon", "warmup_steps", "lr_scheduler_kwargs", "optim", "gradient_checkpointing_kwargs",
    "dataloader_num_workers", "model_init_kwargs", "chat_template_kwargs", "vllm_importance_sampling_correction",
}

# Bytes per parameter in the memory check (see docs/training.md, GRPO memory)
POLICY_FULL_BYTES = 16  # fp32 weights 4 + gradients 4 + AdamW moments 8 (bf16 autocast over fp32 masters)
FROZEN_BYTES = 2  # a bf16 copy: the reference model, or a frozen LoRA base


class GrpoData(BaseModel):
    """Prompts with a known answer: JSONL / JSON / TSV / a datasets directory, read by the eval loader."""

    model_config = ConfigDict(extra="forbid")

    path: str
    fields: FieldMap | None = Field(None, description="which field holds problem / answer (default: problem, "
                                                       "answer)")
    preset: str | None = Field(None, description="an eval data preset: gsm8k, math500, mgsm_ja")
    limit: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _readable(self) -> GrpoData:
        if "${" in self.path:
            return self  # an upstream output: read in the job
        from llmjobs.errors import UserError
        from llmjobs.jobs.eval.data import load_problems

        try:
            load_problems(self.path, self.fields, self.preset, limit=1)
        except UserError as e:
            raise ValueError(str(e)) from None
        return self


class RewardSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., description="accuracy, format, length, or a custom 'module:function'")
    weight: float = 1.0
    options: dict[str, Any] = Field(default_factory=dict, description="keyword options of the reward")

    @model_validator(mode="after")
    def _known(self) -> RewardSpec:
        if self.name in BUILTIN_REWARDS:
            allowed = {"accuracy": {"timeout_s", "workers", "grade_unclosed"},
                       "format": {"require_think"}, "length": {"cache"}}[self.name]
            bad = sorted(set(self.options) - allowed)
            if bad:
                raise ValueError(f"reward {self.name}: unknown option(s) {bad}; known: {sorted(allowed)}")
            return self
        module, sep, fn = self.name.partition(":")
        if not sep or not module or not fn:
            raise ValueError(f"unknown reward {self.name!r}: use one of {', '.join(BUILTIN_REWARDS)} or a custom "
                             "function as 'module:function'")
        try:
            found = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            found = None
        if found is None:
            raise ValueError(f"reward {self.name!r}: module {module!r} is not importable here (put it on "
                             "PYTHONPATH, or install it)")
        return self


class LoraSpec(BaseModel):
    """The knobs of ``train.lora`` (same names and defaults)."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(16, ge=1)
    alpha: float = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    merge: bool = Field(False, description="also write the base with the adapter merged into merged/")


class GenerationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    engine: Literal["auto", "vllm", "transformers"] = Field(
        "auto", description="auto: vLLM colocated when vLLM and a GPU are there, transformers otherwise")
    mode: Literal["colocate", "server"] = Field(
        "colocate", description="server: a vLLM server (trl vllm-serve) on the allocation's last node")
    gpu_memory_utilization: float = Field(0.3, gt=0, lt=1, description="GPU share of colocated vLLM")
    sleep_mode: bool = Field(True, description="colocated vLLM frees its memory during the optimizer step")
    server_port: int = 8000


class GRPOParams(BaseModel):
    """``train.grpo``: GRPO with verifiable rewards on TRL's GRPOTrainer, full or LoRA."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="hub name, model directory or ${steps.X.output}")
    init: InitSpec | None = Field(None, description="a fresh model from a config instead (tests, demos)")
    tokenizer: str | None = None
    lora: LoraSpec | None = Field(None, description="train LoRA adapters instead of the full model")
    data: GrpoData
    template: str = Field("think_boxed", description="prompt template: a name of the eval kind's templates "
                                                     "(think_boxed, ja_instruction) or a string with {problem}")
    system: str | None = None
    chat_template: bool = Field(True, description="wrap the prompt in the tokenizer's chat template if it has one")
    rewards: list[RewardSpec] = Field(
        default_factory=lambda: [RewardSpec(name="accuracy", weight=1.0), RewardSpec(name="format", weight=0.2)])
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    # TRL names
    num_generations: int = Field(8, ge=2)
    max_prompt_length: int | None = Field(512, ge=1, description="prompts over this many tokens are dropped")
    max_completion_length: int = Field(512, ge=1)
    temperature: float = Field(1.0, gt=0)
    learning_rate: float = Field(1e-6, gt=0)
    beta: float = Field(0.04, ge=0, description="KL penalty; TRL's default is 0.0, see the module docstring")
    epsilon: float = Field(0.2, gt=0)
    loss_type: str = "dapo"
    scale_rewards: Literal["group", "batch", "none"] = "group"
    num_iterations: int = Field(1, ge=1)
    per_device_train_batch_size: int = Field(8, ge=1, description="completions per process per micro-step")
    gradient_accumulation_steps: int = Field(1, ge=1)
    max_steps: int = Field(-1)
    num_train_epochs: float = Field(1.0, gt=0)
    save_steps: int = Field(50, ge=1)
    save_total_limit: int = Field(2, ge=1)
    logging_steps: int = Field(1, ge=1)
    seed: int = 42
    lr_scheduler_type: str = "constant"
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, ge=0)
    gradient_checkpointing: bool = False
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="auto: bf16 on GPUs, fp32 on CPU")
    nproc_per_node: int | None = Field(None, ge=1)
    processes: int = Field(1, ge=1, description="training processes over all nodes, for the batch and memory "
                                                "checks at submit (the job checks again with the real count)")
    gpu_memory_gib: float = Field(80.0, gt=0, description="memory of one GPU, for the memory check")
    trainer: dict[str, Any] = Field(default_factory=dict, description="other GRPOConfig fields")

    @field_validator("rewards", mode="before")
    @classmethod
    def _reward_shorthand(cls, v: Any) -> Any:
        if isinstance(v, dict):  # {accuracy: 1.0, format: 0.2}
            return [{"name": k, "weight": w} for k, w in v.items()]
        if isinstance(v, list):
            return [{"name": r} if isinstance(r, str) else r for r in v]
        return v

    @field_validator("data", mode="before")
    @classmethod
    def _data_path(cls, v: Any) -> Any:
        return {"path": v} if isinstance(v, str) else v

    @field_validator("template")
    @classmethod
    def _template(cls, v: str) -> str:
        from llmjobs.errors import UserError
        from llmjobs.jobs.eval.prompts import template_text

        try:
            template_text(v)
        except UserError as e:
            raise ValueError(str(e)) from None
        return v

    @field_validator("trainer")
    @classmethod
    def _trainer_fields(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            if name in MANAGED:
                raise ValueError(f"trainer.{name}: set by llmjobs; use the named param instead of trainer:")
        known = grpoconfig_fields() if v else None
        for name in v:
            if known is None and name not in KNOWN_FIELDS:
                raise ValueError(f"trainer.{name}: not a GRPOConfig field llmjobs knows (TRL is not importable "
                                 f"here to ask; known: {', '.join(sorted(KNOWN_FIELDS))})")
            if known is not None and name not in known:
                raise ValueError(f"trainer.{name}: not a field of TRL's GRPOConfig")
        return v

    @model_validator(mode="after")
    def _checks(self) -> GRPOParams:
        if (self.model is None) == (self.init is None):
            raise ValueError("give exactly one of model (hub name or directory) and init ({config, tokenizer})")
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type {self.loss_type!r}: one of {', '.join(LOSS_TYPES)}")
        names = [r.name for r in self.rewards]
        if not names:
            raise ValueError("rewards: give at least one reward (accuracy, format, length, 'module:function')")
        if len(set(names)) != len(names):
            raise ValueError(f"rewards: a reward is listed twice ({names})")
        check_batch(self, self.processes)
        check_memory(self)
        return self

    @property
    def tokenizer_path(self) -> str | None:
        return self.tokenizer or (self.init.tokenizer if self.init else self.model)

    @property
    def is_lora(self) -> bool:
        return self.lora is not None


LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo")


def generation_batch(p: GRPOParams, processes: int) -> tuple[int, str]:
    """TRL's rule (GRPOConfig.__post_init__): one generation batch = per_device_train_batch_size x processes x
    steps_per_generation (default: gradient_accumulation_steps), or generation_batch_size when given; it must
    hold whole groups of num_generations completions."""
    t = p.trainer
    if t.get("generation_batch_size"):
        return int(t["generation_batch_size"]), f"generation_batch_size {t['generation_batch_size']}"
    spg = int(t.get("steps_per_generation") or p.gradient_accumulation_steps)
    name = "steps_per_generation" if t.get("steps_per_generation") else "gradient_accumulation_steps"
    batch = p.per_device_train_batch_size * processes * spg
    return batch, (f"per_device_train_batch_size {p.per_device_train_batch_size} x processes {processes} x "
                   f"{name} {spg} = {batch}")


def check_batch(p: GRPOParams, processes: int) -> None:
    batch, how = generation_batch(p, processes)
    if batch % p.num_generations:
        raise ValueError(f"num_generations {p.num_generations} does not divide the generation batch ({how}): "
                         "TRL needs whole groups of completions per prompt; change num_generations or the batch")


def count_parameters(p: GRPOParams) -> int | None:
    """Parameters of the policy from its config (a local directory or init:), without loading weights."""
    if p.init is not None:
        cfg = dict(p.init.config)
        cfg.setdefault("vocab_size", 32000)
    else:
        if p.model is None or "${" in p.model or not (Path(p.model) / "config.json").is_file():
            return None  # a hub name or an upstream output: the job would find out
        try:
            cfg = json.loads((Path(p.model) / "config.json").read_text())
        except (OSError, ValueError):
            return None
    cfg = cfg.get("text_config", cfg)
    h = cfg.get("hidden_size")
    layers = cfg.get("num_hidden_layers")
    if not h or not layers:
        return None
    inter = cfg.get("intermediate_size") or 4 * h
    heads = cfg.get("num_attention_heads") or 1
    kv = cfg.get("num_key_value_heads") or heads
    head_dim = cfg.get("head_dim") or h // heads
    vocab = cfg.get("vocab_size") or 32000
    experts = cfg.get("num_local_experts") or cfg.get("num_experts") or 1
    attn = h * head_dim * (heads * 2 + kv * 2)
    mlp = 3 * h * inter * experts
    embed = vocab * h * (1 if cfg.get("tie_word_embeddings") else 2)
    return int(layers * (attn + mlp) + embed)


def memory_estimate(p: GRPOParams, n: int) -> tuple[float, str]:
    """GiB per GPU before activations, and the arithmetic as text."""
    gib = 2**30
    parts = []
    if p.is_lora:
        parts.append((n * FROZEN_BYTES / gib, f"frozen base {n / 1e9:.2f}B x {FROZEN_BYTES} B (bf16)"))
        ref = "reference: none (LoRA disables the adapter instead)"
    else:
        parts.append((n * POLICY_FULL_BYTES / gib, (f"policy {n / 1e9:.2f}B x {POLICY_FULL_BYTES} B (fp32 weights, "
                                                   "gradients, AdamW moments)")))
        if p.beta > 0:
            parts.append((n * FROZEN_BYTES / gib, (f"reference {n / 1e9:.2f}B x {FROZEN_BYTES} B (bf16, beta "
                                                  f"{p.beta} > 0)")))
            ref = ""
        else:
            ref = "reference: none (beta 0)"
    if p.generation.engine != "transformers" and p.generation.mode == "colocate":
        parts.append((p.generation.gpu_memory_utilization * p.gpu_memory_gib,
                      f"colocated vLLM {p.generation.gpu_memory_utilization} x {p.gpu_memory_gib:g} GiB"))
    total = sum(x for x, _ in parts)
    text = " + ".join(f"{what} = {x:.1f} GiB" for x, what in parts) + f"; total {total:.1f} GiB"
    return total, text + (f"; {ref}" if ref else "")


def check_memory(p: GRPOParams) -> None:
    n = count_parameters(p)
    if n is None:
        return
    total, text = memory_estimate(p, n)
    if total > p.gpu_memory_gib:
        raise ValueError(
            f"does not fit one GPU of {p.gpu_memory_gib:g} GiB (gpu_memory_gib), before activations: {text}. "
            "Use lora:, or beta: 0 (no reference copy; not advised, see docs), or a smaller "
            "generation.gpu_memory_utilization, or set gpu_memory_gib to the real GPU size")


def grpoconfig_fields() -> set[str] | None:
    """The field names of TRL's GRPOConfig (with its bases), or None when TRL is not installed here.

    Read from the installed sources with ``ast`` rather than imported: importing TRL imports vLLM and torch,
    tens of seconds on a login node, for a name check."""
    import ast
    import importlib.util

    try:
        trl_spec = importlib.util.find_spec("trl")
        tf_spec = importlib.util.find_spec("transformers")
    except (ImportError, ValueError):
        return None
    if trl_spec is None or tf_spec is None or not trl_spec.origin or not tf_spec.origin:
        return None
    files = {Path(trl_spec.origin).parent / "trainer" / "grpo_config.py": "GRPOConfig",
             Path(trl_spec.origin).parent / "trainer" / "base_config.py": "_BaseConfig",
             Path(tf_spec.origin).parent / "training_args.py": "TrainingArguments"}
    names: set[str] = set()
    for path, cls in files.items():
        try:
            tree = ast.parse(path.read_text())
        except (OSError, SyntaxError):
            return None
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name == cls:
                names |= {n.target.id for n in node.body
                          if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    return names if "num_generations" in names else None
