"""The generation pool: exactly N samples per problem on disk, resume after a kill, a 2-actor Ray pool.

Everything runs for real on the tiny fixture model: vLLM's CPU build, transformers, Ray on this machine.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmjobs.jobs.eval.generate import (
    GEN_DIR,
    EngineSpec,
    Sampling,
    WorkItem,
    collect,
    generate,
    plan,
    read_records,
)


def _pairs(gen_dir: Path) -> list[tuple[str, int]]:
    out = []
    for path in gen_dir.glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            out.append((rec["id"], rec["sample"]))
    return out


class Counting:
    """A real engine, with a count of the calls and prompts it was given (through ``generate`` only)."""

    def __init__(self, engine) -> None:
        self.engine, self.calls, self.prompts = engine, 0, []

    def generate(self, prompts, **kw):
        self.calls += 1
        self.prompts.extend(prompts)
        return self.engine.generate(prompts, **kw)

    def close(self):
        pass


class CountingStream(Counting):
    """The same, through ``stream``: results come back problem by problem."""

    def stream(self, prompts, **kw):
        self.calls += 1
        self.prompts.extend(prompts)
        return self.engine.stream(prompts, **kw)


@pytest.mark.parametrize("wrapper", [Counting, CountingStream])
@pytest.mark.parametrize("name", ["hf", pytest.param("vllm", marks=pytest.mark.vllm)])
def test_exactly_n_samples_per_problem(name, wrapper, request, mgsm_prompts, tmp_path):
    engine = wrapper(request.getfixturevalue(f"{name}_engine"))
    items = mgsm_prompts[:5]
    sampling = Sampling(samples=3, temperature=0.8, top_p=0.95, max_tokens=6, seed=1)
    stats = generate(items, tmp_path, sampling, EngineSpec(engine=name), chunk=2, engine=engine)
    assert stats["generated_samples"] == 15 and stats["engine_calls"] == 3 == engine.calls
    records = collect(tmp_path / GEN_DIR, [i for i, _ in items], 3)
    assert [(r["id"], r["sample"]) for r in records] == [(i, k) for i, _ in items for k in range(3)]
    assert all(1 <= r["tokens"] <= 6 and isinstance(r["output"], str) for r in records)
    assert stats["generated_tokens"] == sum(r["tokens"] for r in records)

    # a finished evaluation run again generates nothing
    again = generate(items, tmp_path, sampling, EngineSpec(engine=name), engine=engine)
    assert again["generated_samples"] == 0 and engine.calls == 3 and again["already_on_disk"] == 15
    # asking for more samples later generates only the new sample indexes
    more = generate(items, tmp_path, Sampling(samples=4, temperature=0.8, top_p=0.95, max_tokens=6, seed=1),
                    EngineSpec(engine=name), engine=engine)
    assert more["generated_samples"] == 5
    assert sorted(_pairs(tmp_path / GEN_DIR)) == sorted((i, k) for i, _ in items for k in range(4))


def test_long_generation_reports_progress(hf_engine, mgsm_prompts, tmp_path, monkeypatch, caplog):
    """The shard log shows how far a long generation is (samples done of all, tokens/s, ETA)."""
    import llmjobs.jobs.eval.generate as gen

    monkeypatch.setattr(gen, "PROGRESS_EVERY_S", 0.0)
    caplog.set_level("INFO", logger="llmjobs.eval.generate")
    generate(mgsm_prompts[:3], tmp_path, Sampling(samples=2, temperature=1.0, max_tokens=4, seed=1),
             EngineSpec(engine="hf"), engine=hf_engine)
    lines = [r.getMessage() for r in caplog.records if "samples (" in r.getMessage()]
    assert [line.split(":")[1].split()[0] for line in lines] == ["2/6", "4/6", "6/6"], lines
    assert "tokens/s, eta" in lines[0]


def test_plan_fills_only_the_gaps():
    items = [("a", "A"), ("b", "B"), ("c", "C")]
    done = [("a", 0), ("a", 1), ("a", 2), ("b", 1), ("x", 0)]
    assert plan(items, 3, done) == [WorkItem("b", "B", 0, 1), WorkItem("b", "B", 2, 1), WorkItem("c", "C", 0, 3)]


def test_half_written_line_is_not_taken(tmp_path):
    gen = tmp_path / GEN_DIR
    gen.mkdir()
    good = json.dumps({"id": "1", "sample": 0, "output": "x", "tokens": 1})
    (gen / "a.jsonl").write_text(good + "\n" + '{"id": "1", "sample": 1, "outp')
    (gen / "b.jsonl").write_text(json.dumps({"id": "1", "sample": 0, "output": "dup", "tokens": 1}) + "\n")
    found = read_records(gen)
    assert set(found) == {("1", 0)} and found[("1", 0)]["output"] == "x"


_CHILD = """
import json, sys
from llmjobs.jobs.eval.generate import EngineSpec, Sampling, generate
items = [tuple(x) for x in json.load(open(sys.argv[1]))]
generate(items, sys.argv[2], Sampling(samples=3, temperature=1.0, top_p=0.95, max_tokens=24, seed=3),
         EngineSpec(engine="hf", model=sys.argv[3]), chunk=1)
"""


def test_kill_midway_then_resume(tiny_llama, hf_engine, mgsm_prompts, tmp_path):
    items = mgsm_prompts[:12]
    (tmp_path / "items.json").write_text(json.dumps(items))
    gen = tmp_path / GEN_DIR
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path / "items.json"), str(tmp_path),
                              str(tiny_llama)], start_new_session=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and child.poll() is None:
            if gen.exists() and len(read_records(gen)) >= 6:  # two problems' samples are on disk
                break
            time.sleep(0.02)
        assert child.poll() is None, "the evaluation finished before it could be killed"
        os.killpg(child.pid, signal.SIGKILL)
    finally:
        child.wait()

    before = read_records(gen)
    per_problem = collections.Counter(pid for pid, _ in before)
    finished = {pid for pid, c in per_problem.items() if c == 3}
    assert 2 <= len(finished) < len(items)

    engine = Counting(hf_engine)
    stats = generate(items, tmp_path, Sampling(samples=3, temperature=1.0, top_p=0.95, max_tokens=24, seed=3),
                     EngineSpec(engine="hf"), engine=engine)
    prompt_of = dict(items)
    # finished problems were not given to the engine again, every other one was, once
    assert sorted(engine.prompts) == sorted(prompt_of[pid] for pid, _ in items if pid not in finished)
    assert stats["already_on_disk"] == len(before)

    pairs = _pairs(gen)
    assert len(pairs) == len(set(pairs)) == 3 * len(items)  # nothing duplicated, nothing missing
    after = read_records(gen)
    for key, rec in before.items():
        assert after[key] == rec  # what was on disk is what is used
    assert len(collect(gen, [i for i, _ in items], 3)) == 36


@pytest.fixture
def local_ray(monkeypatch):
    """Ray on this machine with 2 CPUs, in this process. Token authentication is off here: Ray reads its mode
    once per process, and left alone it would write a token into the home directory. The step's Ray
    cluster, with its token, is tested in test_step.py."""
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    ray = pytest.importorskip("ray")
    from ray._raylet import Config

    Config.initialize("")  # the mode is read from the environment here, not at each ray.init
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
    yield ray
    ray.shutdown()


def test_two_actor_ray_pool_shares_the_work(local_ray, tiny_llama, mgsm_prompts, tmp_path):
    items = mgsm_prompts[:8]
    spec = EngineSpec(engine="hf", model=str(tiny_llama))
    stats = generate(items, tmp_path, Sampling(samples=2, max_tokens=8, temperature=1.0, seed=2), spec,
                     pool="ray", chunk=1, cpu_actors=2)
    actors = stats["actors"]
    assert len(actors) == 2 and all(a["samples"] > 0 for a in actors.values())
    assert sum(a["samples"] for a in actors.values()) == 16
    records = collect(tmp_path / GEN_DIR, [i for i, _ in items], 2)
    by_actor = collections.Counter(r["actor"] for r in records)
    assert set(by_actor) == set(actors) and sum(by_actor.values()) == 16
    assert len(list((tmp_path / GEN_DIR).glob("*.jsonl"))) == 2  # one file per engine


@pytest.mark.vllm
@pytest.mark.slow
def test_two_actor_ray_pool_of_vllm_cpu_engines(local_ray, tiny_llama, mgsm_prompts, tmp_path):
    """Two Ray actors, each holding a vLLM CPU engine on one core (``nobind``, one OpenMP thread)."""
    pytest.importorskip("vllm")
    items = mgsm_prompts[:6]
    spec = EngineSpec(engine="vllm", model=str(tiny_llama),
                      options={"max_model_len": 512, "llm_options": {"enforce_eager": True}})
    stats = generate(items, tmp_path, Sampling(samples=2, max_tokens=4, temperature=1.0, seed=2), spec,
                     pool="ray", chunk=1, cpu_actors=2)
    assert len(stats["actors"]) == 2 and all(a["samples"] > 0 for a in stats["actors"].values())
    assert len(collect(tmp_path / GEN_DIR, [i for i, _ in items], 2)) == 12
