"""Bad training input is refused at submit: one message naming the step and field, exit 2, nothing queued."""

from __future__ import annotations

import json

import pytest
import yaml

CASES = {
    "unknown_trainer_field": ({"trainer": {"learning_rat": 1e-4}},
                              ["params.trainer", "trainer.learning_rat"]),
    "unimplemented_trainer_field": ({"trainer": {"neftune_noise_alpha": 5}},
                                    ["trainer.neftune_noise_alpha", "accepted:"]),
    "no_usable_column": ({"data": "NOCOL"}, ["no usable column", "'question'", "messages_field"]),
    "max_length_below_prompt": ({"max_length": 10}, ["max_length 10 is below the prompt", "raise max_length"]),
    "leaking_attention": ({"attn_implementation": "sdpa_paged"},
                          ["'sdpa_paged' with packing: true", "attend to each other", "packing: false"]),
    "lora_targets_absent": ({"kind": "train.lora", "target_modules": ["q_proj", "query_key_value"]},
                            ["target_modules ['query_key_value']", "not linear layers", "q_proj"]),
    "model_and_init": ({"init": {"config": {}, "tokenizer": "TOK"}}, ["exactly one of model"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_training_params_refused_at_submit(case, cli, home, tmp_path, tiny_llama, chat_data):
    change, expected = CASES[case]
    params = {"model": str(tiny_llama), "data": str(chat_data), "max_length": 256}
    kind = change.pop("kind", "train.sft") if "kind" in change else "train.sft"
    change = dict(change)
    if change.get("data") == "NOCOL":
        bad = tmp_path / "qa.jsonl"
        bad.write_text(json.dumps({"question": "1+1?", "answer": "2"}) + "\n")
        change["data"] = str(bad)
    if "init" in change:
        change["init"]["tokenizer"] = str(tiny_llama)
    params.update(change)
    recipe = tmp_path / "train.yaml"
    recipe.write_text(yaml.safe_dump({"name": "bad", "steps": {"ft": {"kind": kind, "params": params}}}))
    r = cli("submit", recipe)
    assert r.returncode == 2, (r.stdout, r.stderr)
    message = " ".join(r.stderr.split())
    assert "step 'ft'" in message and "train.yaml" in message
    for part in expected:
        assert part in message, (part, message)
    assert "Traceback" not in r.stderr
    assert json.loads(cli("runs", "--json").stdout or "[]") == []
