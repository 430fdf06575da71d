"""Grade, vote and report a set of samples: used by the evaluation step and by ``llmjobs grade``."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from llmjobs.errors import UserError
from llmjobs.jobs.eval.answers import Extraction, clean_answer, extract_answer
from llmjobs.jobs.eval.data import Problem

Unclosed = Literal["count_wrong", "grade_reasoning"]
POLICIES: tuple[Unclosed, ...] = ("count_wrong", "grade_reasoning")


def _group(records: Iterable[dict], id_field: str, where: str) -> dict[str, list[tuple[int, dict]]]:
    """Records by problem id, each problem's samples sorted by their ``sample`` field (else file order)."""
    groups: dict[str, list[tuple[int, dict]]] = {}
    for n, rec in enumerate(records):
        if id_field not in rec:
            raise UserError(f"{where} record {n}: no id field '{id_field}' (set --id-field); fields: {', '.join(rec)}")
        pid = str(rec[id_field])
        rows = groups.setdefault(pid, [])
        index = rec.get("sample")
        if isinstance(index, str) and index.isdigit():
            index = int(index)
        rows.append((index if isinstance(index, int) else len(rows), rec))
    for pid, rows in groups.items():
        rows.sort(key=lambda r: r[0])
        indices = [i for i, _ in rows]
        if len(set(indices)) != len(indices):
            raise UserError(f"{where}: problem '{pid}' has the same sample index twice; samples must be unique")
    return groups


def grade_samples(
    records: Iterable[dict],
    problems: Mapping[str, Problem] | None,
    out_dir: str | Path | None,
    *,
    id_field: str = "id",
    gold_field: str = "answer",
    output_field: str = "output",
    category_field: str | None = None,
    tokens_field: str | None = "tokens",
    unclosed: Unclosed = "count_wrong",
    expect_think: bool = False,
    workers: int | None = None,
    timeout_s: float = 5.0,
    generation_seconds: float | None = None,
    meta: Mapping[str, Any] | None = None,
    plot: bool = True,
    where: str = "samples",
) -> dict:
    """Grade every sample, vote per problem, compute the metrics under both unclosed-reasoning policies and
    (when ``out_dir`` is given) write results.json, samples.jsonl, problems.jsonl, report.md and plot.png.
    Returns the results dict; its top-level metrics are those of the ``unclosed`` policy.

    Gold answers and categories come from ``problems`` when given (keyed by id), else from each record's
    ``gold_field`` / ``category_field``. ``generation_seconds`` (wall time of generation) gives tokens/s;
    ``meta`` (model, sampling parameters, ...) is copied into results.json.
    """
    from llmjobs.jobs.eval.grading import Grader
    from llmjobs.jobs.eval.metrics import summarize
    from llmjobs.jobs.eval.voting import build_classes_many

    if unclosed not in POLICIES:
        raise UserError(f"unclosed must be one of {', '.join(POLICIES)}, not '{unclosed}'")
    started = time.monotonic()
    groups = _group(records, id_field, where)
    if not groups:
        raise UserError(f"{where}: no samples")

    ids = sorted(groups, key=_id_order)
    golds: list[str] = []
    cats: list[str | None] = []
    for pid in ids:
        first = groups[pid][0][1]
        if problems is not None:
            if pid not in problems:
                raise UserError(f"{where}: problem id '{pid}' is not in the data")
            golds.append(problems[pid].answer)
            cats.append(problems[pid].category)
        else:
            if gold_field not in first:
                raise UserError(f"{where}: problem '{pid}' has no gold field '{gold_field}' (set --gold-field)")
            golds.append(str(first[gold_field]))
            cats.append(None if category_field is None or first.get(category_field) is None
                        else str(first[category_field]))

    # Extraction under both policies: they differ only for unclosed outputs.
    rows: list[list[dict]] = []
    for pid, gold, cat in zip(ids, golds, cats):
        prow = []
        for index, rec in groups[pid]:
            if output_field not in rec:
                raise UserError(f"{where}: a sample of problem '{pid}' has no output field '{output_field}' "
                                "(set --output-field)")
            text = rec[output_field] or ""
            ex = _blank_is_none(extract_answer(text, expect_think=expect_think))
            alt = ex if ex.closed else _blank_is_none(
                extract_answer(text, grade_unclosed=True, expect_think=expect_think))
            tokens = rec.get(tokens_field) if tokens_field else None
            prow.append({"id": pid, "sample": index, "output": text, "ex": ex, "alt": alt, "gold": gold,
                         "category": cat, "tokens": tokens if isinstance(tokens, (int, float)) else None})
        rows.append(prow)

    with Grader(workers=workers, timeout_s=timeout_s) as grader:
        pairs = [(r["gold"], r[key].answer) for prow in rows for r in prow for key in ("ex", "alt")]
        verdicts = iter(grader.grade_many(pairs))
        for prow in rows:
            for r in prow:
                r["v_ex"], r["v_alt"] = next(verdicts), next(verdicts)

        policies: dict[str, dict] = {}
        classes_by_policy: dict[str, list] = {}
        for policy in POLICIES:
            ex_key, v_key = ("ex", "v_ex") if policy == "count_wrong" else ("alt", "v_alt")
            answers = [[r[ex_key].answer for r in prow] for prow in rows]
            correct = [[r[v_key].correct for r in prow] for prow in rows]
            classes = build_classes_many(list(zip(answers, correct)), grader.equivalent_many)
            classes_by_policy[policy] = classes
            policies[policy] = summarize(
                classes,
                correct,
                [[r["ex"].closed for r in prow] for prow in rows],
                [[a is not None for a in arow] for arow in answers],
                cats,
            )
        grading = grader.stats.as_dict()

    main = policies[unclosed]
    sizes = [len(prow) for prow in rows]
    token_counts = [r["tokens"] for prow in rows for r in prow if r["tokens"] is not None]
    total_tokens = sum(token_counts)
    results: dict[str, Any] = {
        "problems": len(ids),
        # problems of the data that have no sample at all (an unfinished generation); not in any metric
        "problems_without_samples": 0 if problems is None else sum(1 for pid in problems if pid not in groups),
        "samples_per_problem": max(sizes),
        "samples_per_problem_min": min(sizes),
        "samples": sum(sizes),
        "majority_accuracy": main["majority_accuracy"],
        "mean_at_1": main["mean_at_1"],
        "maj_at_k": main["maj_at_k"],
        "maj_at_k_subsets": main["maj_at_k_subsets"],
        "pass_at_k": main["pass_at_k"],
        "reasoning_failure_rate": main["reasoning_failure_rate"],
        "no_answer_rate": main["no_answer_rate"],
        "ties": main["ties"],
        "per_category": main["per_category"],
        "unclosed_policy": unclosed,
        "policies": policies,
        "mean_output_tokens": total_tokens / len(token_counts) if token_counts else None,
        "output_tokens": total_tokens if token_counts else None,
        "generation_seconds": generation_seconds,
        "tokens_per_second": total_tokens / generation_seconds if token_counts and generation_seconds else None,
        "grading": {**grading, "seconds": round(time.monotonic() - started, 3), "timeout_s": timeout_s},
        "definitions": {
            "maj_at_k": "vote over each problem's first k samples (by sample index); ties go to the class seen first",
            "maj_at_k_subsets": "maj@k averaged over 100 seeded random orders of each problem's samples",
            "pass_at_k": "unbiased: mean over problems of 1 - C(n-c,k)/C(n,k)",
            "mean_at_1": "mean over problems of correct samples / samples",
        },
    }
    if meta:
        results["meta"] = dict(meta)

    if out_dir is not None:
        from llmjobs.jobs.eval.report import write_report

        classes = classes_by_policy[unclosed]
        sample_rows, problem_rows = [], []
        from llmjobs.jobs.eval.voting import vote

        for prow, cls in zip(rows, classes):
            member_of = {m: j for j, c in enumerate(cls) for m in c.members}
            for pos, r in enumerate(prow):
                ex, v = (r["ex"], r["v_ex"]) if unclosed == "count_wrong" else (r["alt"], r["v_alt"])
                row = {"id": r["id"], "sample": r["sample"], "output": r["output"], "answer": ex.answer,
                       "correct": v.correct, "closed": r["ex"].closed, "source": ex.source,
                       "grading": v.status if ex.answer is not None else "no_answer",
                       "class": member_of.get(pos), "gold": r["gold"], "category": r["category"],
                       "tokens": r["tokens"]}
                if not r["ex"].closed:
                    row["reasoning_answer"] = r["alt"].answer
                    row["reasoning_correct"] = r["v_alt"].correct
                sample_rows.append(row)
            v = vote(cls)
            problem_rows.append({
                "id": prow[0]["id"], "gold": prow[0]["gold"], "category": prow[0]["category"],
                "samples": len(prow),
                "correct_samples": sum((r["v_ex"] if unclosed == "count_wrong" else r["v_alt"]).correct for r in prow),
                "majority_answer": v.answer, "majority_correct": v.correct, "votes": v.votes, "tie": v.tie,
                "tied_classes": v.tied,
                "classes": [{"answer": c.representative, "votes": len(c.members), "correct": c.correct}
                            for c in cls],
            })
        write_report(results, sample_rows, problem_rows, Path(out_dir), plot=plot)
    return results


def _blank_is_none(ex: Extraction) -> Extraction:
    # "\boxed{}" or "最終的な回答：。" is no answer: it must neither vote nor count as answered.
    if ex.answer is not None and not clean_answer(ex.answer):
        return Extraction(None, ex.closed, None)
    return ex


def _id_order(pid: str) -> tuple[int, int | str]:
    # Row-index ids sort numerically ("2" before "10"); other ids by text.
    return (0, int(pid)) if pid.isdigit() else (1, pid)


def read_jsonl(path: Path) -> Iterable[dict]:
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise UserError(f"{path}:{lineno}: each line must be a JSON object")
            yield rec


def grade_file(
    path: str | Path,
    out_dir: str | Path | None = None,
    *,
    data: str | Path | None = None,
    preset: str | None = None,
    **kwargs: Any,
) -> dict:
    """Re-grade a samples JSONL (from llmjobs or any other tool; lines with one id are one problem's samples).
    Writes the report next to the file (``<name>.graded/``) unless ``out_dir`` is given. With ``data``
    (and optionally a ``preset``) the gold answers and categories come from that data file instead."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: samples file not found")
    problems = None
    if data is not None:
        from llmjobs.jobs.eval.data import load_problems

        problems = {p.id: p for p in load_problems(data, preset=preset)}
    out = Path(out_dir) if out_dir is not None else path.with_name(path.stem + ".graded")
    return grade_samples(read_jsonl(path), problems, out, where=str(path), **kwargs)
