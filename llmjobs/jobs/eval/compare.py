"""``llmjobs compare``: the results of several evaluations side by side, and their maj@k curves in one plot.

A target is a run (its evaluation steps), ``RUN:STEP`` (one step), or a results.json / report directory.
Light on purpose: json and pathlib here; the registry is reached through the ``lookup`` the CLI passes,
matplotlib only inside ``write_plot``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmjobs.errors import UserError
from llmjobs.jobs.eval.report import load_results

EVAL_KIND = "eval."  # every evaluation kind writes results.json in its output directory


@dataclass
class Entry:
    label: str
    path: Path
    results: dict[str, Any]


def _results_path(target: str) -> Path | None:
    path = Path(target).expanduser()
    if path.is_dir():
        return path / "results.json"
    return path if path.is_file() else None


def resolve(targets: list[str], lookup: Callable[[str], dict]) -> list[Entry]:
    """Each target's results. ``lookup(run_ref)``: the run's summary (id and steps with name, kind, status,
    output), raising ``UserError`` for an unknown run."""
    entries: list[Entry] = []
    for target in targets:
        path = _results_path(target)
        if path is not None:
            entries.append(Entry(target, path, load_results(path)))
            continue
        ref, _, step = target.partition(":")
        view = lookup(ref)
        evals = [s for s in view["steps"] if s["kind"].startswith(EVAL_KIND)]
        if step:
            chosen = [s for s in view["steps"] if s["name"] == step]
            if not chosen:
                raise UserError(f"run {view['id']} has no step {step!r}; its evaluation steps: "
                                f"{', '.join(s['name'] for s in evals) or 'none'}")
            if not chosen[0]["kind"].startswith(EVAL_KIND):
                raise UserError(f"step {step!r} of run {view['id']} is a {chosen[0]['kind']} step, not an "
                                "evaluation")
            evals = chosen
        elif not evals:
            raise UserError(f"run {view['id']} has no evaluation step (steps: "
                            f"{', '.join(s['name'] for s in view['steps'])})")
        for s in evals:
            label = f"{view['id']}:{s['name']}" if step or len(evals) > 1 else view["id"]
            path = Path(s["output"]) / "results.json"
            if not path.is_file():
                raise UserError(f"{label}: no results yet ({path}); the step is {s['status']}")
            entries.append(Entry(label, path, load_results(path)))
    labels = [e.label for e in entries]
    if len(set(labels)) < len(labels):
        raise UserError(f"the same evaluation is named twice: {', '.join(labels)}")
    return entries


def _top(curve: dict[str, float] | None) -> tuple[int, float] | None:
    if not curve:
        return None
    k = max(curve, key=int)
    return int(k), curve[k]


def summary(e: Entry) -> dict[str, Any]:
    """One evaluation's figures, as ``compare --json`` prints them (fractions, not percentages)."""
    r = e.results
    top_pass = _top(r.get("pass_at_k"))
    return {
        "label": e.label, "path": str(e.path), "problems": r["problems"],
        "samples_per_problem": r["samples_per_problem"],
        "mean_at_1": r["mean_at_1"], "majority_accuracy": r["majority_accuracy"],
        "pass_at_k": {"k": top_pass[0], "value": top_pass[1]} if top_pass else None,
        "reasoning_failure_rate": r["reasoning_failure_rate"], "no_answer_rate": r.get("no_answer_rate"),
        "maj_at_k": r["maj_at_k"], "per_category": r.get("per_category") or {},
    }


def common_k(rows: list[dict]) -> int | None:
    """The largest k every evaluation has a maj@k for, when their N differ (maj@N alone compares unequal
    budgets)."""
    ns = {r["samples_per_problem"] for r in rows}
    if len(ns) < 2:
        return None
    shared = set.intersection(*(set(map(int, r["maj_at_k"])) for r in rows))
    return max(shared) if shared else None


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def table_rows(rows: list[dict]) -> list[tuple[str, list[str]]]:
    """(metric, one value per evaluation): the rows of the comparison table."""
    out = [("problems", [str(r["problems"]) for r in rows]),
           ("samples per problem (N)", [str(r["samples_per_problem"]) for r in rows]),
           ("mean@1", [_pct(r["mean_at_1"]) for r in rows]),
           ("maj@N", [_pct(r["majority_accuracy"]) for r in rows])]
    k = common_k(rows)
    if k is not None:
        out.append((f"maj@{k} (k all share)", [_pct(r["maj_at_k"].get(str(k))) for r in rows]))
    out += [("pass@N", [f"{_pct(r['pass_at_k']['value'])} (k={r['pass_at_k']['k']})" if r["pass_at_k"] else "–"
                        for r in rows]),
            ("</think> never closed", [_pct(r["reasoning_failure_rate"]) for r in rows]),
            ("no answer", [_pct(r["no_answer_rate"]) for r in rows])]
    return out


def category_rows(rows: list[dict]) -> list[tuple[str, list[str]]]:
    """(category, "maj@N / mean@1" per evaluation), for every category any evaluation has."""
    cats = sorted({c for r in rows for c in r["per_category"]})
    return [(c, [f"{_pct(r['per_category'][c]['majority_accuracy'])} / {_pct(r['per_category'][c]['mean_at_1'])}"
                 if c in r["per_category"] else "–" for r in rows]) for c in cats]


def write_plot(rows: list[dict], path: Path) -> None:
    """The maj@k curve of each evaluation, in one plot (same fonts as the evaluation report's plot)."""
    from llmjobs.jobs.eval.report import pyplot

    with pyplot() as plt:
        from matplotlib.ticker import MaxNLocator

        fig, ax = plt.subplots(figsize=(7, 4.5))
        for r in rows:
            ks = sorted(r["maj_at_k"], key=int)
            ax.plot([int(k) for k in ks], [100 * r["maj_at_k"][k] for k in ks], marker="o", label=r["label"])
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("k (samples)")
        ax.set_ylabel("maj@k accuracy (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize="small")
        ax.set_title("maj@k")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
        fig.savefig(tmp, dpi=100)
        plt.close(fig)
        tmp.replace(path)
