"""The recipes of the published approaches (recipes/published/): each one, pointed at data, validates and
renders the same batch scripts for the ABCI (PBS) and Slurm profiles as the golden files; unpointed, it stops
at submit naming the data file to set; and each runs end to end on the local backend with ``--set``
overrides that swap in a tiny Llama and a few rows of the shared math sets (every step of the recipe runs,
with the recipe's own wiring between them).

Regenerate the golden scripts after an intended change with
``LLMJOBS_UPDATE_GOLDEN=1 pytest tests/test_published_recipes.py -k golden`` and review the diff.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import time
from pathlib import Path

import pytest

from llmjobs.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes" / "published"
GOLDEN = Path(__file__).parent / "golden" / "published"
NAMES = sorted(p.stem for p in RECIPES.glob("*.yaml"))

_GEN = Path(__file__).parent / "eval" / "generation" / "conftest.py"
_spec = importlib.util.spec_from_file_location("_published_generation_fixtures", _GEN)
_gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_gen)  # type: ignore[union-attr]
DATA = _gen.DATA


def _shared(name: str) -> str:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"{path} not found (set LLMJOBS_TEST_DATA to the folder holding the shared data files)")
    return str(path)


def point(name: str) -> list[str]:
    """What a user sets to point a recipe at data: here the shared MGSM-ja, MATH-500 and GSM8K files, mapped
    to the fields each step reads. Models stay as written (they are read in the job)."""
    math500, gsm8k, mgsm = _shared("math500_test.jsonl"), _shared("gsm8k_test.jsonl"), _shared("mgsm_ja.tsv")
    return {
        "qlora-13b-ja-think": [
            (f"steps.mix.params.sources.0={{path: {math500}, name: en, language: en, "
             "fields: {prompt: problem, reasoning: solution, answer: answer}}"),
            (f"steps.mix.params.sources.1={{path: {mgsm}, name: ja, language: ja, columns: [question, answer], "
             "fields: {prompt: question, answer: answer}}"),
            f"steps.eval.params.data={mgsm}"],
        "sft-grpo": [
            f"steps.sft.params.data=[{{path: {gsm8k}, prompt_field: question, completion_field: answer}}]",
            f"steps.rl.params.data={{path: {gsm8k}, preset: gsm8k}}",
            f"steps.eval.params.data={math500}"],
        "sympy-distill-sft-lora": [
            f"steps.teach_llm.params.data={mgsm}", "steps.teach_llm.params.preset=mgsm_ja",
            f"steps.eval.params.data={mgsm}"],
        "multistage-lora-chain": [
            f"steps.chain.params.data={gsm8k}", "steps.chain.params.preset=gsm8k",
            f"steps.eval.params.data={math500}", "steps.eval.params.preset=math500"],
        "distill-sft-32k": [
            f"steps.sft.params.data=[{{path: {math500}, prompt_field: problem, completion_field: solution}}]",
            f"steps.eval.params.data={math500}"],
    }[name]


def _profiles():
    from llmjobs.cluster.profiles import profile_from_file

    abci = profile_from_file(ROOT / "clusters" / "abci.yaml")
    abci.work_dir = "/groups/gaa00000/llmjobs/runs"
    abci.scheduler = {**abci.scheduler, "group": "gaa00000"}
    slurm = profile_from_file(ROOT / "clusters" / "slurm.yaml")
    slurm.work_dir = "/shared/llmjobs/runs"
    # the nodes' interpreter, as a real cluster's profile names it (unset, it is this machine's)
    slurm.scheduler = {**slurm.scheduler, "python": "/shared/llmjobs/venv/bin/python"}
    return {"abci": abci, "slurm": slurm}


def test_every_approach_has_a_recipe():
    assert NAMES == ["distill-sft-32k", "multistage-lora-chain", "qlora-13b-ja-think", "sft-grpo",
                     "sympy-distill-sft-lora"]
    for name in NAMES:
        head = (RECIPES / f"{name}.yaml").read_text().split("\nname:")[0]
        assert head.startswith("# Reproduces:") and "reported" in head, name


@pytest.mark.parametrize("profile", ["abci", "slurm"])
@pytest.mark.parametrize("name", NAMES)
def test_golden_scripts(name, profile, monkeypatch):
    """The recipe, pointed at data, validates; every step's batch script equals the golden file."""
    from llmjobs.cluster import controller
    from llmjobs.recipes import load_recipe

    monkeypatch.setattr(controller.secrets, "token_hex", lambda n: "0a1b2c")
    if profile == "slurm":
        # Slurm's check is `sbatch --test-only` against a live cluster's partitions (the slurm-marked tests run
        # it on the testbed); here the scripts are rendered without it
        from llmjobs.cluster.backends.slurm import SlurmBackend

        monkeypatch.setattr(SlurmBackend, "validate", lambda self, *a, **k: None)
    plan = load_recipe(RECIPES / f"{name}.yaml", point(name))
    text = controller.describe(plan, _profiles()[profile])
    path = GOLDEN / f"{name}.{profile}.txt"
    if os.environ.get("LLMJOBS_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{path} differs; if intended, regenerate with LLMJOBS_UPDATE_GOLDEN=1"


def test_abci_resource_types():
    """What the recipes ask of ABCI: rt_HF whole nodes for multi-GPU steps, rt_HG for one-GPU QLoRA and
    adapters, rt_HC for CPU work; every job is charged to the group."""
    def types(name: str) -> dict[str, str]:
        text = (GOLDEN / f"{name}.abci.txt").read_text()
        steps = re.findall(r"^### step (\S+)", text, re.MULTILINE)
        found = re.findall(r"^#PBS -q (\S+)\n#PBS -l select=(\d+)", text, re.MULTILINE)
        assert text.count("#PBS -P gaa00000") == len(steps)
        return {s: f"{q}x{n}" for s, (q, n) in zip(steps, found)}

    assert types("qlora-13b-ja-think") == {"mix": "rt_HCx1", "qlora": "rt_HGx1", "eval": "rt_HGx1"}
    assert types("distill-sft-32k") == {"sft": "rt_HFx2", "eval": "rt_HFx1"}
    assert types("sympy-distill-sft-lora") == {"sympy": "rt_HCx1", "teach_sympy": "rt_HFx4", "teach_llm": "rt_HFx4",
                                               "sft": "rt_HFx2", "lora": "rt_HFx1", "eval": "rt_HFx1"}
    assert types("multistage-lora-chain") == {"chain": "rt_HFx2", "lora_hint": "rt_HGx1", "lora_procedure": "rt_HGx1",
                                              "lora_code": "rt_HGx1", "eval": "rt_HGx1"}
    assert types("sft-grpo") == {"sft": "rt_HFx1", "rl": "rt_HFx1", "eval": "rt_HFx1"}


@pytest.mark.parametrize("name", NAMES)
def test_unpointed_recipe_names_the_data_to_set(name):
    from llmjobs.recipes import load_recipe

    with pytest.raises(UserError, match=r"step '\w+'.*\n.*/groups/gXXXXXXX/data/\S+(:| does not exist| not found)"):
        load_recipe(RECIPES / f"{name}.yaml")


def test_published_hyperparameters():
    """The figures each header promises are the ones the steps carry."""
    from llmjobs.recipes import load_recipe

    def params(name: str) -> dict[str, dict]:
        plan = load_recipe(RECIPES / f"{name}.yaml", point(name))
        return {s: plan.step(s).params for s in plan.order}

    q = params("qlora-13b-ja-think")["qlora"]
    assert (q["quantize"], q["r"], q["alpha"], q["dropout"], q["max_length"], q["overlong"], q["template"]) == \
        ("4bit", 16, 32, 0.05, 4096, "drop", "ja_think")
    assert q["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    g = params("sft-grpo")
    assert g["sft"]["num_train_epochs"] == 2 and g["rl"]["beta"] == 0.04 and g["rl"]["rewards"] == {"accuracy": 1.0}
    s = params("sympy-distill-sft-lora")
    assert (s["teach_sympy"]["samples"], s["teach_sympy"]["filter"]) == (20, "ground_truth")
    assert (s["teach_llm"]["samples"], s["teach_llm"]["filter"], s["teach_llm"]["theta"]) == (20, "majority", 0.8)
    assert s["sft"]["learning_rate"] == 2e-5 and "teach_llm" in s["sft"]["data"]
    assert (s["lora"]["r"], s["lora"]["alpha"], s["lora"]["dropout"], s["lora"]["learning_rate"]) == \
        (64, 128, 0.03, 1e-4)
    assert "teach_sympy" in s["lora"]["data"] and s["eval"]["samples"] == 20
    m = params("multistage-lora-chain")
    for stage, length in (("hint", 512), ("procedure", 512), ("code", 1024)):
        a = m[f"lora_{stage}"]
        assert (a["r"], a["alpha"], a["learning_rate"], a["num_train_epochs"], a["max_length"]) == \
            (16, 32, 2e-4, 3, length)
        assert a["per_device_train_batch_size"] * a["gradient_accumulation_steps"] == 16
        assert a["data"].endswith(f"/datasets/{stage}.jsonl")
    chain = {st["name"]: st for st in m["chain"]["stages"]}
    for st in m["eval"]["stages"]:  # the evaluation asks exactly what the adapters were trained on
        if st["name"] != "check":
            assert st["template"] == chain[st["name"]]["template"]
            assert st["adapter"] == f"${{steps.lora_{st['name']}.output}}"
    d = params("distill-sft-32k")
    assert (d["sft"]["max_length"], d["sft"]["learning_rate"], d["sft"]["num_train_epochs"]) == (32768, 1.5e-5, 1)
    assert (d["eval"]["temperature"], d["eval"]["top_p"], d["eval"]["samples"]) == (0.6, 0.95, 16)


# ---- end to end on the local backend --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    return _gen.build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), Path(_shared("mgsm_ja.tsv")))


def _local(plan_steps: list[str]) -> list[str]:
    """Every step on this machine: one CPU, one node, no GPU."""
    return [f"steps.{s}.resources={{cpus: 1, nodes: 1, gpus_per_node: 0, walltime: '00:30:00'}}" for s in plan_steps]


TRAIN = "max_steps: 2, max_length: 512, per_device_train_batch_size: 1, gradient_accumulation_steps: 1"


def tiny_overrides(name: str, model: str, work: Path) -> list[str]:
    """The tiny model everywhere, a handful of rows, a few tokens, 2 optimizer steps; nothing else changes."""
    from llmjobs.recipes import load_recipe

    steps = load_recipe(RECIPES / f"{name}.yaml", point(name)).order
    sets = point(name) + _local(steps)

    def train(step: str, extra: str = "") -> None:
        for item in f"{TRAIN}{extra}".split(", "):
            key, value = item.split(": ")
            sets.append(f"steps.{step}.params.{key}={value}")

    evals = ["engine=hf", "samples=2", "max_tokens=8", "limit=3", "grade_workers=1"]
    if name == "qlora-13b-ja-think":
        sets += ["steps.mix.params.sources.0.limit=6", "steps.mix.params.sources.1.limit=6",
                 f"steps.qlora.params.model={model}",
                 "steps.qlora.params.quantize=none"]  # 4-bit needs bitsandbytes and a GPU
        train("qlora")
        sets += [f"steps.eval.params.{e}" for e in evals]
    elif name == "sft-grpo":
        sets += [f"steps.sft.params.model={model}", "steps.sft.params.data.0.limit=6",
                 "steps.rl.params.data.limit=4", "steps.rl.params.generation={engine: transformers}",
                 "steps.rl.params.max_steps=1", "steps.rl.params.num_generations=2",
                 "steps.rl.params.per_device_train_batch_size=2", "steps.rl.params.max_completion_length=8",
                 "steps.rl.params.max_prompt_length=256", "steps.rl.params.save_steps=1"]
        train("sft")
        sets += [f"steps.eval.params.{e}" for e in evals]
    elif name == "sympy-distill-sft-lora":
        # A random tiny teacher answers nothing right, so both filters keep nothing (an empty dataset, which
        # train.sft rightly refuses): the training steps read a few fixed rows instead, after the teachers.
        # test_published_hyperparameters checks that the recipe feeds each teacher's dataset to its step.
        rows = work / "fallback.jsonl"
        rows.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"{a} + {a} は？"},
                                                         {"role": "assistant", "content": f"最終的な回答：{2 * a}"}]},
                                           ensure_ascii=False) + "\n" for a in range(4)))
        sets += ["steps.sympy.params.count=6"]
        for teach in ("teach_sympy", "teach_llm"):
            sets += [f"steps.{teach}.params.model={model}", f"steps.{teach}.params.limit=3"]
            sets += [f"steps.{teach}.params.{e}" for e in evals if not e.startswith("limit")]
        sets += [f"steps.sft.params.model={model}", f"steps.sft.params.data={rows}", "steps.sft.after=[teach_llm]",
                 f"steps.lora.params.data={rows}", "steps.lora.after=[teach_sympy]"]
        train("sft")
        train("lora")
        sets += [f"steps.eval.params.{e}" for e in evals]
    elif name == "multistage-lora-chain":
        sets += [f"steps.chain.params.model={model}", "steps.chain.params.engine=hf", "steps.chain.params.limit=3",
                 "steps.chain.params.max_tokens=8", "steps.chain.params.keep=all",  # noise verifies nothing
                 "steps.chain.params.grade_workers=1", "steps.chain.params.sandbox.workers=1"]
        for stage in ("hint", "procedure", "code"):
            sets.append(f"steps.lora_{stage}.params.model={model}")
            train(f"lora_{stage}", ", packing: false")
        sets += [f"steps.eval.params.model={model}", "steps.eval.params.engine=hf", "steps.eval.params.limit=3",
                 "steps.eval.params.max_tokens=8", "steps.eval.params.grade_workers=1",
                 "steps.eval.params.sandbox.workers=1"]
    elif name == "distill-sft-32k":
        sets += [f"steps.sft.params.model={model}", "steps.sft.params.data.0.limit=4"]
        train("sft")
        sets += [f"steps.eval.params.{e}" for e in evals] + ["steps.eval.params.max_model_len=512"]
    return sets


@pytest.fixture(scope="module")
def e2e_runs(tmp_path_factory, tiny):
    """All five recipes submitted at once to one local backend, then waited for together: their steps share
    the machine's cores instead of waiting on each other's start-up. Returns the CLI and the run ids."""
    pytest.importorskip("math_verify")
    from tests.conftest import Cli

    home = tmp_path_factory.mktemp("e2e-home")
    env = {**os.environ, "LLMJOBS_HOME": str(home), "COLUMNS": "200"}
    env.pop("LLMJOBS_REGISTRY", None)
    cli = Cli(env)
    work = tmp_path_factory.mktemp("e2e-work")
    ids = {}
    for name in NAMES:
        sets = [a for s in tiny_overrides(name, str(tiny), work) for a in ("--set", s)]
        r = cli("submit", RECIPES / f"{name}.yaml", *sets, "--name", name)
        assert r.returncode == 0, r.stderr[-4000:]
        ids[name] = r.stdout.split()[0]
    # every few seconds, not every half second: each `status` is a CLI process, and on 2 cores their CPU time
    # slowed the runs themselves
    deadline = time.time() + 1200
    for run_id in ids.values():
        while cli.status(run_id)["status"] in ("running", "queued", "pending"):
            assert time.time() < deadline, f"{run_id} still running after 20 minutes"
            time.sleep(5)
    return cli, ids


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_end_to_end_on_the_local_backend(name, e2e_runs):
    cli, ids = e2e_runs
    view = cli.status(ids[name])
    if view["status"] != "succeeded":
        pytest.fail(f"{name}: {view['status']}\n" + cli("logs", ids[name]).stdout[-4000:])
    out = {s["name"]: Path(s["output"]) for s in view["steps"]}
    assert set(out) == set(NAMES_STEPS[name])
    CHECKS[name](out)


def _results(d: Path) -> dict:
    return json.loads((d / "results.json").read_text())


def _check_qlora(out):
    rows = [json.loads(x) for x in (out["mix"] / "train.jsonl").read_text().splitlines()]
    assert {r["language"] for r in rows} == {"en", "ja"} and len(rows) == 12
    assert all(r["messages"][-1]["content"].startswith("<think>\n") and "最終的な回答：" in r["messages"][-1]["content"]
               for r in rows)
    tok = json.loads((out["qlora"] / "merged" / "tokenizer_config.json").read_text())
    assert "### 指示" in (tok.get("chat_template") or (out["qlora"] / "merged" / "chat_template.jinja").read_text())
    assert _results(out["eval"])["problems"] == 3


def _check_sft_grpo(out):
    m = json.loads((out["rl"] / "metrics.json").read_text())["summary"]
    assert m["beta"] == 0.04 and m["reference_model"] is True
    assert _results(out["eval"])["problems"] == 3


def _check_sympy(out):
    for teach in ("teach_sympy", "teach_llm"):
        report = json.loads((out[teach] / "report.json").read_text())
        assert report["problems"] == 3, report
    assert (out["lora"] / "merged" / "config.json").exists()
    assert _results(out["eval"])["samples_per_problem"] == 2


def _check_multistage(out):
    for stage in ("hint", "procedure", "code"):
        assert (out["chain"] / "datasets" / f"{stage}.jsonl").read_text().count("\n") == 3
        assert (out[f"lora_{stage}"] / "adapter_config.json").exists()
    report = json.loads((out["eval"] / "report.json").read_text())
    assert report["problems"] == 3 and set(report["accuracy"]) == {"check"}
    lineage = [json.loads(x) for x in (out["eval"] / "lineage.jsonl").read_text().splitlines()]
    assert all(set(item["stages"]) == {"hint", "procedure", "code", "check"} for item in lineage)


def _check_distill(out):
    assert "reasoning_failure_rate" in json.dumps(_results(out["eval"]))


NAMES_STEPS = {"qlora-13b-ja-think": ["mix", "qlora", "eval"], "sft-grpo": ["sft", "rl", "eval"],
               "sympy-distill-sft-lora": ["sympy", "teach_sympy", "teach_llm", "sft", "lora", "eval"],
               "multistage-lora-chain": ["chain", "lora_hint", "lora_procedure", "lora_code", "eval"],
               "distill-sft-32k": ["sft", "eval"]}
CHECKS = {"qlora-13b-ja-think": _check_qlora, "sft-grpo": _check_sft_grpo, "sympy-distill-sft-lora": _check_sympy,
          "multistage-lora-chain": _check_multistage, "distill-sft-32k": _check_distill}
