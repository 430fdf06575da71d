"""The ``eval.self_consistency`` step end to end on this machine: generate, grade, report; and the same step
on two ranks, whose Ray cluster spans two raylets (two Ray nodes on one host stand in for two hosts; the
Slurm testbed test runs it across real nodes)."""

from __future__ import annotations

import collections
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from llmjobs.jobs.context import StepContext
from llmjobs.jobs.eval.generate import GEN_DIR, read_records

pytest.importorskip("math_verify")


def _ctx(out: Path, params: dict, rank: int = 0, world: int = 1) -> StepContext:
    return StepContext(run_id="r1", step="eval", shard=0, num_shards=1, output_dir=out,
                       checkpoint_dir=out / ".ckpt", params=params, rank=rank, world_size=world)


def _params(model: Path, data: Path, **kw) -> dict:
    return {"model": str(model), "data": str(data), "preset": "mgsm_ja", "limit": 4, "samples": 3,
            "max_tokens": 8, "temperature": 1.0, "template": "ja_instruction", "grade_workers": 1, **kw}


@pytest.mark.parametrize("engine", ["hf", pytest.param("vllm", marks=[pytest.mark.vllm, pytest.mark.slow])])
def test_single_node_evaluation(engine, tiny_llama, mgsm_ja, tmp_path):
    from llmjobs.jobs.eval.step import run

    options = {"llm_options": {"enforce_eager": True}, "max_model_len": 512} if engine == "vllm" else {}
    summary = run(_ctx(tmp_path, _params(tiny_llama, mgsm_ja, engine=engine, engine_options=options)))
    assert summary["problems"] == 4 and summary["samples_per_problem"] == 3
    assert summary["generated_samples"] == 12
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["problems"] == 4 and set(results["maj_at_k"]) == {"1", "2", "3"}
    lines = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert collections.Counter(x["id"] for x in lines) == {str(i): 3 for i in range(4)}
    assert (tmp_path / "report.md").exists()

    again = run(_ctx(tmp_path, _params(tiny_llama, mgsm_ja, engine=engine, engine_options=options)))
    assert again["generated_samples"] == 0  # re-running a finished step regenerates nothing


_RANK = """
import json, sys
from pathlib import Path
from llmjobs.jobs.context import StepContext
from llmjobs.jobs.eval.step import run
out, rank, params = Path(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
ctx = StepContext(run_id="r2", step="eval", shard=0, num_shards=1, output_dir=out, checkpoint_dir=out / ".c",
                  params=params, rank=rank, world_size=2)
print("RESULT", json.dumps(run(ctx)), flush=True)
"""


def test_two_rank_step_runs_one_engine_per_node(tiny_llama, mgsm_ja, tmp_path):
    pytest.importorskip("ray")
    params = _params(tiny_llama, mgsm_ja, engine="hf", pool="ray", ray_node_cpus=1, chunk=1, limit=6, samples=2)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    procs = [subprocess.Popen([sys.executable, "-c", _RANK, str(tmp_path), str(rank), json.dumps(params)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
             for rank in (1, 0)]
    outs = [p.communicate(timeout=540)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[1][-3000:] + outs[0][-3000:]

    [token] = (tmp_path / ".ray").glob("*/auth_token")
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    records = read_records(tmp_path / GEN_DIR)
    assert sorted(records) == sorted((str(i), k) for i in range(6) for k in range(2))
    by_actor = collections.Counter(r["actor"] for r in records.values())
    assert len(by_actor) == 2  # one engine per Ray node, and both generated
    results = json.loads((tmp_path / "results.json").read_text())
    actors = results["meta"]["generation"]["actors"]
    assert len({a["node"] for a in actors.values()}) == 2 and all(a["samples"] > 0 for a in actors.values())
    # every Ray process this step started is gone
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert str(tmp_path / ".ray") not in ps and "ljray-" not in ps
