"""The full-FT -> LoRA chain in one recipe, and the adapter evaluated by eval.self_consistency."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

TINY = {"model_type": "llama", "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
        "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 512,
        "tie_word_embeddings": False}


def test_full_finetune_then_lora_then_eval_with_the_adapter(cli, tmp_path, tokenizer_dir, chat_data):
    common = {"data": str(chat_data), "max_length": 128, "warmup_ratio": 0.0, "logging_steps": 5}
    steps = {
        "ft": {"kind": "train.sft", "params": {**common, "init": {"config": TINY, "tokenizer": str(tokenizer_dir)},
                                               "learning_rate": 3e-3, "max_steps": 10}},
        "lora": {"kind": "train.lora", "params": {**common, "model": "${steps.ft.output}", "r": 8, "alpha": 16,
                                                  "target_modules": ["q_proj", "v_proj"], "learning_rate": 5e-3,
                                                  "max_steps": 10, "merge": True}},
        "eval": {"kind": "eval.self_consistency", "params": {
            "model": "${steps.ft.output}", "adapter": "${steps.lora.output}", "engine": "hf",
            "data": str(chat_data.parent / "problems.jsonl"), "template": "{problem}", "samples": 2,
            "max_tokens": 8, "expect_think": False}},
    }
    (chat_data.parent / "problems.jsonl").write_text(
        "".join(json.dumps({"id": str(i), "problem": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n"
                for i in range(2)))
    recipe = tmp_path / "chain.yaml"
    recipe.write_text(yaml.safe_dump({"name": "chain", "steps": steps}))
    r = cli("submit", recipe, "--wait", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    run_id = r.stdout.split()[0]
    view = cli.status(run_id)
    assert [s["status"] for s in view["steps"]] == ["succeeded"] * 3
    lora = Path(next(s["output"] for s in view["steps"] if s["name"] == "lora"))
    ft = Path(next(s["output"] for s in view["steps"] if s["name"] == "ft"))
    adapter_cfg = json.loads((lora / "adapter_config.json").read_text())
    assert adapter_cfg["base_model_name_or_path"] == str(ft) and adapter_cfg["r"] == 8
    assert sorted(adapter_cfg["target_modules"]) == ["q_proj", "v_proj"]
    assert (lora / "adapter_model.safetensors").exists() and (lora / "tokenizer_config.json").exists()
    s = json.loads((lora / "metrics.json").read_text())["summary"]
    assert s["kind"] == "train.lora" and s["final_loss"] < s["first_loss"]

    from safetensors.torch import load_file

    weights = load_file(str(lora / "adapter_model.safetensors"))
    assert all("lora_" in k for k in weights) and any(float(v.abs().sum()) > 0 for k, v in weights.items()
                                                       if "lora_B" in k)  # B starts at zero: it trained
    merged = lora / "merged"
    assert (merged / "model.safetensors").exists()
    import torch

    base, folded = load_file(str(ft / "model.safetensors")), load_file(str(merged / "model.safetensors"))
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(base[q].float(), folded[q].float())  # the adapter is folded into q_proj
    k = "model.layers.0.self_attn.k_proj.weight"
    torch.testing.assert_close(base[k].to(torch.bfloat16), folded[k])  # not a target: unchanged

    ev = Path(next(s["output"] for s in view["steps"] if s["name"] == "eval"))
    samples = [json.loads(x) for f in sorted(ev.rglob("*.jsonl")) for x in f.read_text().splitlines() if x]
    assert samples  # the adapter was loaded and generated
