"""Step kinds: what a step does. Each kind is a plain function ``fn(ctx) -> dict | None`` run in the job.

The table maps a kind's name to import paths, so the core never imports a kind's heavy dependencies:
``eval.self_consistency`` needs vLLM only inside the job. Other packages add kinds through the entry point
group ``llmjobs.kinds`` (each entry point resolves to a ``Kind``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pydantic and importlib.metadata load when first used: `llmjobs --help` needs neither
    from pydantic import BaseModel, ValidationError


@dataclass(frozen=True)
class Kind:
    name: str
    target: str  # "module:function", called in the job as function(ctx)
    params: str  # "module:Model", a pydantic model checked at submit; keep its module light
    summary: str


_BUILTIN = [
    Kind("shell", "llmjobs.jobs.shell:run", "llmjobs.jobs.shell:ShellParams",
         "run params.command with bash in the step directory"),
    Kind("python", "llmjobs.jobs.python:run", "llmjobs.jobs.python:PythonParams",
         "call params.function ('module:function') with the step context and the other params"),
    Kind("eval.self_consistency", "llmjobs.jobs.eval.step:run", "llmjobs.jobs.eval.step:EvalParams",
         "N samples per problem (vLLM or transformers; a Ray pool over every GPU of the step), math-verify "
         "grading, majority vote, maj@k / pass@k report"),
    Kind("synth.sympy", "llmjobs.jobs.synth.sympy.kind:run", "llmjobs.jobs.synth.sympy.params:SympyParams",
         "exact problems from SymPy families (JA/EN, worked solutions), checked twice, sharded, held-out split"),
    Kind("data.prepare", "llmjobs.jobs.data.prepare:run", "llmjobs.jobs.data.params:PrepareParams",
         "mix, template, length-filter, dedup and decontaminate sources into chat-format train/dev JSONL"),
    Kind("synth.distill", "llmjobs.jobs.synth.distill:run", "llmjobs.jobs.synth.distill:DistillParams",
         "a teacher samples N answers per problem; ground_truth or majority filter; SFT chat dataset + report"),
    Kind("synth.multistage", "llmjobs.jobs.synth.multistage:run", "llmjobs.jobs.synth.multistage:MultistageParams",
         "a chain of prompt stages per problem; code stages run in the sandbox, verify stages grade the result; "
         "one chat dataset per stage + lineage"),
    Kind("train.sft", "llmjobs.jobs.train.step:run_sft", "llmjobs.jobs.train.params:SFTParams",
         "full fine-tuning: packed, padding-free, leak-free; torchrun on every node; checkpoints and resume"),
    Kind("train.lora", "llmjobs.jobs.train.step:run_lora", "llmjobs.jobs.train.params:LoraParams",
         "LoRA / QLoRA adapters over a base (a hub name, a directory or ${steps.X.output}); optional merge"),
    Kind("train.grpo", "llmjobs.jobs.train.grpo:run_grpo", "llmjobs.jobs.train.grpo_params:GRPOParams",
         "GRPO on TRL's GRPOTrainer: math-verify accuracy / format / length rewards, beta 0.04, vLLM colocated"),
]

_KINDS: dict[str, Kind] | None = None


def kinds() -> dict[str, Kind]:
    global _KINDS
    if _KINDS is None:
        from importlib.metadata import entry_points

        table = {k.name: k for k in _BUILTIN}
        for ep in entry_points(group="llmjobs.kinds"):
            kind = ep.load()
            table[kind.name] = kind
        _KINDS = table
    return _KINDS


def register(kind: Kind) -> None:
    kinds()[kind.name] = kind


def load(path: str) -> Any:
    module, _, attr = path.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def get(name: str) -> Kind:
    table = kinds()
    if name not in table:
        raise KeyError(name)
    return table[name]


def validate_params(kind: Kind, params: dict[str, Any]) -> BaseModel:
    """Raises ``ValidationError`` with the offending fields."""
    model: type[BaseModel] = load(kind.params)
    return model.model_validate(params)


def function(kind: Kind) -> Callable[..., Any]:
    return load(kind.target)


def __getattr__(name: str) -> Any:
    if name == "ValidationError":  # re-exported for plugins, without importing pydantic up front
        from pydantic import ValidationError

        return ValidationError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Kind", "ValidationError", "function", "get", "kinds", "register", "validate_params"]
