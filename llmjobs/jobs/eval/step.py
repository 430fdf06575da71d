"""The step kind ``eval.self_consistency``: N samples per problem, then grading, voting, metrics and report.

Generation resumes: a re-run (``llmjobs resume``, a requeue after a timeout) generates only the
(problem, sample) pairs not yet on disk, then grades everything. On a multi-node step every rank runs this
function: rank 0 starts the Ray head and drives, the other ranks join as Ray workers and wait.

This module imports only pydantic at load time: the parameter model is checked at submit, on the login node.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmjobs.errors import UserError
from llmjobs.jobs.context import StepContext
from llmjobs.jobs.eval.data import FieldMap, check_data

log = logging.getLogger("llmjobs.eval")


class EvalParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., description="model directory (or hub name already in the local cache)")
    adapter: str | None = Field(None, description="LoRA adapter directory")
    data: str = Field(..., description="JSONL, JSON, TSV or a datasets directory")
    preset: str | None = Field(None, description="data preset: mgsm_ja, math500, gsm8k")
    fields: FieldMap | None = Field(None, description="field mapping, overrides the preset's")
    limit: int | None = Field(None, ge=1, description="only the first LIMIT problems")
    template: str = Field("think_boxed", description="think_boxed, ja_instruction, or a string with {problem}")
    system: str | None = None
    samples: int = Field(16, ge=1, description="samples per problem (N)")
    temperature: float = Field(0.6, ge=0.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(4096, ge=1, description="generated tokens per sample; always passed to the engine")
    seed: int = 0
    engine: Literal["vllm", "hf", "auto"] = "auto"
    tensor_parallel: int = Field(1, ge=1, description="GPUs per engine")
    max_model_len: int | None = Field(None, ge=1)
    engine_options: dict[str, Any] = Field(default_factory=dict,
                                           description="extra engine arguments, e.g. llm_options for vllm.LLM")
    pool: Literal["auto", "local", "ray"] = Field(
        "auto", description="auto: Ray when the step has several nodes or several engines fit on the node")
    cpu_actors: int | None = Field(None, ge=1, description="engines per CPU-only Ray cluster (default: one per core)")
    ray_node_cpus: int | None = Field(None, ge=1, description="CPUs each Ray node offers (default: all it has)")
    chunk: int | None = Field(None, ge=1, description="problems handed to an engine at a time")
    unclosed: Literal["count_wrong", "grade_reasoning"] = "count_wrong"
    expect_think: bool | None = Field(None, description="every output must close </think> (default: only when the "
                                      "model's chat template opens <think> in the prompt)")
    grade_workers: int | None = Field(None, ge=1)
    grade_timeout: float = Field(5.0, gt=0)

    @model_validator(mode="after")
    def _check_data(self) -> EvalParams:
        """The data file and field mapping are checked at submit, unless ``data`` is an upstream step's output
        (``${steps.X.output}``: it does not exist yet)."""
        if "${" in self.data:
            return self
        try:
            check_data(self.data, self.fields, self.preset)
        except UserError as e:
            raise ValueError(f"data/fields/preset: {e}") from None
        return self


def _gpus_here() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0


def pool_for(p: EvalParams, ctx: StepContext) -> str:
    """Where generation runs: one local engine, or a Ray pool over the step's nodes (or a node's GPUs)."""
    if p.pool != "auto":
        return p.pool
    if ctx.world_size > 1:
        return "ray"
    return "ray" if _gpus_here() // p.tensor_parallel > 1 else "local"


def engine_spec(p: EvalParams):
    from llmjobs.jobs.eval.generate import EngineSpec

    options = dict(p.engine_options)
    if p.max_model_len:
        options.setdefault("max_model_len", p.max_model_len)
    options.setdefault("seed", p.seed)
    return EngineSpec(engine=p.engine, model=p.model, adapter=p.adapter, tensor_parallel=p.tensor_parallel,
                      options=options)


def _prompts(p: EvalParams):
    from llmjobs.jobs.eval.data import load_problems
    from llmjobs.jobs.eval.prompts import chat_tokenizer, render_prompt

    problems = load_problems(p.data, fields=p.fields, preset=p.preset, limit=p.limit)
    tokenizer = chat_tokenizer(p.model)
    items = [(pr.id, render_prompt(pr, p.template, tokenizer, p.system)) for pr in problems]
    return problems, items


def job_tag(ctx: StepContext) -> str:
    """Names this job's Ray rendezvous files, so a resumed step's ranks never read a dead head's address."""
    job = None
    if "SUBMITIT_EXECUTOR" in os.environ:
        try:
            import submitit

            job = submitit.JobEnvironment().job_id  # the same on every rank of one job
        except Exception:  # noqa: BLE001 - fall back to the scheduler's variables
            job = None
    job = job or os.environ.get("SLURM_JOB_ID") or os.environ.get("PBS_JOBID")
    tag = f"job-{job}" if job else f"attempt-{ctx.attempt}"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in tag)


def _generation_seconds(out: Path, stats: dict[str, Any]) -> float:
    """Wall time of generation over every run of this step (a resumed step adds up its runs)."""
    path = out / "generation-runs.jsonl"
    with open(path, "a") as f:
        f.write(json.dumps(stats) + "\n")
    total = 0.0
    for line in path.read_text().splitlines():
        try:
            total += float(json.loads(line)["seconds"])
        except (ValueError, KeyError):
            continue
    return total


def helper_rank(ctx: StepContext, p: EvalParams, out: Path) -> dict[str, Any] | None:
    """What a rank other than the head does on a multi-node step (join the Ray cluster until the head is done,
    or idle under pool=local); None on the head. Shared by every kind that samples with this machinery."""
    if ctx.is_head:
        return None
    if pool_for(p, ctx) == "ray":
        from llmjobs.jobs.eval.raycluster import RayCluster

        with RayCluster(out / ".ray" / job_tag(ctx), ctx.rank, ctx.world_size, num_cpus=p.ray_node_cpus) as cluster:
            cluster.wait()
        return {"role": "ray worker", "rank": ctx.rank}
    log.warning("pool=local on a %d-node step: only rank 0 generates; rank %d idles", ctx.world_size, ctx.rank)
    return {"role": "idle", "rank": ctx.rank}


@contextlib.contextmanager
def sampling_pool(ctx: StepContext, p: EvalParams, out: Path) -> Iterator[str]:
    """On the head: the pool to generate with (``pool_for``), inside the step's Ray cluster where it is "ray"."""
    pool = pool_for(p, ctx)
    if pool != "ray":
        yield pool
        return
    from llmjobs.jobs.eval.raycluster import RayCluster

    with RayCluster(out / ".ray" / job_tag(ctx), ctx.rank, ctx.world_size, num_cpus=p.ray_node_cpus):
        yield pool


def sample(ctx: StepContext, p: EvalParams, items: list[tuple[str, str]], out: Path) -> dict[str, Any]:
    """On the head: generate what is missing of ``p.samples`` samples per ``(id, prompt)`` into
    ``out/generations`` (one local engine, or a Ray pool over every node of the step); returns the statistics
    with ``seconds`` = generation wall time summed over every run of this step."""
    from llmjobs.jobs.eval.generate import Sampling, generate

    sampling = Sampling(samples=p.samples, temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens,
                        seed=p.seed)
    started = time.time()
    with sampling_pool(ctx, p, out) as pool:
        stats = generate(items, out, sampling, engine_spec(p), pool=pool, chunk=p.chunk, cpu_actors=p.cpu_actors)
    stats.update(pool=pool, nodes=ctx.world_size, started=started)
    stats["total_seconds"] = _generation_seconds(out, stats)
    return stats


def run(ctx: StepContext) -> dict[str, Any]:
    p = EvalParams.model_validate(ctx.params)
    out = Path(ctx.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if ctx.num_shards > 1:
        raise ValueError("eval.self_consistency runs as one shard; spread it with resources.nodes and "
                         "gpus_per_node instead of shards")
    role = helper_rank(ctx, p, out)
    if role is not None:
        return role

    from llmjobs.jobs.eval.generate import GEN_DIR, collect

    problems, items = _prompts(p)
    stats = sample(ctx, p, items, out)
    pool = stats["pool"]
    seconds = stats["total_seconds"]

    from llmjobs.jobs.eval.score import grade_samples

    records = collect(out / GEN_DIR, [i for i, _ in items], p.samples)
    # Decided from the model's chat template: only a prompt that leaves <think> open makes a missing </think> a
    # reasoning failure; otherwise each output decides for itself (one that opens <think> must close it).
    from llmjobs.jobs.eval.prompts import opens_think

    expect_think = p.expect_think if p.expect_think is not None else any(opens_think(t) for _, t in items)
    meta = {"model": p.model, "adapter": p.adapter, "data": p.data, "template": p.template,
            "engine": p.engine, "pool": pool, "nodes": ctx.world_size, "sampling": stats["sampling"],
            "generation": {k: stats[k] for k in ("generated_samples", "generated_tokens", "already_on_disk",
                                                 "engine_calls", "actors")}}
    results = grade_samples(records, {pr.id: pr for pr in problems}, out, unclosed=p.unclosed,
                            expect_think=expect_think, workers=p.grade_workers, timeout_s=p.grade_timeout,
                            generation_seconds=seconds, meta=meta)
    keys = ("problems", "samples_per_problem", "majority_accuracy", "mean_at_1", "reasoning_failure_rate")
    return {k: results.get(k) for k in keys} | {"generated_samples": stats["generated_samples"]}
