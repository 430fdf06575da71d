"""``eval.self_consistency`` on two Slurm nodes through the CLI: one Ray cluster over both testbed nodes,
one engine actor per node (the transformers engine: vLLM's CPU engine would need more than the testbed
nodes' single CPU and 4000 MB each)."""

from __future__ import annotations

import collections
import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from .conftest import PROFILE, REPO, llmjobs_cli
from .test_cli import status, wait_run

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _conftest(relative: str):
    """A helper module of the eval tests, loaded by path (a conftest is not importable by name)."""
    spec = importlib.util.spec_from_file_location("_" + relative.replace("/", "_")[:-3], REPO / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def mgsm_ja() -> Path:
    return _conftest("tests/eval/conftest.py").shared_data("mgsm_ja.tsv")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory, mgsm_ja) -> Path:
    pytest.importorskip("transformers")
    pytest.importorskip("ray")
    # the tests' temporary folders are on this host, which is where both testbed nodes run
    return _conftest("tests/eval/generation/conftest.py").build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), mgsm_ja)


def test_eval_spans_both_nodes(slurm, home, tmp_path, tiny_llama, mgsm_ja):
    profile = yaml.safe_load(PROFILE.read_text())
    profile["env"] = {**profile.get("env", {}), "TOKENIZERS_PARALLELISM": "false"}
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(profile))
    params = {"model": str(tiny_llama), "data": str(mgsm_ja), "preset": "mgsm_ja", "limit": 4, "samples": 2,
              "max_tokens": 8, "template": "ja_instruction", "engine": "hf", "pool": "ray", "ray_node_cpus": 1,
              "chunk": 1, "grade_workers": 1}
    recipe = {"name": "eval-two-nodes",
              "steps": {"eval": {"kind": "eval.self_consistency", "params": params,
                                 "resources": {"nodes": 2, "cpus": 1, "walltime": "00:15:00"}}}}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))

    r = llmjobs_cli("submit", str(tmp_path / "recipe.yaml"), "--cluster", str(tmp_path / "cluster.yaml"))
    assert r.returncode == 0, r.stderr
    run_id = r.stdout.strip().splitlines()[-1]
    view = wait_run(run_id, timeout=900)
    logs = llmjobs_cli("logs", run_id, "eval")
    assert view["status"] == "succeeded", json.dumps(view, indent=1) + logs.stdout[-4000:] + logs.stderr[-2000:]

    out = Path(status(run_id)["steps"][0]["output"])
    results = json.loads((out / "results.json").read_text())
    actors = results["meta"]["generation"]["actors"]
    assert len(actors) == 2, actors
    assert len({a["node"] for a in actors.values()}) == 2, actors  # one Ray node per Slurm node
    assert all(a["samples"] > 0 for a in actors.values()), actors
    assert results["meta"]["nodes"] == 2
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines() if line.strip()]
    per_problem = collections.Counter(str(row["id"]) for row in rows)
    assert len(per_problem) == 4 and set(per_problem.values()) == {2}, per_problem
