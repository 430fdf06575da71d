"""The ``data.prepare`` kind: sources -> chat ``messages`` JSONL for ``train.sft``, with a stats report.

Order of work, and why:
1. read and map every source's rows; render them with the template (think / ja_instruction / chat);
2. drop rows with nothing to train on, then rows over the length limit (target tokenizer or characters);
3. exact duplicates (normalised text), then near duplicates (MinHash LSH over character 5-grams), first
   occurrence kept, sources in the order given: dedup before weighting, or upsampled copies would vanish;
4. decontamination: rows sharing any n-gram with a protected evaluation set are dropped;
5. train/dev split by a hash of the row's text (stable when sources are added), *then* weights on the train
   part only, so no copy of a dev row is ever trained on;
6. shuffle (seeded) and write ``train.jsonl``, ``dev.jsonl``, ``stats.json`` and ``stats.md``.

Output rows: ``{"messages": [{"role", "content"}, ...], "source", "language", "id"}``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import socket
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any

from llmjobs.jobs.context import StepContext
from llmjobs.jobs.data.params import EvalSet, PrepareParams, Source

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff\uff66-\uff9f]")
_UNITS = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff\uff66-\uff9f]|[^\W_]+", re.UNICODE)


def normalize(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def units(text: str) -> list[str]:
    """Words, with each CJK character a word of its own, so n-grams work for Japanese and English alike."""
    return _UNITS.findall(unicodedata.normalize("NFKC", text).lower())


def ngrams(text: str, n: int) -> set[str]:
    u = units(text)
    return {" ".join(u[i:i + n]) for i in range(len(u) - n + 1)}


# ---- templates ----------------------------------------------------------------------------------------------

def _prompt_text(p: PrepareParams, prompt: str) -> str:
    from llmjobs.jobs.eval.prompts import fill

    template = p.prompt_template or ("ja_instruction" if p.template == "ja_instruction" else None)
    return prompt if template is None else fill(prompt, template)


def render(p: PrepareParams, row: dict[str, Any]) -> list[dict[str, str]] | None:
    """The conversation for one mapped row, or None when it has nothing to train on."""
    if "messages" in row:
        msgs = row["messages"]
        return msgs if any(m["role"] == "assistant" and m["content"].strip() for m in msgs) else None
    prompt = row.get("prompt", "").strip()
    reasoning, answer, response = (row.get(k, "").strip() for k in ("reasoning", "answer", "response"))
    if not prompt:
        return None
    if p.template == "chat" or (response and not (reasoning or answer)):
        reply = response or "\n\n".join(x for x in (reasoning, answer) if x)
    elif p.template == "think":
        final = p.answer_format.replace("{answer}", answer) if answer else ""
        body = reasoning or response
        if not body and not final:
            return None
        reply = f"<think>\n{body}\n</think>\n\n{final}".rstrip()
    else:  # ja_instruction: the reasoning, then the answer line the eval's extractor reads
        body = reasoning or response
        if not answer and not body:
            return None
        reply = (f"{body}\n\n" if body else "") + (f"最終的な回答：{answer}" if answer else "")
    if not reply.strip():
        return None
    msgs = [{"role": "user", "content": _prompt_text(p, prompt)}, {"role": "assistant", "content": reply}]
    if p.system:
        msgs.insert(0, {"role": "system", "content": p.system})
    return msgs


def conversation_text(msgs: list[dict[str, str]]) -> str:
    return "\n".join(m["content"] for m in msgs)


def prompt_of(msgs: list[dict[str, str]]) -> str:
    return "\n".join(m["content"] for m in msgs if m["role"] != "assistant")


# ---- length --------------------------------------------------------------------------------------------------

class Length:
    """Tokens with the target model's tokenizer (its chat template when it has one), else characters."""

    def __init__(self, tokenizer: str | None) -> None:
        self.tok = None
        if tokenizer:
            from transformers import AutoTokenizer

            self.tok = AutoTokenizer.from_pretrained(tokenizer)
        self.unit = "tokens" if self.tok is not None else "chars"

    def __call__(self, msgs: list[dict[str, str]]) -> int:
        if self.tok is None:
            return len(conversation_text(msgs))
        if getattr(self.tok, "chat_template", None):
            ids = self.tok.apply_chat_template(msgs, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "keys"):
                ids = ids["input_ids"]
            return len(ids)
        return len(self.tok(conversation_text(msgs))["input_ids"])


# ---- near duplicates ----------------------------------------------------------------------------------------

class NearDuplicates:
    """MinHash LSH (datasketch) over character 5-grams of the normalised text."""

    def __init__(self, threshold: float, num_perm: int = 64) -> None:
        from datasketch import MinHash, MinHashLSH

        self._minhash, self.num_perm = MinHash, num_perm
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.count = 0

    def seen_before(self, text: str) -> bool:
        """True if a near duplicate was added before; else adds this text."""
        t = normalize(text)
        shingles = {t[i:i + 5] for i in range(max(1, len(t) - 4))}
        m = self._minhash(num_perm=self.num_perm, seed=1)
        m.update_batch([s.encode() for s in shingles])
        if self.lsh.query(m):
            return True
        self.lsh.insert(str(self.count), m)
        self.count += 1
        return False


# ---- decontamination ----------------------------------------------------------------------------------------

def eval_ngrams(sets: list[EvalSet], n: int) -> tuple[set[str], dict[str, int]]:
    """Every n-gram of the protected problems; a problem shorter than n units is kept whole (as its units
    joined), so it still matches a row that contains it."""
    from llmjobs.jobs.eval.data import PRESETS, FieldMap, load_problems

    grams: set[str] = set()
    sizes: dict[str, int] = {}
    for ev in sets:
        fields = None
        if ev.field:
            fields = FieldMap(problem=ev.field, answer=None)
        elif ev.preset is None:
            fields = FieldMap(problem="problem", answer=None)
        else:
            base = PRESETS[ev.preset].fields if ev.preset in PRESETS else None
            fields = FieldMap(id=base.id, problem=base.problem, answer=None) if base else None
        problems = load_problems(ev.path, fields=fields, preset=ev.preset)
        sizes[ev.path] = len(problems)
        for pr in problems:
            u = units(pr.problem)
            grams |= ngrams(pr.problem, n) if len(u) >= n else {" ".join(u)} if u else set()
    return grams, sizes


def _contaminated(text: str, grams: set[str], short: list[str], n: int) -> bool:
    u = units(text)
    if any(" ".join(u[i:i + n]) in grams for i in range(len(u) - n + 1)):
        return True
    joined = f" {' '.join(u)} "
    return any(f" {g} " in joined for g in short)  # protected problems shorter than n units, whole


# ---- the kind -------------------------------------------------------------------------------------------------

def _hash01(text: str, salt: str) -> float:
    return int(hashlib.sha256(f"{salt}\0{text}".encode()).hexdigest()[:15], 16) / float(16 ** 15)


def _histogram(lengths: list[int]) -> dict[str, int]:
    hist: Counter[str] = Counter()
    for n in lengths:
        lo = 0 if n < 128 else 2 ** int(math.log2(n))
        hist[f"{lo}-{max(128, lo * 2) - 1}"] += 1
    return dict(sorted(hist.items(), key=lambda kv: int(kv[0].split("-")[0])))


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def prepare(p: PrepareParams, out: Path) -> dict[str, Any]:
    from llmjobs.jobs.data.sources import check_fields, map_row, read_rows

    out.mkdir(parents=True, exist_ok=True)
    length = Length(p.tokenizer)
    limit = p.max_tokens if length.unit == "tokens" else p.max_chars
    near = NearDuplicates(p.near_threshold) if p.dedup == "near" else None
    exact: set[str] = set()
    grams, eval_sizes = eval_ngrams(p.decontaminate, p.ngram) if p.decontaminate else (set(), {})
    short = [g for g in grams if g.count(" ") < p.ngram - 1]

    read: Counter[str] = Counter()
    dropped: dict[str, Counter[str]] = {}
    kept: list[tuple[Source, dict[str, Any]]] = []
    lengths: list[int] = []
    examples: dict[str, list[str]] = {}
    for src in p.sources:
        try:
            check_fields(src)  # a source written upstream is checked here, before any work
            rows = read_rows(src.path, src.columns)
        except ValueError as e:
            from llmjobs.errors import UserError

            raise UserError(str(e)) from None
        drop = dropped.setdefault(src.label, Counter())
        for index, raw in enumerate(rows):
            if src.limit is not None and index >= src.limit:
                break
            read[src.label] += 1
            row = map_row(src, raw, index)
            msgs = render(p, row)
            if msgs is None:
                drop["empty"] += 1
                continue
            n = length(msgs)
            if limit is not None and n > limit:
                drop["too_long"] += 1
                continue
            text = conversation_text(msgs)
            key_text = prompt_of(msgs) if p.dedup_on == "prompt" else text
            if p.dedup != "none":
                digest = hashlib.sha256(normalize(key_text).encode()).hexdigest()
                if digest in exact:
                    drop["duplicate"] += 1
                    continue
                exact.add(digest)
                if near is not None and near.seen_before(key_text):
                    drop["near_duplicate"] += 1
                    examples.setdefault("near_duplicate", []).append(key_text[:200])
                    continue
            if grams and _contaminated(text, grams, short, p.ngram):
                drop["contaminated"] += 1
                examples.setdefault("contaminated", []).append(prompt_of(msgs)[:200])
                continue
            kept.append((src, {"messages": msgs, "source": src.label, "language": row["language"],
                               "id": f"{src.label}:{row['id']}"}))
            lengths.append(n)

    rng = random.Random(p.seed)
    train: list[dict[str, Any]] = []
    dev: list[dict[str, Any]] = []
    for src, row in kept:
        if p.dev_fraction and _hash01(conversation_text(row["messages"]), "dev") < p.dev_fraction:
            dev.append(row)
            continue
        copies = int(src.weight) + (1 if rng.random() < src.weight - int(src.weight) else 0)
        train.extend([row] * copies)
    if p.shuffle:
        rng.shuffle(train)
        rng.shuffle(dev)
    _write_jsonl(out / "train.jsonl", train)
    _write_jsonl(out / "dev.jsonl", dev)

    def by(rows: list[dict[str, Any]], *keys: str) -> dict[str, int]:
        return dict(Counter("/".join(r[k] for k in keys) for r in rows))

    stats = {
        "train_rows": len(train), "dev_rows": len(dev), "read": dict(read),
        "kept_unique": len(kept), "dropped": {s: dict(c) for s, c in dropped.items()},
        "train_by_source": by(train, "source"), "train_by_source_language": by(train, "source", "language"),
        "dev_by_source": by(dev, "source"), "weights": {s.label: s.weight for s in p.sources},
        "length_unit": length.unit, "length_limit": limit, "length_histogram": _histogram(lengths),
        "decontaminated_against": eval_sizes, "ngram": p.ngram, "template": p.template,
        "examples": {k: v[:3] for k, v in examples.items()},
    }
    (out / "stats.json").write_text(json.dumps(stats, ensure_ascii=False, indent=1))
    (out / "stats.md").write_text(stats_markdown(stats))
    return stats


def stats_markdown(s: dict[str, Any]) -> str:
    lines = [f"# data.prepare: {s['train_rows']} train rows, {s['dev_rows']} dev rows", "",
             ("| source | read | kept (unique) | empty | too long | duplicate | near duplicate | contaminated | "
             "weight | train rows |"), "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for src, n in s["read"].items():
        d = s["dropped"].get(src, {})
        kept = n - sum(d.values())
        lines.append(f"| {src} | {n} | {kept} | {d.get('empty', 0)} | {d.get('too_long', 0)} | "
                     f"{d.get('duplicate', 0)} | {d.get('near_duplicate', 0)} | {d.get('contaminated', 0)} | "
                     f"{s['weights'].get(src)} | {s['train_by_source'].get(src, 0)} |")
    lines += ["", "| source/language | train rows |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(s["train_by_source_language"].items())]
    lines += ["", f"| length ({s['length_unit']}) | rows |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in s["length_histogram"].items()]
    if s["decontaminated_against"]:
        lines += ["", f"decontaminated ({s['ngram']}-grams) against: "
                  + ", ".join(f"{Path(k).name} ({v} problems)" for k, v in s["decontaminated_against"].items())]
    return "\n".join(lines) + "\n"


def run(ctx: StepContext) -> dict[str, Any]:
    if ctx.num_shards > 1:
        raise ValueError("data.prepare runs as one shard (deduplication needs every row in one place)")
    p = PrepareParams.model_validate(ctx.params)
    stats = prepare(p, Path(ctx.output_dir))
    return {k: stats[k] for k in ("train_rows", "dev_rows", "kept_unique", "dropped")}
