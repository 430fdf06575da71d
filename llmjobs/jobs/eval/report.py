"""Write an evaluation's results: results.json, samples.jsonl, problems.jsonl, report.md and plot.png."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _atomic_write(path: Path, text: str) -> None:
    # A half-written file must never pass for output.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    # Streamed: with long reasoning outputs the file can be gigabytes.
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def summary_rows(results: dict) -> list[tuple[str, str]]:
    """The summary table (label, value), shared by report.md and ``llmjobs report``."""
    n = results["samples_per_problem"]
    rows = [
        ("problems", str(results["problems"]) + (f" ({results['problems_without_samples']} more without samples)"
                                                 if results.get("problems_without_samples") else "")),
        ("samples per problem", str(n) if n == results.get("samples_per_problem_min", n)
         else f"{results['samples_per_problem_min']}–{n}"),
        (f"maj@{n} (majority accuracy)", _pct(results["majority_accuracy"])),
        ("mean@1", _pct(results["mean_at_1"])),
    ]
    pk = results.get("pass_at_k") or {}
    if pk:
        top = max(pk, key=int)
        rows.append((f"pass@{top}", _pct(pk[top])))
    rows += [
        ("reasoning failures (</think> never closed)", _pct(results["reasoning_failure_rate"])),
        ("samples without an answer", _pct(results.get("no_answer_rate"))),
        ("ties broken", str(results.get("ties", 0))),
    ]
    other = [p for p in results.get("policies", {}) if p != results.get("unclosed_policy")]
    for p in other:
        rows.append((f"maj@{n} if unclosed outputs were {_POLICY_WORDS[p]}",
                     _pct(results["policies"][p]["majority_accuracy"])))
    if results.get("mean_output_tokens") is not None:
        rows.append(("mean output tokens", f"{results['mean_output_tokens']:.1f}"))
    if results.get("tokens_per_second") is not None:
        rows.append(("generated tokens/s", f"{results['tokens_per_second']:.1f}"))
    g = results.get("grading") or {}
    if g:
        rows.append(("grading timeouts / errors", f"{g.get('timeouts', 0)} / {g.get('errors', 0)}"))
    return rows


_POLICY_WORDS = {"count_wrong": "counted wrong", "grade_reasoning": "graded from their reasoning"}


def render_markdown(results: dict) -> str:
    lines = ["# Evaluation report", ""]
    meta = results.get("meta") or {}
    for k, v in meta.items():
        lines.append(f"- **{k}**: `{v}`")
    if meta:
        lines.append("")
    lines += [f"Unclosed reasoning is {_POLICY_WORDS[results['unclosed_policy']]} in the figures below.", "",
              "| metric | value |", "|---|---|"]
    lines += [f"| {a} | {b} |" for a, b in summary_rows(results)]
    lines += ["", "## maj@k and pass@k", "",
              ("maj@k votes over each problem's first k samples; the subsets column averages the same vote over "
               "100 random orders of the samples; pass@k is the unbiased estimator."), "",
              "| k | maj@k | maj@k (random subsets) | pass@k |", "|---|---|---|---|"]
    subsets = results.get("maj_at_k_subsets") or {}
    for k, v in results["maj_at_k"].items():
        lines.append(f"| {k} | {_pct(v)} | {_pct(subsets.get(k))} | {_pct(results['pass_at_k'].get(k))} |")
    lines += ["", "## Unclosed-reasoning policies", "", "| policy | maj@N | mean@1 | no answer |", "|---|---|---|---|"]
    for name, p in results.get("policies", {}).items():
        lines.append(f"| {name} | {_pct(p['majority_accuracy'])} | {_pct(p['mean_at_1'])} | {_pct(p['no_answer_rate'])} |")
    if results.get("per_category"):
        lines += ["", "## Per category", "", "| category | problems | maj@N | mean@1 |", "|---|---|---|---|"]
        for cat, c in results["per_category"].items():
            lines.append(f"| {cat} | {c['problems']} | {_pct(c['majority_accuracy'])} | {_pct(c['mean_at_1'])} |")
    g = results.get("grading") or {}
    if g.get("examples"):
        lines += ["", "## Grading problems", "", "Pairs (gold, answer) math-verify could not decide:", ""]
        for status, pairs in g["examples"].items():
            for gold, ans in pairs:
                lines.append(f"- {status}: gold `{gold}`, answer `{ans[:200]}`")
    lines += ["", "![maj@k and per-category accuracy](plot.png)", ""]
    return "\n".join(lines)


@contextmanager
def pyplot() -> Iterator[Any]:
    """matplotlib.pyplot, headless, with fonts for Japanese labels; imported only when a plot is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:  # categories are often Japanese (中1 ... 数学IIIC): IPAex Gothic has the glyphs DejaVu lacks
        import matplotlib_fontja  # noqa: F401  (registers the font on import)

        families = ["IPAexGothic", "DejaVu Sans"]
    except ImportError:
        families = ["DejaVu Sans"]
    with plt.rc_context({"font.family": families}):
        yield plt


def write_plot(results: dict, path: Path) -> None:
    with pyplot() as plt:
        _draw(results, path, plt)


def _draw(results: dict, path: Path, plt: Any) -> None:
    cats = results.get("per_category") or {}
    fig, axes = plt.subplots(1, 2 if cats else 1, figsize=(11 if cats else 6, 4), squeeze=False)
    ax = axes[0][0]
    ks = [int(k) for k in results["maj_at_k"]]
    ax.plot(ks, [100 * v for v in results["maj_at_k"].values()], marker="o", label="maj@k")
    subsets = results.get("maj_at_k_subsets") or {}
    if subsets:
        ax.plot([int(k) for k in subsets], [100 * v for v in subsets.values()], linestyle=":",
                label="maj@k, random subsets")
    if results["pass_at_k"]:
        ax.plot([int(k) for k in results["pass_at_k"]], [100 * v for v in results["pass_at_k"].values()],
                marker=".", linestyle="--", label="pass@k")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("k (samples)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("maj@k and pass@k")
    if cats:
        ax = axes[0][1]
        names = list(cats)
        ax.bar(range(len(names)), [100 * c["majority_accuracy"] for c in cats.values()])
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_ylabel(f"maj@{results['samples_per_problem']} (%)")
        ax.set_ylim(0, 100)
        ax.set_title("per category")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def write_report(
    results: dict, sample_rows: Sequence[dict], problem_rows: Sequence[dict], out_dir: Path, *, plot: bool = True
) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "results": out_dir / "results.json",
        "samples": out_dir / "samples.jsonl",
        "problems": out_dir / "problems.jsonl",
        "report": out_dir / "report.md",
    }
    _write_jsonl(paths["samples"], sample_rows)
    _write_jsonl(paths["problems"], problem_rows)
    _atomic_write(paths["report"], render_markdown(results))
    if plot:
        paths["plot"] = out_dir / "plot.png"
        write_plot(results, paths["plot"])
    # results.json last: its presence means the report is complete.
    _atomic_write(paths["results"], json.dumps(results, ensure_ascii=False, indent=2) + "\n")
    return paths


def load_results(path: str | Path) -> dict[str, Any]:
    from llmjobs.errors import UserError

    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise UserError(f"{path}: no results.json (has the evaluation finished?)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e.msg})") from None
