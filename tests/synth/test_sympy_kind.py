"""synth.sympy as a kind: shards own disjoint problems, rows alternate families, the held-out split is disjoint and language-stable, a
finished shard is not generated again, and the CLI runs it (and data.prepare after it) on the local backend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("sympy")
pytest.importorskip("math_verify")

from llmjobs.jobs.context import StepContext
from llmjobs.jobs.synth.sympy import registry
from llmjobs.jobs.synth.sympy.generate import AnswerReader, generate_shard

FAST = ["linear_equation", "fraction_arithmetic", "integer_arithmetic", "proportion"]


def test_shards_are_disjoint_and_the_test_split_is_stable():
    fams = registry.select(FAST)
    reader = AnswerReader()
    shards = [generate_shard(fams, 120, seed=5, shard=s, num_shards=3, test_fraction=0.25, reader=reader)
              for s in range(3)]
    keys = [{r["key"] for split in res.rows.values() for r in split} for res in shards]
    assert all(len(k) == 120 for k in keys)
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    test = [r for res in shards for r in res.rows["test"]]
    train = [r for res in shards for r in res.rows["train"]]
    assert 0.12 < len(test) / (len(test) + len(train)) < 0.38
    assert not ({r["key"] for r in test} & {r["key"] for r in train})
    # the split is a property of the problem: another seed never puts a test problem into train
    other = generate_shard(fams, 400, seed=99, test_fraction=0.25, reader=reader)
    test_keys = {r["key"] for r in test}
    assert not (test_keys & {r["key"] for r in other.rows["train"]})
    assert all(r["split"] == "test" for r in other.rows["test"])


def test_rows_alternate_families_so_a_prefix_mixes_them():
    res = generate_shard(registry.select(FAST[:2]), 12, seed=1)
    rows = res.rows["train"]
    # each problem's two languages together, families in turn: the first rows hold every family
    assert [r["language"] for r in rows[:2]] == ["ja", "en"] and rows[0]["key"] == rows[1]["key"]
    assert [r["family"] for r in rows[:8:2]] == FAST[:2] * 2
    assert sorted(r["family"] for r in rows[::2]) == sorted(FAST[:2] * 6)


def test_finished_shard_is_kept(tmp_path):
    from llmjobs.jobs.synth.sympy.kind import run

    ctx = StepContext(run_id="r", step="gen", shard=0, num_shards=1, output_dir=tmp_path, checkpoint_dir=tmp_path,
                      params={"families": ["linear_equation"], "count": 30, "languages": ["en"]})
    first = run(ctx)
    assert first["generated"] and first["problems"] == 30
    rows = (tmp_path / "train" / "shard-00000.jsonl").read_text()
    mtime = (tmp_path / "train" / "shard-00000.jsonl").stat().st_mtime_ns
    second = run(ctx)
    assert not second["generated"] and second["problems"] == 30
    assert (tmp_path / "train" / "shard-00000.jsonl").stat().st_mtime_ns == mtime
    assert (tmp_path / "train" / "shard-00000.jsonl").read_text() == rows
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["by_category"] == {"中1": 30} and "linear_equation" in (tmp_path / "report.md").read_text()


RECIPE = """
name: synth
steps:
  gen:
    kind: synth.sympy
    shards: 2
    params:
      families: [linear_equation, fraction_arithmetic]
      count: 40
      test_fraction: 0.2
      seed: 1
  sft:
    kind: data.prepare
    after: [gen]
    params:
      sources:
        - path: ${steps.gen.output}/train
          name: sympy
          fields: {prompt: problem, reasoning: solution, answer: answer, language: language}
      dev_fraction: 0.1
      dedup: exact     # templated problems that differ only in numbers are not near duplicates
"""


@pytest.mark.slow
def test_cli_runs_sympy_then_prepare(cli, tmp_path):
    recipe = tmp_path / "synth.yaml"
    recipe.write_text(RECIPE)
    r = cli("submit", recipe, "--wait", timeout=400)
    assert r.returncode == 0, r.stderr + r.stdout
    view = cli.status(r.stdout.split()[0])
    out = {s["name"]: Path(s["output"]) for s in view["steps"]}
    train = [json.loads(x) for f in sorted((out["gen"] / "train").glob("*.jsonl")) for x in f.read_text().splitlines()]
    test = [json.loads(x) for f in sorted((out["gen"] / "test").glob("*.jsonl")) for x in f.read_text().splitlines()]
    assert len({r["key"] for r in train + test}) == 40 and len(train) + len(test) == 80
    report = json.loads((out["gen"] / "report.json").read_text())
    assert report["shards_done"] == 2 and report["problems"] == 40
    # the rows load as evaluation problems as they are
    from llmjobs.jobs.eval.data import load_problems

    problems = load_problems(min((out["gen"] / "test").glob("*.jsonl")))
    assert problems and all(p.answer for p in problems)
    sft = [json.loads(x) for x in (out["sft"] / "train.jsonl").read_text().splitlines()]
    dev = [json.loads(x) for x in (out["sft"] / "dev.jsonl").read_text().splitlines()]
    stats = json.loads((out["sft"] / "stats.json").read_text())
    assert stats["read"] == {"sympy": len(train)} and stats["dropped"] == {"sympy": {}}
    assert len(sft) + len(dev) == len(train)
    reply = sft[0]["messages"][-1]["content"]
    assert reply.startswith("<think>\n") and "</think>\n\n\\boxed{" in reply
    assert {r["language"] for r in sft} == {"ja", "en"}


@pytest.mark.parametrize("recipe, expect", [
    ("name: x\nsteps:\n  g: {kind: synth.sympy, params: {families: [linear_equation, nope]}}\n",
     ["step 'g'", "params.families", "unknown family or category 'nope'", "linear_equation", "中1"]),
    (("name: x\nsteps:\n  p: {kind: data.prepare, params: {sources: [{path: DATA, fields: {prompt: question, "
     "answer: answer}}]}}\n"),
     ["step 'p'", "params.sources", "no field 'question' (fields.prompt)", "fields present", "problem"]),
])
def test_bad_input_is_refused_at_submit(cli, home, tmp_path, recipe, expect):
    data = tmp_path / "d.jsonl"
    data.write_text('{"problem": "1+1", "answer": "2"}\n')
    path = tmp_path / "bad.yaml"
    path.write_text(recipe.replace("DATA", str(data)))
    r = cli("submit", path)
    assert r.returncode == 2, r.stderr
    for text in expect:
        assert text in r.stderr, r.stderr
    assert not (home / "registry.db").exists() or "synth" not in cli("runs").stdout


def test_families_from_an_entry_point(tmp_path, monkeypatch):
    """A package adds a family through the entry point group; select() and the params model then know it."""
    (tmp_path / "extra_families.py").write_text(
        "from llmjobs.jobs.synth.sympy.registry import Draft, Family\n"
        "def _square(rng, difficulty):\n"
        "    a = rng.randint(2, 99)\n"
        "    return Draft(text={'ja': f'${a}^2$ を計算しなさい。', 'en': f'Compute ${a}^2$.'}, answer=str(a * a),\n"
        "                 solution={'ja': f'${a * a}$', 'en': f'${a * a}$'}, params={'a': a},\n"
        "                 check=lambda v: v == a * a)\n"
        "FAMILY = Family('square_numbers', '中1', 'squares', _square)\n")
    dist = tmp_path / "extra_families-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: extra-families\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[llmjobs.sympy_families]\nsquare = extra_families:FAMILY\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_FAMILIES", None)
    assert registry.families()["square_numbers"].category == "中1"
    assert "square_numbers" in {f.name for f in registry.select(["中1"])}
    from llmjobs.jobs.synth.sympy.params import SympyParams

    SympyParams.model_validate({"families": ["square_numbers"]})
    rows = generate_shard(registry.select(["square_numbers"]), 10, reader=AnswerReader()).rows["train"]
    assert len(rows) == 20 and all(int(r["answer"]) == r["params"]["a"] ** 2 for r in rows)
    monkeypatch.setattr(registry, "_FAMILIES", None)
