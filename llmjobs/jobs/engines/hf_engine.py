"""transformers fallback: the same interface as the vLLM engine, for machines without vLLM.

Slower (no paged attention, no continuous batching), but it runs wherever torch runs. Many prompts are decoded
in one batch with keyed sampling, so a prompt's samples do not depend on the batch. A LoRA adapter is applied
with peft when peft is installed.
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
                 seed: int = 0, device: str | None = None, batch_rows: int = 256, **_ignored) -> None:
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
        self.batch_rows = batch_rows
        # the model's own stop tokens too (chat models end a turn with a token other than the tokenizer's eos)
        self.eos_ids: set[int] = set()
        for eos in (self.tokenizer.eos_token_id, getattr(self.model.generation_config, "eos_token_id", None)):
            self.eos_ids |= set(eos if isinstance(eos, list) else [eos]) - {None}

    def generate(self, prompts: Sequence[str], n: int, temperature: float, top_p: float, max_tokens: int,
                 seed: int | Sequence[int] | None = None) -> list[list[Generation]]:
        return [gens for _, gens in self.stream(prompts, n, temperature, top_p, max_tokens, seed)]

    def stream(self, prompts: Sequence[str], n: int, temperature: float, top_p: float, max_tokens: int,
               seed: int | Sequence[int] | None = None) -> Iterator[tuple[int, list[Generation]]]:
        """``(prompt index, its n generations)`` prompt by prompt, in order.

        Prompts are decoded together, up to ``batch_rows`` sequences at once: on a CPU one call per prompt
        spent its time in per-step overhead, not in arithmetic. A prompt's samples do not depend on what
        else is in the batch (keyed sampling), as with the vLLM engine's per-request seeds.
        """
        rows_per_prompt = n if temperature > 0 else 1  # greedy decoding gives one answer, repeated n times
        seeds = per_prompt_seeds(self.seed if seed is None else seed, len(prompts))
        per_batch = max(1, self.batch_rows // rows_per_prompt)
        for first in range(0, len(prompts), per_batch):
            batch = list(range(first, min(len(prompts), first + per_batch)))
            texts = self._decode([prompts[i] for i in batch], [seeds[i] for i in batch], rows_per_prompt,
                                 temperature, top_p, max_tokens)
            for k, index in enumerate(batch):
                samples = texts[k * rows_per_prompt:(k + 1) * rows_per_prompt]
                yield index, samples if temperature > 0 else samples * n

    def _decode(self, prompts: list[str], seeds: list[int | None], rows_per_prompt: int, temperature: float,
                top_p: float, max_tokens: int) -> list[Generation]:
        """``rows_per_prompt`` continuations of each prompt, prompt-major, in one left-padded batch with a
        KV cache."""
        import torch

        from llmjobs.jobs.engines.keyed_sampling import pick, row_keys

        tok = self.tokenizer
        tok.padding_side = "left"
        enc = tok(prompts, return_tensors="pt", add_special_tokens=False, padding=True)
        ids = enc["input_ids"].repeat_interleave(rows_per_prompt, dim=0).to(self.device)
        mask = enc["attention_mask"].repeat_interleave(rows_per_prompt, dim=0).to(self.device)
        rows = ids.shape[0]
        # no seed: a fresh one per call, so unseeded calls still differ
        base = [s if s is not None else int(torch.randint(0, 2**31, ())) for s in seeds]
        keys = row_keys(torch.tensor(base, dtype=torch.int64).repeat_interleave(rows_per_prompt),
                        torch.arange(rows_per_prompt, dtype=torch.int64).repeat(len(prompts))).to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        pad = tok.pad_token_id
        out = torch.full((rows, max_tokens), pad, dtype=torch.long, device=self.device)
        lengths = torch.full((rows,), max_tokens, dtype=torch.long, device=self.device)
        eos = torch.tensor(sorted(self.eos_ids), dtype=torch.long, device=self.device)
        live = torch.arange(rows, device=self.device)  # the batch row of each row still decoded
        dead = torch.zeros(rows, dtype=torch.bool, device=self.device)  # ended, not yet dropped
        cache = None
        step_ids = ids
        with torch.no_grad():
            for step in range(max_tokens):
                result = self.model(input_ids=step_ids, attention_mask=mask, position_ids=positions,
                                    past_key_values=cache, use_cache=True)
                cache = result.past_key_values
                nxt = pick(result.logits[:, -1, :].float(), keys, step, temperature, top_p)
                alive = ~dead
                out[live[alive], step] = nxt[alive]
                stopped = alive & torch.isin(nxt, eos)
                lengths[live[stopped]] = step + 1
                dead |= stopped
                if bool(dead.all()):
                    break
                # drop ended rows once a quarter of the batch has ended: samples end at very different
                # lengths, and the batch would otherwise run at full size until its longest sample ends
                if int(dead.sum()) * 4 >= len(live) and hasattr(cache, "batch_select_indices"):
                    keep = (~dead).nonzero().squeeze(-1)
                    cache.batch_select_indices(keep)
                    mask, positions, live, keys, nxt = mask[keep], positions[keep], live[keep], keys[keep], nxt[keep]
                    dead = dead[keep]
                step_ids = nxt[:, None]
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
                positions = positions[:, -1:] + 1
        counts = lengths.tolist()
        return [Generation(tok.decode(row[:count], skip_special_tokens=True), count)
                for row, count in zip(out.tolist(), counts)]

    def close(self) -> None:
        self.model = None
