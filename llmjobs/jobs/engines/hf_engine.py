"""transformers fallback: the same interface as the vLLM engine, for machines without vLLM.

Slower (no paged attention, no continuous batching), but it runs wherever torch runs. A LoRA adapter is
applied with peft when peft is installed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

from llmjobs.jobs.engines import Generation, per_prompt_seeds

log = logging.getLogger("llmjobs.engines.hf")


class HFEngine:
    name = "hf"

    def __init__(self, model: str, adapter: str | None = None, tensor_parallel: int = 1,
                 max_model_len: int | None = None, dtype: str = "auto",
                 seed: int = 0, device: str | None = None, **_ignored) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if tensor_parallel > 1:
            log.warning("the transformers engine ignores tensor_parallel=%d; use vLLM for that", tensor_parallel)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if dtype == "auto" and self.device == "cpu":
            dtype = "float32"  # bf16 matmuls on CPUs without AMX are several times slower than fp32
        torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype).to(self.device)
        if adapter:
            try:
                from peft import PeftModel
            except ImportError as exc:
                raise RuntimeError("a LoRA adapter with the transformers engine needs peft: "
                                   "pip install peft") from exc
            self.model = PeftModel.from_pretrained(self.model, adapter).to(self.device)
        self.model.eval()
        self.max_model_len = max_model_len
        self.seed = seed

    def generate(self, prompts: Sequence[str], n: int, temperature: float, top_p: float, max_tokens: int,
                 seed: int | Sequence[int] | None = None) -> list[list[Generation]]:
        return [gens for _, gens in self.stream(prompts, n, temperature, top_p, max_tokens, seed)]

    def stream(self, prompts: Sequence[str], n: int, temperature: float, top_p: float, max_tokens: int,
               seed: int | Sequence[int] | None = None) -> Iterator[tuple[int, list[Generation]]]:
        """``(prompt index, its n generations)`` prompt by prompt, in order."""
        import torch

        seeds = per_prompt_seeds(self.seed if seed is None else seed, len(prompts))
        eos = self.tokenizer.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        for index, (prompt, prompt_seed) in enumerate(zip(prompts, seeds)):
            # one prompt per call, its N samples as one batch: the seed then fixes this prompt's samples
            # whatever else is in the chunk, as with the vLLM engine
            if prompt_seed is not None:
                torch.manual_seed(prompt_seed)
            enc = self.tokenizer([prompt], return_tensors="pt", add_special_tokens=False).to(self.device)
            sampling = temperature > 0
            # greedy decoding gives one answer: decode it once and repeat it n times
            kwargs = {"max_new_tokens": max_tokens, "do_sample": sampling,
                      "num_return_sequences": n if sampling else 1, "pad_token_id": self.tokenizer.pad_token_id}
            if sampling:
                kwargs.update(temperature=temperature, top_p=top_p)
            else:
                kwargs.update(temperature=None, top_p=None, top_k=None)
            with torch.no_grad():
                out = self.model.generate(**enc, **kwargs)
            new = out[:, enc["input_ids"].shape[1]:]
            samples = []
            for row in new.tolist():
                count = len(row)
                for i, tok in enumerate(row):  # after the stop token only padding follows
                    if tok in eos_ids:
                        count = i + 1
                        break
                text = self.tokenizer.decode(row[:count], skip_special_tokens=True)
                samples.append(Generation(text, count))
            yield index, samples if sampling else samples * n

    def close(self) -> None:
        self.model = None
