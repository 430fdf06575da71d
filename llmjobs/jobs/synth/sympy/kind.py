"""The ``synth.sympy`` kind: one shard of exact problems, written atomically; a finished shard is kept.

Output (the step's output directory)::

    train/shard-00000.jsonl   rows: id, problem, answer, solution, category, family, language, difficulty,
    test/shard-00000.jsonl          params, split, key   (test/ only when test_fraction > 0)
    stats/shard-00000.json    this shard's counts (by category, family, language, difficulty; dropped, why)
    report.json, report.md    every finished shard's counts together (rewritten by each shard as it ends)

The rows have the fields ``eval.self_consistency`` reads (``id``, ``problem``, ``answer``, ``category``) and a
worked ``solution``. A shard whose stats file holds the same parameters' fingerprint is finished: a rerun
returns its stats without generating again. The stats file is written last, after both row files.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path
from typing import Any

from llmjobs.jobs.context import StepContext
from llmjobs.jobs.synth.sympy.params import SympyParams


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def fingerprint(p: SympyParams, shard: int, num_shards: int) -> str:
    blob = json.dumps([p.model_dump(), shard, num_shards], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _finished(stats_path: Path, fp: str) -> dict[str, Any] | None:
    try:
        stats = json.loads(stats_path.read_text())
    except (OSError, ValueError):
        return None
    return stats if isinstance(stats, dict) and stats.get("fingerprint") == fp else None


def run(ctx: StepContext) -> dict[str, Any]:
    p = SympyParams.model_validate(ctx.params)
    out = Path(ctx.output_dir)
    name = f"shard-{ctx.shard:05d}"
    fp = fingerprint(p, ctx.shard, ctx.num_shards)
    stats_path = out / "stats" / f"{name}.json"
    stats = _finished(stats_path, fp)
    if stats is None:
        from llmjobs.jobs.synth.sympy.generate import generate_shard
        from llmjobs.jobs.synth.sympy.registry import select

        result = generate_shard(select(p.families, p.exclude), p.shard_count(ctx.shard, ctx.num_shards),
                                seed=p.seed, shard=ctx.shard, num_shards=ctx.num_shards,
                                languages=tuple(p.languages), difficulties=tuple(p.difficulty),
                                test_fraction=p.test_fraction, max_draws=p.max_draws)
        for split, rows in result.rows.items():
            if split == "test" and p.test_fraction == 0:
                continue
            _atomic_write(out / split / f"{name}.jsonl",
                          "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        stats = {**result.stats, "fingerprint": fp, "generated": True}
        _atomic_write(stats_path, json.dumps(stats, ensure_ascii=False, indent=1))
    else:
        stats = {**stats, "generated": False}
    write_report(out, ctx.num_shards)
    return {k: stats[k] for k in ("problems", "rows", "dropped", "exhausted", "generated")}


def write_report(out: Path, num_shards: int) -> dict[str, Any]:
    """Counts of every finished shard together, as report.json and report.md."""
    from collections import Counter

    total: dict[str, Counter[str]] = {k: Counter() for k in ("by_category", "by_language", "by_difficulty",
                                                             "dropped", "rows")}
    families: dict[str, Counter[str]] = {}
    exhausted: dict[str, int] = {}
    shards = []
    for path in sorted((out / "stats").glob("shard-*.json")):
        try:
            s = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        shards.append(s["shard"])
        for k, counter in total.items():
            counter.update(s.get(k, {}))
        for fam, c in s.get("by_family", {}).items():
            families.setdefault(fam, Counter()).update(c)
        for fam, kept in s.get("exhausted", {}).items():
            exhausted[fam] = exhausted.get(fam, 0) + kept
    report = {"shards_done": len(shards), "num_shards": num_shards,
              "problems": sum(c["kept"] for c in families.values()),
              **{k: dict(v) for k, v in total.items()},
              "by_family": {f: dict(c) for f, c in families.items()}, "exhausted": exhausted}
    _atomic_write(out / "report.json", json.dumps(report, ensure_ascii=False, indent=1))
    lines = [f"# synth.sympy: {report['problems']} problems ({len(shards)} of {num_shards} shards)", "",
             "| category | problems |", "|---|---:|"]
    lines += [f"| {c} | {n} |" for c, n in sorted(report["by_category"].items())]
    lines += ["", "| family | kept | draws | duplicates | other shards | dropped |", "|---|---:|---:|---:|---:|---:|"]
    for fam, c in sorted(families.items()):
        dropped = sum(v for k, v in c.items() if k.startswith("dropped_"))
        lines.append(f"| {fam} | {c['kept']} | {c['draws']} | {c['duplicate']} | {c['other_shard']} | {dropped} |")
    lines += ["", (f"rows: {report['rows']}; languages: {report['by_language']}; "
              f"difficulty: {report['by_difficulty']}; dropped: {report['dropped'] or 'none'}")]
    if exhausted:
        lines.append(f"exhausted (fewer distinct problems than asked): {exhausted}")
    _atomic_write(out / "report.md", "\n".join(lines) + "\n")
    return report
