"""Turning records into token ids with a loss mask: chat ``messages``, ``prompt``/``completion`` or ``text``.

Conversations are rendered with the tokenizer's chat template (or the named ``ja_think`` template), and the
loss falls on the assistant turns only: each assistant turn's character span is found by rendering the
conversation up to that turn, and the tokens whose offsets fall in a span are trained. Plain text is trained
whole. Every document ends in its labels already shifted (label i = token i+1 of the same document, -100 at
its last position), so a packed row never predicts the next document's first token.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmjobs.jobs.train import sources
from llmjobs.jobs.train.params import SFTParams, Source

log = logging.getLogger("llmjobs.train")

IGNORE = -100

# The Japanese competition's instruction format, with reasoning in <think>...</think> and a final answer line
# written by the assistant turn itself. Saved as the trained model's chat template, so evaluation with the
# template "{problem}" renders exactly what training saw.
JA_THINK_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'user' %}以下は、タスクを説明する指示です。要求を適切に満たす応答を書きなさい。\n\n"
    "### 指示:\n{{ m['content'] }}\n段階的に考え、<think></think>の中で推論してから、"
    "最後に「最終的な回答：」に続けて答えだけを書きなさい。\n\n### 応答:\n"
    "{% elif m['role'] == 'assistant' %}{{ m['content'] }}{{ eos_token }}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{% endif %}"
)


def load_tokenizer(p: SFTParams) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(p.tokenizer_path)
    if p.template == "ja_think":
        tok.chat_template = JA_THINK_TEMPLATE
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


@dataclass
class Encoded:
    ids: list[int]
    mask: list[bool]  # True where the token is trained


class Encoder:
    def __init__(self, tokenizer: Any, p: SFTParams) -> None:
        self.tok = tokenizer
        self.p = p
        self.chat = bool(getattr(tokenizer, "chat_template", None))
        opts = p.trainer_options
        self.completion_only = opts.get("completion_only_loss", True) is not False
        self.assistant_only = opts.get("assistant_only_loss", True) is not False
        self.eos = opts.get("eos_token") or tokenizer.eos_token or ""

    # ---- rendering -------------------------------------------------------------------------------------
    def _render(self, messages: list[dict[str, Any]], generation_prompt: bool = False) -> str:
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)

    def _messages(self, row: dict[str, Any], src: Source, fmt: str) -> list[dict[str, Any]]:
        if fmt == "messages":
            msgs = [{"role": m["role"], "content": m.get("content") or ""} for m in row[src.messages_field]]
        else:
            msgs = [{"role": "user", "content": str(row[src.prompt_field])},
                    {"role": "assistant", "content": str(row[src.completion_field])}]
        if self.p.system and (not msgs or msgs[0]["role"] != "system"):
            msgs.insert(0, {"role": "system", "content": self.p.system})
        return msgs

    def text_and_spans(self, row: dict[str, Any], src: Source) -> tuple[str, list[tuple[int, int]], bool] | None:
        """The document text, the character spans trained, and whether the text carries its own specials."""
        fmt = sources.record_format(row, src.fields)
        if fmt is None:
            return None
        if fmt == "text":
            text = str(row[src.text_field])
            if self.eos and not text.endswith(self.eos):
                text += self.eos
            return text, [(0, len(text))], False
        if fmt == "messages" or self.chat:
            if not self.chat:
                raise ValueError("the tokenizer has no chat template: set template: ja_think, give a tokenizer "
                                 "with one, or use prompt/completion or text data")
            msgs = self._messages(row, src, fmt)
            full = self._render(msgs)
            spans = []
            for i, m in enumerate(msgs):
                if m["role"] != "assistant":
                    continue
                start = len(self._render(msgs[:i], generation_prompt=True)) if i else 0
                end = len(self._render(msgs[: i + 1]))
                spans.append((start, end))
            whole = not self.assistant_only if fmt == "messages" else not self.completion_only
            if whole:
                spans = [(0, len(full))]
            return full, spans, True
        prompt, completion = str(row[src.prompt_field]), str(row[src.completion_field])
        text = prompt + completion + self.eos
        spans = [(len(prompt), len(text))] if self.completion_only else [(0, len(text))]
        return text, spans, False

    def encode_text(self, text: str, spans: list[tuple[int, int]], has_specials: bool) -> Encoded:
        enc = self.tok(text, add_special_tokens=not has_specials, return_offsets_mapping=True)
        mask = [any(s <= a < e for s, e in spans) and b > a for a, b in enc["offset_mapping"]]
        return Encoded(list(enc["input_ids"]), mask)

    def encode(self, row: dict[str, Any], src: Source) -> Encoded | None:
        got = self.text_and_spans(row, src)
        return None if got is None else self.encode_text(*got)

    def prompt_tokens(self, row: dict[str, Any], src: Source) -> int | None:
        e = self.encode(row, src)
        if e is None or not any(e.mask):
            return None
        return e.mask.index(True)


@dataclass
class Dataset:
    """Documents as one flat token array; labels already shifted within each document."""

    tokens: np.ndarray  # int32, all documents back to back
    labels: np.ndarray  # int32, IGNORE where no loss
    offsets: np.ndarray  # int64, document i is tokens[offsets[i]:offsets[i+1]]
    stats: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def doc(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.tokens[a:b], self.labels[a:b]


def _pick(n: int, weight: float, rng: random.Random) -> list[int]:
    """Indices taken from a source of ``n`` records with ``weight``: whole repeats then a seeded subset."""
    whole, frac = divmod(weight * n, n) if n else (0, 0)
    picked = list(range(n)) * int(whole)
    picked += sorted(rng.sample(range(n), round(frac))) if n else []
    return picked


def build(p: SFTParams, tokenizer: Any) -> Dataset:
    enc = Encoder(tokenizer, p)
    rng = random.Random(p.seed)
    stats: Counter[str] = Counter()
    tokens: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    per_source = []
    for src in p.data:
        path = Path(src.path)
        rows = []
        for i, row in enumerate(sources.iter_records(path)):
            if src.limit and i >= src.limit:
                break
            rows.append(row)
        if rows and all(sources.record_format(r, src.fields) is None for r in rows[:1]):
            raise ValueError(f"{src.path}: no usable column in its records ({sorted(rows[0])[:12]})")
        cache: dict[int, Encoded | None] = {}
        kept = 0
        for i in _pick(len(rows), src.weight, rng):
            if i not in cache:
                cache[i] = enc.encode(rows[i], src)
            e = cache[i]
            if e is None:
                stats["dropped_unusable"] += 1
                continue
            ids, mask = e.ids, e.mask
            if len(ids) > p.max_length:
                if p.overlong == "drop":
                    stats["dropped_overlong"] += 1
                    continue
                ids, mask = ids[: p.max_length], mask[: p.max_length]
                stats["truncated"] += 1
            arr = np.asarray(ids, dtype=np.int32)
            lab = np.full(len(ids), IGNORE, dtype=np.int32)
            m = np.asarray(mask[1:], dtype=bool)
            lab[:-1][m] = arr[1:][m]
            if not (lab != IGNORE).any():
                stats["dropped_no_loss_tokens"] += 1
                continue
            tokens.append(arr)
            labels.append(lab)
            kept += 1
        per_source.append({"path": src.path, "records": len(rows), "weight": src.weight, "samples": kept})
    if not tokens:
        raise ValueError(f"no sample left to train on ({dict(stats)}); if every prompt is longer than "
                         f"max_length {p.max_length}, raise max_length or set overlong: truncate")
    lengths = np.array([len(t) for t in tokens], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    ds = Dataset(np.concatenate(tokens), np.concatenate(labels), offsets)
    ds.stats = {"samples": len(tokens), "tokens": int(offsets[-1]),
                "loss_tokens": int((ds.labels != IGNORE).sum()), "sources": per_source,
                "dropped_overlong": stats["dropped_overlong"], "truncated": stats["truncated"],
                "dropped_no_loss_tokens": stats["dropped_no_loss_tokens"],
                "dropped_unusable": stats["dropped_unusable"]}
    return ds
