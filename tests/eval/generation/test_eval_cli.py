"""`llmjobs eval` end to end: a one-step run through the local backend (real submitit processes, SQLite),
generating with the tiny Llama through transformers and through vLLM's CPU build, then `llmjobs report`."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

pytest.importorskip("math_verify")


@pytest.mark.parametrize("engine", ["hf", pytest.param("vllm", marks=[pytest.mark.vllm, pytest.mark.slow])])
def test_llmjobs_eval_through_the_local_backend(engine, cli, tiny_llama, mgsm_ja):
    if engine == "vllm":
        pytest.importorskip("vllm")
    args = ["eval", "--model", tiny_llama, "--data", mgsm_ja, "--preset", "mgsm_ja", "--limit", "4",
            "--samples", "3", "--max-tokens", "8", "--template", "ja_instruction", "--engine", engine,
            "--temperature", "1.0", "--set", "steps.eval.params.grade_workers=1", "--wait"]
    if engine == "vllm":
        args += ["--set", "steps.eval.params.engine_options={max_model_len: 512, llm_options: {enforce_eager: true}}"]
    cli.env["TOKENIZERS_PARALLELISM"] = "false"
    r = cli(*args, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    run_id = r.stdout.split()[0]
    assert "maj@3" in r.stdout  # --wait prints the report

    view = cli.status(run_id)
    (step,) = view["steps"]
    assert (view["status"], step["kind"]) == ("succeeded", "eval.self_consistency")
    out = Path(step["output"])
    results = json.loads((out / "results.json").read_text())
    assert results["problems"] == 4 and results["samples_per_problem"] == 3
    assert set(results["pass_at_k"]) == {"1", "2", "3"}
    lines = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert collections.Counter(x["id"] for x in lines) == {str(i): 3 for i in range(4)}
    assert all({"id", "sample", "output", "answer", "correct"} <= set(x) for x in lines)

    r = cli("report", run_id)
    assert r.returncode == 0 and "maj@3" in r.stdout
    r = cli("compare", run_id, f"{run_id}:{step['name']}", "--json", "--no-plot")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [x["label"] for x in rows] == [run_id, f"{run_id}:{step['name']}"]
    assert all((x["majority_accuracy"], x["maj_at_k"], x["mean_at_1"]) ==
               (results["majority_accuracy"], results["maj_at_k"], results["mean_at_1"]) for x in rows)
    assert cli("report", "no-such-run").returncode == 2
