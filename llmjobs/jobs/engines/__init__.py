"""Inference engines behind one interface: N samples per prompt, with their generated token counts.

``make_engine("vllm" | "hf" | "auto", model=..., ...)`` returns an object with
``generate(prompts, n, temperature, top_p, max_tokens, seed) -> list[list[Generation]]``: one list of ``n``
generations per prompt, in prompt order; ``stream(...)`` does the same work and yields
``(prompt index, generations)`` as each prompt finishes, so results reach disk without waiting for the batch. The engines import vLLM / transformers when they are built, never
when this package is imported, so the core stays light.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Generation:
    text: str
    tokens: int  # generated tokens, the stop token included when one was generated


class Engine(Protocol):
    name: str

    def generate(self, prompts: Sequence[str], n: int, temperature: float, top_p: float, max_tokens: int,
                 seed: int | Sequence[int] | None = None) -> list[list[Generation]]:
        """``seed``: one for all prompts, or one per prompt (reproducible per prompt whatever the batch)."""
        ...

    def stream(self, prompts: Sequence[str], n: int, temperature: float, top_p: float, max_tokens: int,
               seed: int | Sequence[int] | None = None) -> Iterator[tuple[int, list[Generation]]]:
        """The same work as ``generate``, yielding ``(prompt index, generations)`` as each prompt finishes."""
        ...

    def close(self) -> None: ...


ENGINES = ("vllm", "hf")


def installed(name: str) -> bool:
    module = {"vllm": "vllm", "hf": "transformers"}[name]
    return importlib.util.find_spec(module) is not None


def resolve(name: str) -> str:
    """``auto`` is vLLM where installed, else transformers."""
    if name == "auto":
        for candidate in ENGINES:
            if installed(candidate):
                return candidate
        raise RuntimeError("no inference engine installed: pip install 'llmjobs[gpu]' (or '[cpu]')")
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)} or auto")
    if not installed(name):
        extra = "vllm" if name == "vllm" else "transformers"
        raise RuntimeError(f"engine {name!r} needs {extra}: pip install 'llmjobs[gpu]' (or '[cpu]')")
    return name


def make_engine(name: str, model: str, **options: Any) -> Engine:
    name = resolve(name)
    if name == "vllm":
        from llmjobs.jobs.engines.vllm_engine import VLLMEngine

        return VLLMEngine(model, **options)
    from llmjobs.jobs.engines.hf_engine import HFEngine

    return HFEngine(model, **options)


def per_prompt_seeds(seed: int | Sequence[int] | None, count: int) -> list[int | None]:
    if seed is None or isinstance(seed, int):
        return [seed] * count
    seeds = list(seed)
    if len(seeds) != count:
        raise ValueError(f"{len(seeds)} seeds for {count} prompts")
    return seeds


__all__ = ["ENGINES", "Engine", "Generation", "installed", "make_engine", "per_prompt_seeds", "resolve"]
