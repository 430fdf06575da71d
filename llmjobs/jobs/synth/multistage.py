"""The step kind ``synth.multistage``: a chain of prompts per problem (problem -> hint -> procedure -> code ->
execution -> verdict), one chat dataset per stage, and every item's lineage.

Stages run in the order declared. Each stage's template sees ``{problem}``, ``{answer}``, ``{id}``,
``{category}`` and the outputs of earlier stages as ``{stages.NAME}`` (a name that is not an earlier stage is
refused at submit). Placeholders are replaced literally, so LaTeX braces need no escaping. Stage kinds:

- ``generate`` (default): the model answers the filled template (one sample, through the evaluation's
  engines: one engine in the process, or the Ray pool over every node of the step);
- ``code``: the same, then the program is taken from the output (the last fenced block, ``python`` blocks
  first) and run in the sandbox (``synth.sandbox``); ``{stages.NAME}`` of a code stage is its program, and
  ``{stages.NAME.stdout}`` what it printed;
- ``verify``: no model: the last non-empty line the named code stage printed (``source``, default the last
  code stage before it) is graded against the problem's answer by the grader (math-verify, hard timeout).

A stage may be ``scripted``: a fixed text (same placeholders; or a mapping problem id -> text) used as its
output instead of the model's. That is for stages whose output is known (a fixed instruction) and for
exercising execution and verification deterministically.

Resume: each stage's generations resume per item as evaluation's do (``stages/NAME/generations``), each
execution and verdict is appended to ``stages/NAME/results.jsonl`` as it finishes and never redone.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmjobs.jobs.context import StepContext
from llmjobs.jobs.eval.step import EvalParams

log = logging.getLogger("llmjobs.synth.multistage")

_PLACEHOLDER = re.compile(r"\{(problem|answer|id|category|stages\.([A-Za-z_][A-Za-z0-9_-]*)(\.stdout)?)\}")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


class Stage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["generate", "code", "verify"] = "generate"
    template: str | None = Field(None, description="the prompt (generate, code)")
    scripted: str | dict[str, str] | None = Field(
        None, description="a fixed output instead of the model's: text with the same placeholders, or id -> text")
    source: str | None = Field(None, description="verify: the code stage whose output is graded (default: the last)")
    system: str | None = None
    temperature: float | None = Field(None, ge=0.0)
    max_tokens: int | None = Field(None, ge=1)
    adapter: str | None = Field(None, description="a LoRA adapter over the model for this stage only (default: the "
                                                  "step's adapter); chains one adapter per stage")


class SandboxParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wall_s: float = Field(10.0, gt=0)
    cpu_s: int = Field(10, ge=1)
    memory_mb: int = Field(1024, ge=64)
    nproc: int = Field(32, ge=1)
    file_mb: int = Field(16, ge=1)
    output_bytes: int = Field(65536, ge=1)
    workers: int | None = Field(None, ge=1, description="warm sandbox workers (default: the CPUs of the job)")
    isolation: Literal["auto", "bwrap", "rlimits"] = "auto"


class MultistageParams(EvalParams):
    """The evaluation's model, data and engine params (``samples`` is 1 and ``template`` unused: each stage
    has its own), the stages, the sandbox's limits and which items the datasets keep."""

    stages: list[Stage] = Field(..., min_length=1)
    samples: int = Field(1, ge=1, le=1, description="one output per stage and item")
    sandbox: SandboxParams = Field(default_factory=SandboxParams)
    keep: Literal["verified", "all"] = Field("verified", description="which items the per-stage datasets hold "
                                             "(verified: those every verify stage passed; all when none)")

    @model_validator(mode="after")
    def _check_stages(self) -> MultistageParams:
        seen: dict[str, Stage] = {}
        for stage in self.stages:
            where = f"stage '{stage.name}'"
            if not _NAME.match(stage.name):
                raise ValueError(f"{where}: a stage name is letters, digits, '_' and '-', starting with a letter")
            if stage.name in seen:
                raise ValueError(f"{where}: declared twice")
            if stage.kind == "verify":
                code_stages = [s.name for s in seen.values() if s.kind == "code"]
                if stage.source is not None and stage.source not in code_stages:
                    raise ValueError(f"{where}: source '{stage.source}' is not an earlier code stage; "
                                     f"earlier code stages: {', '.join(code_stages) or 'none'}")
                if not code_stages:
                    raise ValueError(f"{where}: a verify stage needs an earlier code stage")
            elif stage.template is None and stage.scripted is None:
                raise ValueError(f"{where}: needs a template (or a scripted output)")
            texts = [stage.template or ""]
            texts += list(stage.scripted.values()) if isinstance(stage.scripted, dict) else [stage.scripted or ""]
            for text in texts:
                for m in _PLACEHOLDER.finditer(text):
                    ref, stdout = m.group(2), m.group(3)
                    if ref is None:
                        continue
                    if ref not in seen:
                        known = ", ".join(seen) or "none (this is the first stage)"
                        raise ValueError(f"{where}: template names unknown stage '{ref}' in "
                                         f"'{m.group(0)}'; earlier stages: {known}")
                    if stdout and seen[ref].kind != "code":
                        raise ValueError(f"{where}: '{m.group(0)}': stage '{ref}' is not a code stage")
            seen[stage.name] = stage
        return self


def fill(text: str, values: dict[str, str]) -> str:
    """Every placeholder replaced in one pass (a stage's output containing ``{problem}`` stays as it is)."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)


_FENCE = re.compile(r"```([A-Za-z0-9_+-]*)[ \t]*\n(.*?)```", re.DOTALL)


def extract_code(text: str) -> str | None:
    """The last fenced ``python``/``py`` block of a model output, else its last fenced block of any language."""
    blocks = _FENCE.findall(text or "")
    if not blocks:
        return None
    python = [body for lang, body in blocks if lang.lower() in ("python", "py", "python3")]
    return (python or [body for _, body in blocks])[-1]


def final_line(stdout: str) -> str | None:
    lines = [x.strip() for x in (stdout or "").splitlines() if x.strip()]
    return lines[-1] if lines else None


def _read_results(path: Path) -> dict[str, dict]:
    found: dict[str, dict] = {}
    if path.exists():
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.endswith("\n"):
                    break
                try:
                    rec = json.loads(line)
                    found.setdefault(str(rec["id"]), rec)
                except (ValueError, KeyError):
                    continue
    return found


def _append(path: Path, rows: list[dict]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        f.flush()


class _Generator:
    """One engine for the stages that share an adapter (local), or the Ray pool (the caller holds the Ray
    cluster). A stage with its own adapter gets an engine of the model with that adapter; the previous engine
    is closed first, so one model is in memory at a time."""

    def __init__(self, p: MultistageParams, pool: str) -> None:
        from llmjobs.jobs.eval.step import engine_spec

        self.p, self.pool, self.base = p, pool, engine_spec(p)
        self.engine = None
        self.engine_adapter: str | None = None
        self.tokenizer = None

    def spec(self, stage: Stage):
        import dataclasses

        return dataclasses.replace(self.base, adapter=stage.adapter or self.p.adapter)

    def prompt(self, text: str, system: str | None) -> str:
        from llmjobs.jobs.eval.prompts import render_prompt

        if self.tokenizer is None:
            from llmjobs.jobs.eval.prompts import chat_tokenizer

            self.tokenizer = chat_tokenizer(self.p.model) or False
        return render_prompt(text, "{problem}", self.tokenizer or None, system)

    def generate(self, items: list[tuple[str, str]], out: Path, stage: Stage) -> dict[str, Any]:
        from llmjobs.jobs.eval.generate import GEN_DIR, Sampling, collect, generate

        p = self.p
        sampling = Sampling(samples=1, temperature=p.temperature if stage.temperature is None else stage.temperature,
                            top_p=p.top_p, max_tokens=stage.max_tokens or p.max_tokens, seed=p.seed)
        spec = self.spec(stage)
        if self.pool == "ray":
            generate(items, out, sampling, spec, pool="ray", chunk=p.chunk, cpu_actors=p.cpu_actors)
        else:
            if self.engine is not None and self.engine_adapter != spec.adapter:
                self.engine.close()
                self.engine = None
            if self.engine is None and items:
                self.engine, self.engine_adapter = spec.build(), spec.adapter
            generate(items, out, sampling, spec, pool="local", chunk=p.chunk, engine=self.engine)
        return {r["id"]: r for r in collect(out / GEN_DIR, [i for i, _ in items], 1)}

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()


def run(ctx: StepContext) -> dict[str, Any]:
    p = MultistageParams.model_validate(ctx.params)
    root = Path(ctx.output_dir)
    out = root / f"shard-{ctx.shard:05d}" if ctx.num_shards > 1 else root
    out.mkdir(parents=True, exist_ok=True)
    from llmjobs.jobs.eval.step import helper_rank, sampling_pool

    role = helper_rank(ctx, p, out)
    if role is not None:
        return role
    with sampling_pool(ctx, p, out) as pool:
        return _run(ctx, p, out, pool)


def _run(ctx: StepContext, p: MultistageParams, out: Path, pool: str) -> dict[str, Any]:
    from llmjobs.jobs.eval.data import load_problems

    problems = load_problems(p.data, fields=p.fields, preset=p.preset, limit=p.limit)[ctx.shard::ctx.num_shards]
    values: dict[str, dict[str, str]] = {
        pr.id: {"problem": pr.problem, "answer": pr.answer, "id": pr.id, "category": pr.category or ""}
        for pr in problems}
    lineage: dict[str, dict[str, Any]] = {pr.id: {"id": pr.id, "problem": pr.problem, "answer": pr.answer,
                                                  "stages": {}} for pr in problems}
    counts: dict[str, dict[str, int]] = {}
    gen = _Generator(p, pool)
    sandbox = None
    try:
        for stage in p.stages:
            sdir = out / "stages" / stage.name
            sdir.mkdir(parents=True, exist_ok=True)
            if stage.kind == "verify":
                counts[stage.name] = _verify(stage, p, problems, lineage, values, sdir)
                continue
            prompts = {pr.id: fill(stage.template or "", values[pr.id]) for pr in problems}
            if stage.scripted is not None:
                outputs = {pr.id: fill(_script(stage, pr.id), values[pr.id]) for pr in problems}
            else:
                items = [(pr.id, gen.prompt(prompts[pr.id], stage.system or p.system)) for pr in problems]
                outputs = {pid: rec["output"] for pid, rec in gen.generate(items, sdir, stage).items()}
            for pr in problems:
                lineage[pr.id]["stages"][stage.name] = {"prompt": prompts[pr.id], "output": outputs[pr.id],
                                                        "scripted": stage.scripted is not None}
                values[pr.id][f"stages.{stage.name}"] = outputs[pr.id]
            if stage.kind == "code":
                if sandbox is None:
                    sandbox = _sandbox(p)
                counts[stage.name] = _execute(stage, problems, lineage, values, sdir, sandbox)
            else:
                counts[stage.name] = {"outputs": len(problems)}
    finally:
        gen.close()
        if sandbox is not None:
            sandbox.close()
    return _write(p, out, problems, lineage, counts)


def _script(stage: Stage, pid: str) -> str:
    if isinstance(stage.scripted, dict):
        return stage.scripted.get(pid, stage.scripted.get("*", ""))
    return stage.scripted or ""


def _sandbox(p: MultistageParams):
    import os

    from llmjobs.jobs.synth.sandbox import Limits, Sandbox

    s = p.sandbox
    limits = Limits(wall_s=s.wall_s, cpu_s=s.cpu_s, memory_mb=s.memory_mb, nproc=s.nproc, file_mb=s.file_mb,
                    output_bytes=s.output_bytes)
    workers = s.workers or max(1, min(len(os.sched_getaffinity(0)), 16))
    return Sandbox(limits, workers=workers, isolation=s.isolation)


def _execute(stage, problems, lineage, values, sdir: Path, sandbox) -> dict[str, int]:
    """Run each item's program once (results on disk are kept), record stdout/stderr/exit in the lineage."""
    results_path = sdir / "results.jsonl"
    done = _read_results(results_path)
    todo = [pr for pr in problems if pr.id not in done]
    codes = {pr.id: extract_code(lineage[pr.id]["stages"][stage.name]["output"]) for pr in problems}
    runnable = [pr for pr in todo if codes[pr.id] is not None]
    # in slices, so a killed step keeps what it ran
    for start in range(0, len(runnable), 64):
        part = runnable[start:start + 64]
        results = sandbox.run_many([codes[pr.id] for pr in part])
        _append(results_path, [{"id": pr.id, **r.as_dict()} for pr, r in zip(part, results)])
    _append(results_path, [{"id": pr.id, "exit": None, "stdout": "", "stderr": "", "status": "no_code",
                            "seconds": 0.0} for pr in todo if codes[pr.id] is None])
    done = _read_results(results_path)
    counts: dict[str, int] = {}
    for pr in problems:
        r = done[pr.id]
        entry = lineage[pr.id]["stages"][stage.name]
        entry.update(code=codes[pr.id], stdout=r["stdout"], stderr=r["stderr"], exit=r["exit"],
                     status=r["status"])
        values[pr.id][f"stages.{stage.name}"] = codes[pr.id] or ""
        values[pr.id][f"stages.{stage.name}.stdout"] = r["stdout"]
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return counts


def _verify(stage, p, problems, lineage, values, sdir: Path) -> dict[str, int]:
    from llmjobs.jobs.eval.answers import extract_answer
    from llmjobs.jobs.eval.grading import Grader

    source = stage.source or [s.name for s in p.stages[:p.stages.index(stage)] if s.kind == "code"][-1]
    results_path = sdir / "results.jsonl"
    done = _read_results(results_path)
    todo = [pr for pr in problems if pr.id not in done]
    if todo:
        answers = {}
        for pr in todo:
            ran = lineage[pr.id]["stages"][source]
            stdout = ran.get("stdout") or ""
            boxed = extract_answer(stdout).answer if "\\boxed" in stdout else None
            answers[pr.id] = None if ran.get("status") != "ok" else (boxed or final_line(stdout))
        with Grader(workers=p.grade_workers, timeout_s=p.grade_timeout) as grader:
            verdicts = grader.grade_many([(pr.answer, answers[pr.id]) for pr in todo])
        _append(results_path, [{"id": pr.id, "source": source, "executed_answer": answers[pr.id],
                                "correct": v.correct, "grading": v.status} for pr, v in zip(todo, verdicts)])
        done = _read_results(results_path)
    counts = {"verified": 0, "rejected": 0}
    for pr in problems:
        r = done[pr.id]
        lineage[pr.id]["stages"][stage.name] = {"source": r["source"], "executed_answer": r["executed_answer"],
                                                "expected": pr.answer, "correct": r["correct"],
                                                "grading": r["grading"]}
        counts["verified" if r["correct"] else "rejected"] += 1
    return counts


def _write(p: MultistageParams, out: Path, problems, lineage, counts) -> dict[str, Any]:
    verify_stages = [s.name for s in p.stages if s.kind == "verify"]
    for item in lineage.values():
        item["verified"] = all(item["stages"][v]["correct"] for v in verify_stages) if verify_stages else None
    kept = [pr.id for pr in problems if p.keep == "all" or lineage[pr.id]["verified"] is not False]
    data_dir = out / "datasets"
    data_dir.mkdir(exist_ok=True)
    for stage in p.stages:
        if stage.kind == "verify":
            continue
        path = data_dir / f"{stage.name}.jsonl"
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for pid in kept:
                entry = lineage[pid]["stages"][stage.name]
                messages = [{"role": "user", "content": entry["prompt"]},
                            {"role": "assistant", "content": entry["output"]}]
                if stage.system or p.system:
                    messages.insert(0, {"role": "system", "content": stage.system or p.system})
                f.write(json.dumps({"id": pid, "stage": stage.name, "messages": messages}, ensure_ascii=False) + "\n")
        tmp.replace(path)
    tmp = out / "lineage.jsonl.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(lineage[pr.id], ensure_ascii=False) + "\n" for pr in problems)
    tmp.replace(out / "lineage.jsonl")
    # each verify stage's share of all problems whose executed answer was right: the pipeline's accuracy when
    # it runs as an evaluation (a program that failed or printed nothing counts as wrong)
    accuracy = {v: counts[v]["verified"] / len(problems) if problems else 0.0 for v in verify_stages}
    report = {"problems": len(problems), "kept": len(kept), "keep": p.keep, "stages": counts, "accuracy": accuracy,
              "datasets": {s.name: str(data_dir / f"{s.name}.jsonl") for s in p.stages if s.kind != "verify"}}
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    return {"problems": len(problems), "kept": len(kept), "stages": counts, "accuracy": accuracy}
