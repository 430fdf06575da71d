"""vLLM offline engine: ``LLM.generate`` with ``SamplingParams(n=N)`` so the N samples share one prefill."""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

from llmjobs.jobs.engines import Generation, per_prompt_seeds

log = logging.getLogger("llmjobs.engines.vllm")


def on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


class VLLMEngine:
    name = "vllm"

    def __init__(self, model: str, adapter: str | None = None, tensor_parallel: int = 1,
                 max_model_len: int | None = None, max_lora_rank: int = 64, dtype: str = "auto",
                 gpu_memory_utilization: float | None = None, seed: int = 0,
                 llm_options: dict[str, Any] | None = None) -> None:
        from vllm import LLM
        from vllm.lora.request import LoRARequest

        options: dict[str, Any] = {
            "model": model,
            "tensor_parallel_size": tensor_parallel,
            "enable_prefix_caching": True,  # the N samples of a prompt and a shared template reuse the prefill
            "dtype": dtype,
            "seed": seed,
        }
        if max_model_len:
            options["max_model_len"] = max_model_len
        if adapter:
            options["enable_lora"] = True
            options["max_lora_rank"] = max_lora_rank
        if gpu_memory_utilization is not None:
            options["gpu_memory_utilization"] = gpu_memory_utilization
        elif on_cpu() and "VLLM_CPU_KVCACHE_SPACE" not in os.environ:
            # the CPU build sizes its KV cache as a share of host memory; the default share is too
            # large for a laptop or a CI runner that also holds other engines
            options["gpu_memory_utilization"] = 0.3
        options.update(llm_options or {})
        log.info("starting vLLM: %s", {k: v for k, v in options.items()})
        self.llm = LLM(**options)
        self.lora = LoRARequest("adapter", 1, adapter) if adapter else None
        # vLLM's CPU build kills its engine on a seeded request whose prefill is split over steps: it rewinds
        # the request's generator by an offset, which CPU generators do not have. There, samples draw from
        # the engine's seeded stream instead (reproducible for the same batches, not per prompt).
        self.per_request_seeds = not on_cpu()
        self._ids = itertools.count()
        if not self.per_request_seeds:
            log.warning("vLLM on CPU: per-prompt seeds are not used (the engine seed %d is)", seed)

    def _params(self, n: int, count: int, temperature: float, top_p: float, max_tokens: int,
                seed: int | Sequence[int] | None):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        greedy = temperature == 0  # vLLM refuses n > 1 with greedy decoding: decode once, repeat it
        params = []
        for s in per_prompt_seeds(seed, count):
            sp = SamplingParams(n=1 if greedy else n, temperature=temperature, top_p=top_p,
                                max_tokens=max_tokens, seed=s if self.per_request_seeds else None)
            sp.output_kind = RequestOutputKind.FINAL_ONLY  # one output per request, when all n are done
            params.append(sp)
        return params, greedy

    def stream(self, prompts: Sequence[str], n: int, temperature: float, top_p: float, max_tokens: int,
               seed: int | Sequence[int] | None = None) -> Iterator[tuple[int, list[Generation]]]:
        """``(prompt index, its n generations)`` as each prompt finishes, all prompts in one batch.

        This is ``LLM.generate``'s own loop (``add_request`` for every prompt, then ``step`` until done),
        yielding results as they finish so the caller can write them at once.
        """
        params, greedy = self._params(n, len(prompts), temperature, top_p, max_tokens, seed)
        engine = self.llm.llm_engine
        index: dict[str, int] = {}
        try:
            for i, (prompt, sp) in enumerate(zip(prompts, params)):
                rid = str(next(self._ids))
                engine.add_request(rid, prompt, sp, lora_request=self.lora)
                index[rid] = i
            while index and engine.has_unfinished_requests():
                for out in engine.step():
                    if out.finished and out.request_id in index:
                        i = index.pop(out.request_id)
                        gens = [Generation(c.text, len(c.token_ids))
                                for c in sorted(out.outputs, key=lambda c: c.index)]
                        yield i, gens * n if greedy else gens
        finally:
            if index:  # the caller stopped early or failed: drop what is still queued
                engine.abort_request(list(index))
        if index:
            raise RuntimeError(f"vLLM finished without {len(index)} of the requests")

    def generate(self, prompts: Sequence[str], n: int, temperature: float, top_p: float, max_tokens: int,
                 seed: int | Sequence[int] | None = None) -> list[list[Generation]]:
        results: list[list[Generation]] = [[] for _ in prompts]
        for i, gens in self.stream(prompts, n, temperature, top_p, max_tokens, seed):
            results[i] = gens
        return results

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        self.llm = None
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
            if callable(shutdown):
                shutdown()
            del llm
