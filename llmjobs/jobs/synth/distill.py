"""The step kind ``synth.distill``: a teacher samples N answers per problem, a filter keeps the good ones, and
what is kept is written as an SFT dataset in chat ``messages`` format with a report.

Sampling is the evaluation's: the same engines, the same local or Ray pool over every node of the step, the
same per-(problem, sample) files, so a killed or requeued step generates only the pairs not yet on disk.
Extraction and grading are the evaluation's too (``answers.extract_answer``, the grader's pool with its hard
per-item timeout, equivalence classes from ``voting``). The filters are in ``synth.filters``.

Shards: with ``shards: K`` in the recipe, shard k takes every K-th problem (k, k+K, ...) and writes its own
``shard-0000k/`` under the step's output (each shard is one job and resumes on its own).

This module imports only pydantic at load time: the parameter model is checked at submit.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from llmjobs.jobs.context import StepContext
from llmjobs.jobs.eval.step import EvalParams

log = logging.getLogger("llmjobs.synth.distill")


class DistillParams(EvalParams):
    """The evaluation's sampling params (model, data, template, samples, temperature, engine, pool, ...) and
    the filter's."""

    filter: Literal["ground_truth", "majority"] = Field(
        "ground_truth", description="ground_truth: samples graded equal to the known answer; majority: problems "
        "whose largest equivalence class holds >= theta of the samples")
    theta: float = Field(0.8, description="majority: the share of the N samples the largest class needs, in (0, 1]")
    keep_per_problem: int | None = Field(None, ge=1, description="most samples kept per problem (first by index)")
    drop_unclosed: bool = Field(True, description="drop samples whose reasoning never closes </think>")
    max_sample_tokens: int | None = Field(None, ge=1, description="drop samples with more generated tokens")
    answer_format: str = Field("\\boxed{{answer}}", description="the final answer after </think>; {answer} is "
                               "replaced by the label (e.g. '最終的な回答：{answer}')")
    samples: int = Field(16, ge=1, description="samples per problem (N)")
    check_steps: bool = Field(
        False, description="also drop samples whose displayed steps do not hold: every line of the reasoning that "
        "is a display $...$ alone on its line (a leading '= ' removed) must equal the label when it has no '=', "
        "and when it is an equation L = R both sides must be equal once the unknown is replaced by the label; "
        "a sample with no such line is dropped too. For chain-of-equalities solutions such as synth.sympy's "
        "arithmetic, fraction, linear-expression and linear-equation families")
    step_unknown: str = Field("x", min_length=1, description="check_steps: the unknown of equation lines, "
                              "replaced by the label")

    @model_validator(mode="after")
    def _check(self) -> DistillParams:
        if not 0.0 < self.theta <= 1.0:
            raise ValueError(f"theta must be in (0, 1] (a share of the samples), not {self.theta}")
        if "{answer}" not in self.answer_format:
            raise ValueError("answer_format must contain the placeholder {answer}")
        return self


def _problems(p: DistillParams, ctx: StepContext):
    from llmjobs.jobs.eval.data import FieldMap, load_problems

    fields = p.fields
    if fields is None and p.preset is None and p.filter == "majority":
        fields = FieldMap(answer=None)  # unlabelled problems: the majority is the label
    problems = load_problems(p.data, fields=fields, preset=p.preset, limit=p.limit)
    mine = problems[ctx.shard::ctx.num_shards]
    if p.filter == "ground_truth":
        for pr in mine:
            if not pr.answer:
                from llmjobs.errors import UserError

                raise UserError(f"{p.data}: problem '{pr.id}' has no answer; the ground_truth filter needs one "
                                "(map fields.answer, or use filter: majority)")
    return mine


def _reasoning(text: str) -> str:
    """The reasoning of an output: what precedes its last ``</think>`` (without the opening ``<think>``);
    an output without think tags is all reasoning."""
    head, sep, _ = text.rpartition("</think>")
    body = head if sep else text
    _, opened, after = body.partition("<think>")
    return (after if opened else body).strip()


def run(ctx: StepContext) -> dict[str, Any]:
    p = DistillParams.model_validate(ctx.params)
    root = Path(ctx.output_dir)
    out = root / f"shard-{ctx.shard:05d}" if ctx.num_shards > 1 else root
    out.mkdir(parents=True, exist_ok=True)
    from llmjobs.jobs.eval.step import helper_rank, sample

    role = helper_rank(ctx, p, out)
    if role is not None:
        return role

    from llmjobs.jobs.eval.generate import GEN_DIR, collect
    from llmjobs.jobs.eval.prompts import chat_tokenizer, fill, render_prompt

    problems = _problems(p, ctx)
    tokenizer = chat_tokenizer(p.model)
    items = [(pr.id, render_prompt(pr, p.template, tokenizer, p.system)) for pr in problems]
    stats = sample(ctx, p, items, out)
    records = collect(out / GEN_DIR, [i for i, _ in items], p.samples)

    decisions, samples, grading = judge(records, problems, p)
    expect_think = p.expect_think if p.expect_think is not None else p.template == "think_boxed"

    dataset = out / "dataset.jsonl"
    tmp = dataset.with_name(dataset.name + ".tmp")
    kept_tokens = kept = 0
    by_key = {(str(r["id"]), int(r["sample"])): r for r in records}
    with open(tmp, "w", encoding="utf-8") as f:
        for pr in problems:
            d = decisions[pr.id]
            user = fill(pr, p.template)
            for k in d.kept:
                rec = by_key[(pr.id, k)]
                final = p.answer_format.replace("{answer}", d.label or "")
                messages = [{"role": "user", "content": user},
                            {"role": "assistant", "content": f"<think>\n{_reasoning(rec['output'])}\n</think>\n\n{final}"}]
                if p.system:
                    messages.insert(0, {"role": "system", "content": p.system})
                row = {"id": pr.id, "sample": k, "messages": messages, "answer": d.label, "filter": p.filter,
                       "agreement": round(d.agreement, 4), "tokens": rec.get("tokens")}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                kept += 1
                kept_tokens += rec.get("tokens") or 0
    tmp.replace(dataset)

    report = _report(p, problems, decisions, samples, stats, kept, kept_tokens, expect_think)
    report["grading"] = grading
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    (out / "report.md").write_text(_markdown(report))
    _write_lineage(out / "samples.jsonl", problems, decisions, samples)
    return {k: report[k] for k in ("problems", "problems_kept", "samples", "samples_kept")} | {
        "generated_samples": stats["generated_samples"], "dataset": str(dataset)}


def judge(records: list[dict], problems, p: DistillParams):
    """Extract every sample's answer, grade it (ground_truth) or class it (majority), and decide per problem.
    Returns ``(decisions by id, samples by id, grading statistics)``."""
    from llmjobs.jobs.eval.answers import clean_answer, extract_answer
    from llmjobs.jobs.eval.grading import Grader
    from llmjobs.jobs.eval.voting import build_classes_many
    from llmjobs.jobs.synth.filters import Rules, Sample, decide

    expect_think = p.expect_think if p.expect_think is not None else p.template == "think_boxed"
    # an unclosed sample's answer (from its reasoning) counts only when asked for, or when such samples may be kept
    grade_unclosed = p.unclosed == "grade_reasoning" or not p.drop_unclosed
    by_id: dict[str, list[dict]] = {}
    for rec in records:
        by_id.setdefault(str(rec["id"]), []).append(rec)
    extracted: dict[str, list[tuple[int, str | None, bool, int | None]]] = {}
    for pr in problems:
        rows = []
        for rec in sorted(by_id.get(pr.id, []), key=lambda r: int(r["sample"])):
            ex = extract_answer(rec.get("output") or "", grade_unclosed=grade_unclosed, expect_think=expect_think)
            answer = ex.answer if ex.answer is not None and clean_answer(ex.answer) else None
            rows.append((int(rec["sample"]), answer, ex.closed, rec.get("tokens")))
        extracted[pr.id] = rows

    rules = Rules(filter=p.filter, theta=p.theta, keep_per_problem=p.keep_per_problem,
                  drop_unclosed=p.drop_unclosed, max_sample_tokens=p.max_sample_tokens, check_steps=p.check_steps)
    samples: dict[str, list[Sample]] = {}
    with Grader(workers=p.grade_workers, timeout_s=p.grade_timeout) as grader:
        if p.filter == "ground_truth":
            pairs = [(pr.answer, a) for pr in problems for _, a, _, _ in extracted[pr.id]]
            verdicts = iter(grader.grade_many(pairs))
            for pr in problems:
                samples[pr.id] = [Sample(i, a, next(verdicts).correct, closed, tokens)
                                  for i, a, closed, tokens in extracted[pr.id]]
        else:
            asks = [([a for _, a, _, _ in extracted[pr.id]], [False] * len(extracted[pr.id])) for pr in problems]
            classes = build_classes_many(asks, grader.equivalent_many)
            for pr, cls in zip(problems, classes):
                member_of = {m: j for j, c in enumerate(cls) for m in c.members}
                samples[pr.id] = [Sample(i, a, False, closed, tokens, member_of.get(pos))
                                  for pos, (i, a, closed, tokens) in enumerate(extracted[pr.id])]
        if p.check_steps:
            samples = _check_steps(samples, by_id, problems, rules, p.step_unknown, grader)
        grading = grader.stats.as_dict()
    decisions = {pr.id: decide(samples[pr.id], pr.answer or None, rules) for pr in problems}
    return decisions, samples, grading


def _check_steps(samples, by_id, problems, rules, unknown: str, grader):
    """The samples with ``step_fault`` set where their displayed steps fail (``synth.step_check``). Only the
    samples the filter proper passes are checked, against its label; every step pair of every such sample is
    graded in one call, so the pool works on them all at once."""
    from dataclasses import replace

    from llmjobs.jobs.synth.filters import NO_STEPS, WRONG_STEP, candidates
    from llmjobs.jobs.synth.step_check import step_pairs

    asks: list[tuple[str, Any, list[tuple[str, str]]]] = []  # (problem id, sample, its step pairs)
    for pr in problems:
        passed, label = candidates(samples[pr.id], pr.answer or None, rules)
        outputs = {int(r["sample"]): r.get("output") or "" for r in by_id.get(pr.id, [])}
        asks += [(pr.id, s, step_pairs(_reasoning(outputs[s.index]), label or "", unknown)) for s in passed]
    verdicts = iter(grader.grade_many([pair for _, _, pairs in asks for pair in pairs]))
    checked: dict[tuple[str, int], Any] = {}
    for pid, s, pairs in asks:
        failed = [pair for pair in pairs if not next(verdicts).correct]
        if not pairs:
            s = replace(s, step_fault=NO_STEPS)
        elif failed:
            s = replace(s, step_fault=WRONG_STEP, failed_step=failed[0])
        checked[(pid, s.index)] = s
    return {pid: [checked.get((pid, s.index), s) for s in v] for pid, v in samples.items()}


def _report(p, problems, decisions, samples, stats, kept, kept_tokens, expect_think) -> dict[str, Any]:
    from collections import Counter

    from llmjobs.jobs.synth.filters import histogram

    sample_reasons: Counter[str] = Counter()
    problem_reasons: Counter[str] = Counter()
    for pr in problems:
        d = decisions[pr.id]
        sample_reasons.update(d.dropped.values())
        if d.problem_reason:
            problem_reasons[d.problem_reason] += 1
    total = sum(len(v) for v in samples.values())
    tokens = [s.tokens for v in samples.values() for s in v if s.tokens is not None]
    agreement = [decisions[pr.id].agreement for pr in problems]
    labelled = [pr for pr in problems if pr.answer and decisions[pr.id].label is not None]
    report: dict[str, Any] = {
        "filter": p.filter,
        "theta": p.theta if p.filter == "majority" else None,
        "problems": len(problems),
        "problems_kept": sum(1 for pr in problems if decisions[pr.id].kept),
        "problems_dropped": dict(problem_reasons),
        "samples": total,
        "samples_kept": kept,
        "samples_dropped": dict(sample_reasons),
        "pass_rate_histogram": histogram(agreement),
        "pass_rate": ("share of a problem's samples graded equal to its answer" if p.filter == "ground_truth"
                      else "share of a problem's samples in its largest equivalence class"),
        "tokens": {"generated": sum(tokens), "mean_per_sample": sum(tokens) / len(tokens) if tokens else None,
                   "kept": kept_tokens},
        "generation": {k: stats.get(k) for k in ("generated_samples", "generated_tokens", "already_on_disk",
                                                 "total_seconds", "pool")},
        "rules": {"keep_per_problem": p.keep_per_problem, "drop_unclosed": p.drop_unclosed,
                  "max_sample_tokens": p.max_sample_tokens, "expect_think": expect_think,
                  "answer_format": p.answer_format, "check_steps": p.check_steps,
                  "step_unknown": p.step_unknown if p.check_steps else None},
        "model": p.model, "data": p.data, "template": p.template, "samples_per_problem": p.samples,
    }
    if p.filter == "majority" and labelled:
        # only when the data carries answers: how often the majority label is the known answer (exact text)
        from llmjobs.jobs.eval.answers import clean_answer

        report["majority_label_equals_answer_text"] = sum(
            clean_answer(pr.answer) == clean_answer(decisions[pr.id].label or "") for pr in labelled) / len(labelled)
    return report


def _write_lineage(path: Path, problems, decisions, samples) -> None:
    """Every sample's verdict: answer, class, kept or why not (the dataset holds the kept ones' text)."""
    with open(path, "w", encoding="utf-8") as f:
        for pr in problems:
            d = decisions[pr.id]
            f.writelines(json.dumps({"id": pr.id, "sample": s.index, "answer": s.answer, "correct": s.correct,
                                    "class": s.cls, "closed": s.closed, "tokens": s.tokens,
                                    "kept": s.index in d.kept, "reason": d.dropped.get(s.index),
                                    "failed_step": s.failed_step},
                                   ensure_ascii=False) + "\n" for s in samples[pr.id])


def _markdown(r: dict[str, Any]) -> str:
    lines = [f"# synth.distill: {r['filter']}" + (f" (theta {r['theta']})" if r["theta"] is not None else ""), "",
             f"- problems: {r['problems']}, kept {r['problems_kept']}",
             f"- samples: {r['samples']}, kept {r['samples_kept']}",
             f"- tokens generated: {r['tokens']['generated']}, kept: {r['tokens']['kept']}",
             "- displayed steps checked (check_steps): " + (
                 f"yes, unknown `{r['rules']['step_unknown']}`" if r["rules"]["check_steps"] else "no"), "",
             "## Dropped", "", "| level | reason | count |", "| --- | --- | ---: |"]
    lines += [f"| problem | {k} | {v} |" for k, v in sorted(r["problems_dropped"].items())]
    lines += [f"| sample | {k} | {v} |" for k, v in sorted(r["samples_dropped"].items())]
    lines += ["", f"## Pass rate ({r['pass_rate']})", "", "| from | to | problems |", "| ---: | ---: | ---: |"]
    lines += [f"| {b['from']:.1f} | {b['to']:.1f} | {b['problems']} |" for b in r["pass_rate_histogram"]]
    return "\n".join(lines) + "\n"
