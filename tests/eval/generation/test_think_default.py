"""Evaluation defaults with a model that does not think: the tiny Llama's chat template opens no <think>, so
with the default template (think_boxed) an output without </think> is graded, not a reasoning failure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmjobs.jobs.context import StepContext

pytest.importorskip("math_verify")


def test_default_template_does_not_fail_a_model_that_does_not_think(tiny_llama, mgsm_ja, tmp_path):
    from llmjobs.jobs.eval.step import run

    params = {"model": str(tiny_llama), "data": str(mgsm_ja), "preset": "mgsm_ja", "limit": 3, "samples": 2,
              "max_tokens": 8, "temperature": 1.0, "engine": "hf", "grade_workers": 1}  # template: the default
    ctx = StepContext(run_id="r1", step="eval", shard=0, num_shards=1, output_dir=tmp_path,
                      checkpoint_dir=tmp_path / ".ckpt", params=params)
    run(ctx)
    samples = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 6
    outputs = [s["output"] for s in samples]
    # only an output that itself opens <think> and never closes it may count as a reasoning failure
    opened = sum(1 for o in outputs if o.rfind("<think>") > o.rfind("</think>"))
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["reasoning_failure_rate"] == pytest.approx(opened / len(outputs))
    assert opened < len(outputs)  # noise from 8 tokens rarely opens <think>; the old default failed all six
    assert Path(tmp_path / "report.md").exists()
