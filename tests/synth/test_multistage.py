"""synth.multistage: scripted stage outputs drive code execution and verification deterministically; the tiny
model drives the generate stages end to end; items resume individually; a template naming an unknown stage is
refused at submit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmjobs.jobs.context import StepContext
from llmjobs.jobs.synth.multistage import MultistageParams, extract_code

pytest.importorskip("math_verify")
pytest.importorskip("sympy")

PROBLEMS = [
    {"id": "a", "problem": "What is 2 + 2?", "answer": "4"},
    {"id": "b", "problem": "What is 3 squared?", "answer": "9"},
    {"id": "c", "problem": "What is half of one?", "answer": "\\frac{1}{2}"},
    {"id": "d", "problem": "Loop forever.", "answer": "1"},
    {"id": "e", "problem": "Say nothing.", "answer": "1"},
]
CODE = {  # the scripted driver of the code stage: what a model might write for each problem
    "a": "Here is the program:\n```python\nprint(2 + 2)\n```\n",
    "b": "```python\nprint(3 * 3 + 1)\n```",  # runs, but prints the wrong answer
    "c": "```python\nimport sympy\nprint(sympy.Rational(1, 2))\n```",  # 1/2 equals \\frac{1}{2}
    "d": "```python\nwhile True:\n    pass\n```",  # killed by the sandbox's limits
    "e": "I cannot write code for this.",  # no program at all
}
SCRIPTED_STAGES = [
    {"name": "hint", "scripted": "Hint for: {problem}"},
    {"name": "code", "kind": "code", "template": "{problem}\nHint: {stages.hint}\nWrite Python.", "scripted": CODE},
    {"name": "check", "kind": "verify"},
]


def _ctx(out: Path, params: dict) -> StepContext:
    return StepContext(run_id="r", step="multi", shard=0, num_shards=1, output_dir=out,
                       checkpoint_dir=out / ".c", params=params)


def _data(tmp_path: Path) -> Path:
    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    return data


def _params(model: str, data: Path, stages: list, **kw) -> dict:
    return {"model": model, "data": str(data), "stages": stages, "grade_workers": 1,
            "sandbox": {"wall_s": 3, "cpu_s": 2, "workers": 2}, **kw}


def test_scripted_code_is_executed_and_verified(tmp_path):
    from llmjobs.jobs.synth.multistage import run

    out = tmp_path / "out"
    summary = run(_ctx(out, _params("/nonexistent/model", _data(tmp_path), SCRIPTED_STAGES)))
    assert summary["kept"] == 2 and summary["stages"]["check"] == {"verified": 2, "rejected": 3}
    assert summary["stages"]["code"] in ({"ok": 3, "killed": 1, "no_code": 1}, {"ok": 3, "timeout": 1, "no_code": 1})

    lineage = {r["id"]: r for r in map(json.loads, (out / "lineage.jsonl").read_text().splitlines())}
    a = lineage["a"]["stages"]
    assert a["hint"]["output"] == "Hint for: What is 2 + 2?"
    assert a["code"]["prompt"] == "What is 2 + 2?\nHint: Hint for: What is 2 + 2?\nWrite Python."
    assert (a["code"]["code"], a["code"]["stdout"], a["code"]["exit"]) == ("print(2 + 2)\n", "4\n", 0)
    assert a["check"] == {"source": "code", "executed_answer": "4", "expected": "4", "correct": True,
                          "grading": "same_text"}
    assert lineage["b"]["stages"]["check"]["executed_answer"] == "10" and not lineage["b"]["verified"]
    assert lineage["c"]["verified"] and lineage["c"]["stages"]["check"]["executed_answer"] == "1/2"
    assert lineage["d"]["stages"]["code"]["status"] in ("killed", "timeout")
    assert lineage["e"]["stages"]["code"]["status"] == "no_code" and lineage["e"]["stages"]["code"]["code"] is None

    for stage in ("hint", "code"):
        rows = [json.loads(x) for x in (out / "datasets" / f"{stage}.jsonl").read_text().splitlines()]
        assert [r["id"] for r in rows] == ["a", "c"]
        assert rows[0]["messages"][1]["content"] == lineage["a"]["stages"][stage]["output"]
    assert not (out / "datasets" / "check.jsonl").exists()

    # items resume individually: a run again executes nothing; an item whose execution was lost runs alone
    results = out / "stages" / "code" / "results.jsonl"
    lines = results.read_text().splitlines()
    assert len(lines) == 5
    results.write_text("\n".join(x for x in lines if json.loads(x)["id"] != "c") + "\n")
    verdicts = out / "stages" / "check" / "results.jsonl"
    verdicts.write_text("\n".join(x for x in verdicts.read_text().splitlines() if json.loads(x)["id"] != "c") + "\n")
    again = run(_ctx(out, _params("/nonexistent/model", _data(tmp_path), SCRIPTED_STAGES)))
    assert again["kept"] == 2
    after = results.read_text().splitlines()
    assert after[:4] == [x for x in lines if json.loads(x)["id"] != "c"] and json.loads(after[4])["id"] == "c"
    assert len(after) == 5


def test_extract_code_prefers_the_last_python_block():
    text = "```\nplain\n```\n```python\nfirst\n```\ntext\n```py\nsecond\n```\n```text\nlast\n```"
    assert extract_code(text) == "second\n"
    assert extract_code("```\nonly\n```") == "only\n"
    assert extract_code("no code") is None


@pytest.mark.slow
def test_tiny_model_drives_the_generate_stages(tiny_llama, tmp_path):
    """The transformers engine with the tiny model writes the hint and the code (noise: no program), a scripted
    stage quotes the model's hint; every item has every stage in its lineage and nothing is verified."""
    from llmjobs.jobs.synth.multistage import run

    stages = [{"name": "hint", "template": "Give a hint: {problem}"},
              {"name": "echo", "scripted": "The hint was: {stages.hint}"},
              {"name": "code", "kind": "code", "template": "{problem} {stages.echo} Write Python."},
              {"name": "check", "kind": "verify"}]
    out = tmp_path / "out"
    params = _params(str(tiny_llama), _data(tmp_path), stages, engine="hf", max_tokens=8, temperature=1.0,
                     keep="all")
    summary = run(_ctx(out, params))
    assert summary["problems"] == 5 and summary["kept"] == 5
    lineage = [json.loads(x) for x in (out / "lineage.jsonl").read_text().splitlines()]
    for item in lineage:
        hint = item["stages"]["hint"]["output"]
        assert item["stages"]["echo"]["output"] == f"The hint was: {hint}"
        assert item["stages"]["code"]["prompt"].endswith(f"The hint was: {hint} Write Python.")
        assert item["stages"]["check"]["correct"] is False
    gen = out / "stages" / "hint" / "generations"
    assert sum(len(f.read_text().splitlines()) for f in gen.glob("*.jsonl")) == 5
    rows = [json.loads(x) for x in (out / "datasets" / "hint.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and rows[0]["messages"][0]["content"].startswith("Give a hint: ")
    # a second run samples nothing again
    run(_ctx(out, params))
    assert sum(len(f.read_text().splitlines()) for f in gen.glob("*.jsonl")) == 5


def _random_adapter(model: Path, out: Path, seed: int) -> Path:
    """A LoRA adapter with random (non-zero) B matrices, so it changes what the model writes."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(out)
    return out


@pytest.mark.slow
def test_each_stage_generates_with_its_own_adapter(tiny_llama, tmp_path):
    """Stages chain adapters: each stage's greedy output is what the model with that stage's adapter (or the
    step's, or none) writes for the stage's prompt, with engines swapped between stages."""
    pytest.importorskip("peft")
    from transformers import AutoTokenizer

    from llmjobs.jobs.engines import make_engine
    from llmjobs.jobs.eval.prompts import render_prompt
    from llmjobs.jobs.synth.multistage import run

    one, two = _random_adapter(tiny_llama, tmp_path / "one", 1), _random_adapter(tiny_llama, tmp_path / "two", 2)
    stages = [{"name": "a", "template": "Hint: {problem}", "adapter": str(one)},
              {"name": "b", "template": "Plan: {problem}", "adapter": str(two)},
              {"name": "c", "template": "Plain: {problem}"},  # the step's adapter: none here
              {"name": "d", "template": "Again: {problem}", "adapter": str(one)}]
    out = tmp_path / "out"
    run(_ctx(out, _params(str(tiny_llama), _data(tmp_path), stages, engine="hf", max_tokens=6, temperature=0.0,
                          keep="all", limit=2)))
    lineage = [json.loads(x) for x in (out / "lineage.jsonl").read_text().splitlines()]
    tok = AutoTokenizer.from_pretrained(tiny_llama)

    def greedy(template: str, adapter: str | None) -> list[str]:
        engine = make_engine("hf", str(tiny_llama), adapter=adapter)
        prompts = [render_prompt(template.replace("{problem}", item["problem"]), "{problem}", tok) for item in lineage]
        texts = [gens[0].text for gens in engine.generate(prompts, n=1, temperature=0.0, top_p=1.0, max_tokens=6)]
        engine.close()
        return texts

    for stage in stages:
        written = [item["stages"][stage["name"]]["output"] for item in lineage]
        assert written == greedy(stage["template"], stage.get("adapter")), stage["name"]
    # and an adapter does change what is written: without it, stage a's prompts get other words
    assert [item["stages"]["a"]["output"] for item in lineage] != greedy(stages[0]["template"], None)


def test_unknown_stage_is_refused_by_the_params(tmp_path):
    d = tmp_path / "problems.jsonl"  # the data file is checked too: a real one, so the stage check speaks
    d.write_text('{"id": "p1", "problem": "1+1?", "answer": "2"}\n')
    with pytest.raises(ValueError, match="unknown stage 'hnt'.*earlier stages: hint"):
        MultistageParams.model_validate({"model": "m", "data": str(d), "stages": [
            {"name": "hint", "template": "{problem}"}, {"name": "code", "template": "{stages.hnt}"}]})
    with pytest.raises(ValueError, match="unknown stage 'code'"):  # a later stage is not visible either
        MultistageParams.model_validate({"model": "m", "data": str(d), "stages": [
            {"name": "hint", "template": "{stages.code}"}, {"name": "code", "kind": "code", "template": "x"}]})
    with pytest.raises(ValueError, match="needs an earlier code stage"):
        MultistageParams.model_validate({"model": "m", "data": str(d), "stages": [{"name": "v", "kind": "verify"}]})


RECIPE = """
name: m
steps:
  pipeline:
    kind: synth.multistage
    params:
      model: /nonexistent/model
      data: {data}
      stages:
        - {{name: hint, template: "{{problem}}"}}
        - {{name: procedure, template: "{{problem}} {{stages.hnt}}"}}
"""


def test_unknown_stage_in_a_recipe_exits_2_and_queues_nothing(cli, home, tmp_path):
    data = tmp_path / "problems.jsonl"
    data.write_text('{"id": "p1", "problem": "1+1?", "answer": "2"}\n')
    path = tmp_path / "multi.yaml"
    path.write_text(RECIPE.format(data=data))
    r = cli("submit", path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    message = " ".join(r.stderr.split())
    assert "multi.yaml" in message and "step 'pipeline'" in message
    assert "stage 'procedure': template names unknown stage 'hnt'" in message and "earlier stages: hint" in message
    assert "Traceback" not in r.stderr
    assert not (home / "registry.db").exists() or _runs(home) == 0


def _runs(home: Path) -> int:
    import sqlite3

    con = sqlite3.connect(home / "registry.db")
    try:
        return con.execute("SELECT count(*) FROM runs").fetchone()[0]
    finally:
        con.close()
