"""Parameters of ``train.sft`` and ``train.lora``, checked at submit.

Names follow TRL's ``SFTConfig`` / transformers' ``TrainingArguments`` so a user's knowledge carries over.
This module imports pydantic only; the checks that need a tokenizer or a model structure (``max_length``
below every prompt, LoRA target modules) run when transformers is importable and the files are local, and
are repeated in the job otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from llmjobs.jobs.train import sources

# SFTConfig / TrainingArguments fields the llmjobs loop honours when given in ``trainer:``. Everything the
# loop does not implement is refused rather than silently ignored.
TRAINER_FIELDS: dict[str, str] = {
    "adam_beta1": "AdamW beta1",
    "adam_beta2": "AdamW beta2",
    "adam_epsilon": "AdamW epsilon",
    "warmup_steps": "warmup steps (wins over warmup_ratio)",
    "lr_scheduler_kwargs": "extra arguments of the scheduler",
    "logging_steps": "a progress line every N optimizer steps",
    "max_steps": "stop after N optimizer steps (wins over num_train_epochs)",
    "save_total_limit": "complete checkpoints kept",
    "gradient_checkpointing_kwargs": "arguments of gradient_checkpointing_enable",
    "optim": "adamw_torch or adamw_torch_fused",
    "dataset_num_proc": "tokenising processes",
    "completion_only_loss": "loss on completion tokens only (prompt/completion data)",
    "assistant_only_loss": "loss on assistant tokens only (messages data)",
    "eos_token": "end-of-sequence token appended to text and completions",
    "report_to": "ignored: llmjobs writes metrics.json and a loss curve itself",
}

# Attention implementations proven to keep packed documents apart when the loop passes position ids, no
# attention mask and no KV cache (tests/train/test_packing_isolation.py on CPU; the benchmark on GPU).
# transformers turns position-id resets into a block-causal mask for sdpa/eager/flex, and into cu_seqlens for
# the flash kernels; ``varlen`` is PyTorch's own variable-length FlashAttention, registered by llmjobs.
LEAK_FREE_PACKED = ("auto", "varlen", "flash_attention_2", "flash_attention_3", "sdpa", "eager", "flex_attention")


class InitSpec(BaseModel):
    """A fresh, randomly initialised model: for tests, demos and from-scratch runs."""

    model_config = ConfigDict(extra="forbid")

    config: dict[str, Any] = Field(..., description="a transformers config dict; model_type defaults to llama")
    tokenizer: str = Field(..., description="tokenizer directory (saved with save_pretrained)")


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(..., description="JSONL, JSON or a datasets save_to_disk directory")
    weight: float = Field(1.0, gt=0, description="samples taken = weight x records (below 1 subsamples, above "
                                                 "1 repeats)")
    messages_field: str = "messages"
    prompt_field: str = "prompt"
    completion_field: str = "completion"
    text_field: str = "text"
    limit: int | None = Field(None, ge=1, description="only the first LIMIT records")

    @property
    def fields(self) -> dict[str, str]:
        return {"messages": self.messages_field, "prompt": self.prompt_field,
                "completion": self.completion_field, "text": self.text_field}

    @model_validator(mode="after")
    def _usable(self) -> Source:
        if "${" in self.path:
            return self  # an upstream step's output: checked in the job
        path = Path(self.path)
        if not path.exists():
            raise ValueError(f"data file {self.path} does not exist")
        if path.is_dir():
            columns = sources.dataset_columns(path)
            if columns is None:
                raise ValueError(f"{self.path} is a directory but not a datasets save_to_disk directory "
                                 "(no dataset_info.json)")
        else:
            rows = sources.peek(path, 1)
            if not rows:
                raise ValueError(f"{self.path} holds no JSON object records")
            columns = set(rows[0])
        if sources.record_format(columns, self.fields) is None:
            raise ValueError(
                f"{self.path}: no usable column; records have {sorted(columns)[:12]}, need "
                f"'{self.messages_field}' (chat messages), '{self.prompt_field}'+'{self.completion_field}', or "
                f"'{self.text_field}' (rename with messages_field / prompt_field / completion_field / text_field)")
        return self


class DeepSpeedSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    zero: Literal[2, 3] = 2
    offload: Literal["none", "optimizer", "all"] = Field("none", description="ZeRO offload to CPU memory")
    config: dict[str, Any] = Field(default_factory=dict, description="merged over the generated config")


class SFTParams(BaseModel):
    """``train.sft``: full fine-tuning."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="hub name, model directory or ${steps.X.output}")
    init: InitSpec | None = Field(None, description="train a fresh model from a config instead")
    tokenizer: str | None = Field(None, description="tokenizer directory (default: the model's)")
    data: list[Source] = Field(..., description="a path, or a list of {path, weight, ...}")
    template: Literal["model", "ja_think"] = Field(
        "model", description="model: the tokenizer's chat template; ja_think: the Japanese instruction format "
                             "with <think>...</think> then 最終的な回答 (saved as the model's chat template)")
    system: str | None = Field(None, description="system message added to conversations without one")
    max_length: int = Field(4096, ge=8, description="tokens per sample (and per packed row)")
    overlong: Literal["drop", "truncate"] = Field("drop", description="what happens to samples over max_length")
    packing: bool = Field(True, description="best-fit-decreasing packing, padding-free, documents isolated")
    attn_implementation: str = Field("auto", description="auto: flash_attention_2 if installed, else PyTorch's "
                                                          "varlen FlashAttention on GPUs, sdpa on CPU")
    # TRL / transformers names
    learning_rate: float = Field(2e-5, gt=0)
    num_train_epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, description="> 0: stop after this many optimizer steps")
    per_device_train_batch_size: int | None = Field(
        None, ge=1, description="packed rows (or samples) per micro-batch; default: on GPUs as many rows as make "
                                "a token budget from the GPU's memory (32,768 tokens on an H200, "
                                "about 20k on 80 GiB; at least 1 row), on CPU 1")
    gradient_accumulation_steps: int = Field(1, ge=1)
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup",
                               "cosine_with_min_lr", "warmup_stable_decay"] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, ge=0, description="0 disables clipping")
    gradient_checkpointing: bool = False
    seed: int = 42
    save_steps: int = Field(500, ge=1, description="a checkpoint every N optimizer steps (and on the walltime "
                                                     "signal)")
    save_total_limit: int = Field(2, ge=1, description="complete checkpoints kept")
    logging_steps: int = Field(10, ge=1)
    precision: Literal["auto", "bf16_master", "bf16", "bf16_autocast", "fp32"] = Field(
        "auto", description="auto: bf16_master on GPUs that compute in bf16, else fp32; bf16_master: bf16 weights "
                            "and gradients, fp32 master weights in the optimizer; bf16: pure bf16 (updates "
                            "below bf16 resolution are lost); bf16_autocast: fp32 weights under bf16 autocast")
    fused_loss: bool = Field(True, description="cross-entropy through the output projection in chunks, never "
                                               "holding the full-vocabulary logits; false: plain cross-entropy")
    torch_compile: bool | Literal["auto"] = Field(
        "auto", description="torch.compile each decoder layer (fuses the norms, rotary embedding, activation and "
                            "residual adds that eager runs as separate memory-bound kernels; the first steps "
                            "compile); auto: on GPUs with packing, except over a quantized (QLoRA) base or "
                            "under deepspeed")
    nproc_per_node: int | None = Field(None, ge=1, description="training processes per node (default: one per "
                                                                 "GPU, one on a CPU-only node)")
    deepspeed: DeepSpeedSpec | None = Field(None, description="ZeRO-2/3 when deepspeed is installed and the "
                                                              "step has more than one process")
    trainer: dict[str, Any] = Field(default_factory=dict, description="other SFTConfig fields")

    @field_validator("data", mode="before")
    @classmethod
    def _data_list(cls, v: Any) -> Any:
        if isinstance(v, str | dict):
            v = [v]
        if isinstance(v, list):
            return [{"path": s} if isinstance(s, str) else s for s in v]
        return v

    @field_validator("trainer")
    @classmethod
    def _trainer_fields(cls, v: dict[str, Any]) -> dict[str, Any]:
        unknown = [k for k in v if k not in TRAINER_FIELDS]
        if not unknown:
            return v
        known = sftconfig_fields()
        supported = ", ".join(sorted(TRAINER_FIELDS))
        for name in unknown:
            if known is None:
                raise ValueError(f"trainer.{name}: not a field llmjobs passes on (TRL is not installed here, so "
                                 f"only these are accepted: {supported}; the named params cover the rest)")
            if name in known:
                raise ValueError(f"trainer.{name}: an SFTConfig field the llmjobs training loop does not "
                                 f"implement; accepted: {supported}")
            raise ValueError(f"trainer.{name}: not a field of TRL's SFTConfig")
        return v

    @model_validator(mode="after")
    def _model_and_checks(self) -> SFTParams:
        if (self.model is None) == (self.init is None):
            raise ValueError("give exactly one of model (hub name or directory) and init ({config, tokenizer})")
        if self.packing and self.attn_implementation not in LEAK_FREE_PACKED:
            raise ValueError(
                f"attn_implementation {self.attn_implementation!r} with packing: true would let packed documents "
                f"attend to each other; use one of {', '.join(LEAK_FREE_PACKED)} or packing: false")
        self._local_checks()
        return self

    def _local_checks(self) -> None:
        """Checks that need the tokenizer (and for LoRA the model structure), when they are on this host."""
        tok = self.tokenizer_path
        if tok is None or "${" in tok or not Path(tok).is_dir() or any("${" in s.path for s in self.data):
            return
        from llmjobs.jobs.train import submitcheck

        submitcheck.prompts_fit(self)

    @property
    def tokenizer_path(self) -> str | None:
        return self.tokenizer or (self.init.tokenizer if self.init else self.model)

    @property
    def trainer_options(self) -> dict[str, Any]:
        return dict(self.trainer)

    @property
    def is_lora(self) -> bool:
        return False


class LoraParams(SFTParams):
    """``train.lora``: LoRA adapters over a frozen base, optionally quantised (QLoRA)."""

    learning_rate: float = Field(2e-4, gt=0)
    r: int = Field(16, ge=1)
    alpha: float = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="module names (q_proj, v_proj, ...) or all-linear")
    quantize: Literal["none", "4bit", "8bit"] = Field("none", description="4bit: QLoRA nf4 with double quant "
                                                                          "(bitsandbytes)")
    merge: bool = Field(False, description="also write the base with the adapter merged into merged/")

    @model_validator(mode="after")
    def _lora_checks(self) -> LoraParams:
        if self.model is None:
            raise ValueError("train.lora needs model: the base (hub name, directory or ${steps.X.output})")
        if self.quantize != "none" and self.deepspeed is not None:
            raise ValueError("quantize with deepspeed is not supported; drop one of them")
        if isinstance(self.target_modules, list) and self.target_modules:
            from llmjobs.jobs.train import submitcheck

            submitcheck.targets_exist(self)
        return self

    @property
    def is_lora(self) -> bool:
        return True


def sftconfig_fields() -> set[str] | None:
    """The field names of TRL's SFTConfig, or None when TRL is not importable here (a login node)."""
    try:
        import dataclasses

        from trl import SFTConfig
    except Exception:  # noqa: BLE001 - TRL missing or broken: fall back to the fields llmjobs knows
        return None
    return {f.name for f in dataclasses.fields(SFTConfig)}
