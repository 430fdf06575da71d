"""Evaluations side by side: each stage's mean@1 / maj@k / pass@k from its ``results.json``, the vote's gain
(maj@k - mean@1) and each stage's gain over the first, as ``comparison.md`` and ``comparison.json``.

Reads only JSON (no torch), so it runs anywhere. As a ``python`` step after the evaluation steps::

    table:
      kind: python
      params:
        function: llmjobs.jobs.eval.compare_table:step
        stages: {sft: "${steps.eval_sft.output}", self_distilled: "${steps.eval_distilled.output}"}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmjobs.jobs.eval.report import load_results


def _at(curve: dict[str, float], k: int) -> float | None:
    """The curve's value at k, else at its largest k (a problem with fewer samples caps the curve)."""
    if not curve:
        return None
    return curve.get(str(k), curve[max(curve, key=int)])


def stage_row(name: str, results: dict[str, Any]) -> dict[str, Any]:
    k = int(results.get("samples_per_problem") or max(int(x) for x in results["maj_at_k"]))
    mean1, maj, pas = results["mean_at_1"], _at(results["maj_at_k"], k), _at(results.get("pass_at_k") or {}, k)
    return {"stage": name, "k": k, "problems": results.get("problems"), "mean_at_1": mean1, "maj_at_k": maj,
            "pass_at_k": pas, "vote_gain": None if maj is None else maj - mean1}


def compare(stages: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Rows in the order given; ``gain`` of each later stage over the first (and over the previous one)."""
    rows = [stage_row(name, r) for name, r in stages.items()]
    metrics = ("mean_at_1", "maj_at_k", "pass_at_k")
    for i, row in enumerate(rows):
        for ref, key in ((rows[0], "gain_over_first"), (rows[i - 1] if i else rows[0], "gain_over_previous")):
            row[key] = None if i == 0 else {m: (None if row[m] is None or ref[m] is None else row[m] - ref[m])
                                            for m in metrics}
    return {"stages": rows}


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def _gain(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:+.1f}"


def markdown(table: dict[str, Any]) -> str:
    rows = table["stages"]
    k = rows[0]["k"] if rows else 0
    lines = [f"| stage | problems | mean@1 | maj@{k} | pass@{k} | maj@{k} − mean@1 |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['stage']} | {r['problems']} | {_pct(r['mean_at_1'])} | {_pct(r['maj_at_k'])} | "
                     f"{_pct(r['pass_at_k'])} | {_gain(r['vote_gain'])} |")
    for r in rows[1:]:
        g = r["gain_over_first"]
        lines.append(f"| gain: {r['stage']} − {rows[0]['stage']} | | {_gain(g['mean_at_1'])} | "
                     f"{_gain(g['maj_at_k'])} | {_gain(g['pass_at_k'])} | |")
    return "\n".join(lines) + "\n\n(percent of held-out problems; gains in percentage points)\n"


def write(table: dict[str, Any], out: str | Path) -> tuple[Path, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "comparison.md", out / "comparison.json"
    md.write_text(markdown(table), encoding="utf-8")
    js.write_text(json.dumps(table, indent=1), encoding="utf-8")
    return md, js


def step(ctx: Any, stages: dict[str, str]) -> dict[str, Any]:
    """``python`` kind entry: ``stages`` maps a stage name to its evaluation's output directory, in order."""
    table = compare({name: load_results(path) for name, path in stages.items()})
    md, _ = write(table, ctx.output_dir)
    print(md.read_text(), flush=True)
    return {"comparison": str(md), **{r["stage"]: {m: r[m] for m in ("mean_at_1", "maj_at_k", "pass_at_k")}
                                      for r in table["stages"]}}
