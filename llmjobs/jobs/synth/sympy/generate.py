"""Generate one shard of problems: draw, keep the ones this shard owns, check, deduplicate, split.

Determinism: each (seed, shard, family) has its own ``random.Random``, so a shard's problems depend on nothing
else (adding a family or a shard does not change the others' draws).

Duplicates across shards: a problem is identified by its *key*, a hash of (family, parameters), the same in
every language. A shard keeps only the problems whose key it owns (``key mod num_shards == shard``) and drops
repeats within itself, so no two shards can emit the same problem and no merge pass is needed. The cost is
drawing about ``num_shards`` candidates per kept problem; drawing is cheap next to checking, which only owned
candidates reach.

Order: each split is written round-robin over the families, so any prefix of a file mixes them.

Held-out split: a second slice of the key decides train or test (``test_fraction``). It depends on the problem
only, not on the seed or the shard, so the test set stays disjoint from the train set of any other seed too,
and a problem's Japanese and English versions always land on the same side.

Checks, in order; a failing problem is dropped and counted under its reason:
``parse`` (math-verify cannot read the answer LaTeX), ``self_grade`` (math-verify does not grade the answer
equal to itself), ``check`` (the family's second way rejects the parsed answer), ``error`` (the family or its
check raised).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from llmjobs.jobs.synth.sympy.registry import Draft, Family

log = logging.getLogger("llmjobs.synth.sympy")


def problem_key(family: str, params: dict[str, Any]) -> str:
    return hashlib.sha256(f"{family}\0{json.dumps(params, sort_keys=True, default=str)}".encode()).hexdigest()


def owner(key: str, num_shards: int) -> int:
    return int(key[:15], 16) % num_shards


def is_test(key: str, test_fraction: float) -> bool:
    return test_fraction > 0 and int(key[15:30], 16) / float(16 ** 15) < test_fraction


class AnswerReader:
    """math-verify's view of an answer: parsed once per distinct string, then cached."""

    def __init__(self) -> None:
        logging.getLogger("math_verify").setLevel(logging.ERROR)
        from math_verify import parse, verify

        self._parse, self._verify = parse, verify
        self._cache: dict[str, tuple[str, Any]] = {}

    def read(self, answer: str) -> tuple[str, Any]:
        """('ok', value) or (reason, None). Timeouts are off: the job runs families, not model output."""
        hit = self._cache.get(answer)
        if hit is None:
            parsed = self._parse(f"${answer}$", parsing_timeout=None)
            if not parsed:
                hit = ("parse", None)
            elif not self._verify(parsed, self._parse(f"${answer}$", parsing_timeout=None), timeout_seconds=None):
                hit = ("self_grade", None)
            else:
                hit = ("ok", parsed[0])
            self._cache[answer] = hit
        return hit


@dataclass
class ShardResult:
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {"train": [], "test": []})
    stats: dict[str, Any] = field(default_factory=dict)


def quotas(families: list[Family], total: int) -> dict[str, int]:
    """``total`` problems split evenly over the families (the first ones take the remainder)."""
    base, extra = divmod(total, len(families))
    return {f.name: base + (1 if i < extra else 0) for i, f in enumerate(families)}


def interleave(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows in round-robin order over the families (a problem's languages stay together, each family keeps
    its order), so the first N rows of a file (``limit: N`` downstream) are a mix of every family."""
    groups: dict[str, list[list[dict[str, Any]]]] = {}
    for row in rows:
        fam = groups.setdefault(row["family"], [])
        if fam and fam[-1][0]["key"] == row["key"]:
            fam[-1].append(row)
        else:
            fam.append([row])
    out: list[dict[str, Any]] = []
    for i in range(max((len(g) for g in groups.values()), default=0)):
        for fam in groups.values():
            if i < len(fam):
                out += fam[i]
    return out


def generate_shard(families: list[Family], count: int, *, seed: int = 0, shard: int = 0, num_shards: int = 1,
                   languages: tuple[str, ...] = ("ja", "en"), difficulties: tuple[int, ...] = (1, 2, 3),
                   test_fraction: float = 0.0, max_draws: int = 50,
                   reader: AnswerReader | None = None) -> ShardResult:
    """``count`` distinct problems (each in every language of ``languages``) owned by ``shard``.

    A family whose quota is not met after ``max_draws * quota * num_shards`` draws is reported as exhausted
    (its parameter space is smaller than asked for at this difficulty)."""
    reader = reader or AnswerReader()
    result = ShardResult()
    dropped: Counter[str] = Counter()
    per: dict[str, Counter[str]] = {}
    exhausted: dict[str, int] = {}
    examples: dict[str, list[str]] = {}
    started = time.time()
    for fam, quota in quotas(families, count).items():
        fam_obj = next(f for f in families if f.name == fam)
        rng = random.Random(f"{seed}:{shard}:{fam}")
        seen: set[str] = set()
        kept = draws = 0
        limit = max_draws * max(quota, 1) * num_shards
        counts = per.setdefault(fam, Counter())
        while kept < quota and draws < limit:
            draws += 1
            difficulty = rng.choice(difficulties)
            try:
                draft: Draft = fam_obj.draft(rng, difficulty)
            except Exception as e:  # noqa: BLE001 - a family's bad draw is dropped, not fatal
                dropped["error"] += 1
                examples.setdefault("error", []).append(f"{fam}: {type(e).__name__}: {e}"[:300])
                continue
            key = problem_key(fam, draft.params)
            if owner(key, num_shards) != shard:
                counts["other_shard"] += 1
                continue
            if key in seen:
                counts["duplicate"] += 1
                continue
            seen.add(key)
            status, value = reader.read(draft.answer)
            if status == "ok":
                try:
                    status = "ok" if draft.check(value) else "check"
                except Exception as e:  # noqa: BLE001
                    status = "error"
                    examples.setdefault("error", []).append(f"{fam} check: {type(e).__name__}: {e}"[:300])
            if status != "ok":
                dropped[status] += 1
                counts[f"dropped_{status}"] += 1
                examples.setdefault(status, []).append(f"{fam}: {draft.answer} {draft.params}"[:300])
                continue
            kept += 1
            split = "test" if is_test(key, test_fraction) else "train"
            for lang in languages:
                result.rows[split].append({
                    "id": f"{fam}-{key[:16]}-{lang}", "problem": draft.text[lang], "answer": draft.answer,
                    "solution": draft.solution[lang], "category": fam_obj.category, "family": fam,
                    "language": lang, "difficulty": difficulty, "params": draft.params, "split": split,
                    "key": key[:32],
                })
        counts["kept"] = kept
        counts["draws"] = draws
        if kept < quota:
            exhausted[fam] = kept
            log.warning("family %s: only %d of %d distinct problems after %d draws", fam, kept, quota, draws)
    result.rows = {split: interleave(rows) for split, rows in result.rows.items()}
    rows = result.rows["train"] + result.rows["test"]
    result.stats = {
        "shard": shard, "num_shards": num_shards, "seed": seed, "problems": sum(c["kept"] for c in per.values()),
        "rows": {s: len(r) for s, r in result.rows.items()},
        "by_category": dict(Counter(r["category"] for r in rows if r["language"] == languages[0])),
        "by_family": {f: dict(c) for f, c in per.items()},
        "by_language": dict(Counter(r["language"] for r in rows)),
        "by_difficulty": dict(Counter(str(r["difficulty"]) for r in rows if r["language"] == languages[0])),
        "dropped": dict(dropped), "exhausted": exhausted,
        "examples": {k: v[:5] for k, v in examples.items()},
        "seconds": round(time.time() - started, 3),
    }
    return result
