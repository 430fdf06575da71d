"""Bad train.grpo input is refused at submit: one message naming the step and field, exit 2, nothing queued."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.train import grpo_task

BIG = {"model_type": "llama", "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
       "num_attention_heads": 64, "num_key_value_heads": 8, "vocab_size": 128256}

CASES = {
    "generations_do_not_divide": ({"num_generations": 3, "per_device_train_batch_size": 8},
                                  ["num_generations 3 does not divide the generation batch",
                                   "per_device_train_batch_size 8 x processes 1 x gradient_accumulation_steps 1 = 8"]),
    "unknown_reward": ({"rewards": {"accuracy": 1.0, "accurracy": 0.5}},
                       ["unknown reward 'accurracy'", "accuracy, format, length", "module:function"]),
    "custom_reward_missing_module": ({"rewards": ["no_such_module_x:fn"]}, ["'no_such_module_x' is not importable"]),
    "unknown_grpoconfig_field": ({"trainer": {"top_pp": 0.9}}, ["trainer.top_pp", "not a field of TRL's GRPOConfig"]),
    "managed_field_in_trainer": ({"trainer": {"beta": 0.0}}, ["trainer.beta", "use the named param"]),
    "does_not_fit": ({"init": {"config": BIG, "tokenizer": "TOK"}},
                     ["does not fit one GPU of 80 GiB", "policy 70.55B x 16 B", "reference 70.55B x 2 B",
                      "colocated vLLM 0.3 x 80 GiB", "Use lora:"]),
    "data_without_answer": ({"data": "NOANSWER"}, ["field 'answer'"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_grpo_params_refused_at_submit(case, cli, home, tmp_path):
    pytest.importorskip("trl")
    change, expected = CASES[case]
    data = grpo_task.write_problems(tmp_path / "p.jsonl", 8)
    params = {"init": {"config": grpo_task.CONFIG, "tokenizer": str(tmp_path)}, "data": str(data),
              "num_generations": 4}
    change = json.loads(json.dumps(change))
    if change.get("data") == "NOANSWER":
        bad = tmp_path / "q.jsonl"
        bad.write_text(json.dumps({"problem": "1+1="}) + "\n")
        change["data"] = str(bad)
    if "init" in change:
        change["init"]["tokenizer"] = str(tmp_path)
    params.update(change)
    recipe = tmp_path / "grpo.yaml"
    recipe.write_text(yaml.safe_dump({"name": "bad", "steps": {"rl": {"kind": "train.grpo", "params": params}}}))
    r = cli("submit", recipe)
    assert r.returncode == 2, (r.stdout, r.stderr)
    message = " ".join(r.stderr.split())
    assert "step 'rl'" in message and "grpo.yaml" in message
    for part in expected:
        assert part in message, (part, message)
    assert "Traceback" not in r.stderr
    assert json.loads(cli("runs", "--json").stdout or "[]") == []


def test_beta_defaults_to_004_explicitly():
    from llmjobs.jobs.train.grpo_params import GRPOParams

    p = GRPOParams.model_validate({"model": "${steps.sft.output}", "data": "${steps.prep.output}/p.jsonl"})
    assert p.beta == 0.04 and [r.name for r in p.rewards] == ["accuracy", "format"]
