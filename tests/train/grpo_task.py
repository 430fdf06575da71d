"""The task of the GRPO tests: single-digit additions ``a+b=`` answered ``\\boxed{a+b}``, a character-level
tokenizer and a tiny Llama with a short supervised warm-up (so it already writes the boxed format and gets some
sums right), built on disk in a few seconds, no downloads."""

from __future__ import annotations

import json
import random
from pathlib import Path

CONFIG = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
          "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 64,
          "tie_word_embeddings": True}


def problems(n: int, seed: int = 0, top: int = 2) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.randint(0, top), rng.randint(0, top)
        out.append({"id": str(i), "problem": f"{a}+{b}=", "answer": str(a + b)})
    return out


def write_problems(path: Path, n: int = 64, seed: int = 0) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in problems(n, seed)))
    return path


def build_tokenizer(path: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = list("0123456789+=\\boxed{}<>/think ")
    vocab = {t: i for i, t in enumerate(["<unk>", "<s>", "</s>", "<pad>", *dict.fromkeys(chars)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", model_max_length=64)
    fast.save_pretrained(path)
    return path


def warm_model(path: Path, tokenizer: Path, steps: int = 80, seed: int = 0, lr: float = 5e-3) -> Path:
    """A tiny Llama after ``steps`` supervised steps on correct boxed answers: it writes the format, and gets
    part of the sums right (the GRPO tests start from there)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer)
    cfg = dict(CONFIG)
    config = AutoConfig.for_model(cfg.pop("model_type"), vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **cfg)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    rows = problems(256, seed + 1)
    for step in range(steps):
        batch = rows[(step * 16) % 256:(step * 16) % 256 + 16]
        texts = [r["problem"] + "\\boxed{" + r["answer"] + "}" + tok.eos_token for r in batch]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        labels = enc.input_ids.clone()
        labels[enc.attention_mask == 0] = -100
        labels[:, :4] = -100  # the prompt "a+b="
        loss = model(**enc, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def short_reward(completions: list[str], limit: int = 10, **_: object) -> list[float]:
    """A custom reward for the tests (loaded by import path): 1.0 for completions of at most ``limit`` chars."""
    return [1.0 if len(c) <= limit else 0.0 for c in completions]
