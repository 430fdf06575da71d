"""A tokenizer made for a chat dataset: byte-level BPE trained with ``tokenizers`` on the dataset's own text,
with a minimal chat template, saved with ``save_pretrained`` (what ``train.sft``'s ``init.tokenizer`` reads).

For from-scratch models (``init: {config, tokenizer}``) when no pretrained tokenizer fits or may be downloaded.
Digits are split one per token, so numbers are spelled digit by digit (small models learn arithmetic that way);
the rest is byte-level BPE, so any text the model later meets still encodes.

Use it as a ``python`` step::

    tokenizer:
      kind: python
      params: {function: llmjobs.jobs.data.tokenizer:build, data: ${steps.sft_data.output}/train.jsonl,
               vocab_size: 512}
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>"]
# every turn is role tag, newline, content, end of sequence; the generation prompt opens the assistant turn
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def texts(path: str | Path) -> Iterator[str]:
    """Every turn's content of a chat JSONL file (``messages``), or ``text`` / ``prompt`` + ``completion``."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            if "messages" in row:
                yield from (m["content"] for m in row["messages"])
            else:
                yield from (row[k] for k in ("text", "prompt", "completion") if isinstance(row.get(k), str))


def train_tokenizer(data: list[str | Path], out: str | Path, vocab_size: int = 512,
                    model_max_length: int = 1024) -> dict[str, Any]:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator((t for path in data for t in texts(path)), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", model_max_length=model_max_length)
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return {"vocab_size": len(fast), "tokenizer": str(out)}


def build(ctx: Any, data: str | list[str], vocab_size: int = 512, model_max_length: int = 1024) -> dict[str, Any]:
    """``python`` kind entry: train on ``data`` (one chat JSONL file or a list) into the step's output."""
    paths = [data] if isinstance(data, str) else list(data)
    return train_tokenizer(paths, Path(ctx.output_dir), vocab_size, model_max_length)
