"""Training through the real CLI and the local backend: a tiny Llama from a config learns a chat task and
loads in transformers and vLLM's CPU build; SIGKILL then ``resume`` gives the weights of an uninterrupted
run (a truncated checkpoint is skipped); the walltime signal saves, requeues and continues; two processes
(torchrun, gloo) train one model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.train.local_job import job_pid, kill_job

pytestmark = pytest.mark.slow

# hidden 128 with 2 heads: head_dim 64, what vLLM's CPU attention needs
TINY = {"model_type": "llama", "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
        "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 512,
        "tie_word_embeddings": False}


def _sft(tokenizer_dir: Path, chat_data: Path, **kw) -> dict:
    return {"init": {"config": TINY, "tokenizer": str(tokenizer_dir)}, "data": str(chat_data),
            "max_length": 128, "learning_rate": 3e-3, "warmup_ratio": 0.0, "per_device_train_batch_size": 1,
            "logging_steps": 5, "seed": 1, **kw}


def _recipe(tmp_path: Path, steps: dict, name: str = "tr") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "steps": steps}))
    return path


def _output(cli, run_id: str, step: str) -> Path:
    return Path(next(s for s in cli.status(run_id)["steps"] if s["name"] == step)["output"])


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


@pytest.mark.timeout(900)
def test_sft_from_a_config_learns_and_loads_in_transformers_and_vllm(cli, tmp_path, tokenizer_dir, chat_data):
    recipe = _recipe(tmp_path, {"ft": {"kind": "train.sft", "params": _sft(tokenizer_dir, chat_data,
                                                                              max_steps=30, save_steps=10)}})
    r = cli("submit", recipe, "--wait", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    run_id = r.stdout.split()[0]
    out = _output(cli, run_id, "ft")
    metrics = json.loads((out / "metrics.json").read_text())
    s = metrics["summary"]
    assert s["steps"] == 30 and len(metrics["history"]) == 30
    assert s["final_loss"] < 0.5 * s["first_loss"], s
    assert s["real_token_share"] == 1.0 and s["packing_fill"] > 0.8 and s["tokens_per_s"] > 0
    assert s["samples_dropped_overlong"] == 0 and s["attention"] == "sdpa"
    assert (out / "loss.png").stat().st_size > 1000
    log = cli("logs", run_id, "ft").stdout
    assert "step 30/30 loss" in log and "tokens/s" in log and "eta" in log

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 3 + 4?"}], tokenize=False,
                                     add_generation_prompt=True)
    model = AutoModelForCausalLM.from_pretrained(out)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        gen = model.generate(**ids, max_new_tokens=12, do_sample=False)
    text = tok.decode(gen[0, ids["input_ids"].shape[1]:])
    assert "<think>" in text  # it learned the shape of the answers

    vllm = pytest.importorskip("vllm")
    # through the engine eval.self_consistency uses (it bounds the CPU build's KV cache)
    code = ("import sys; from llmjobs.jobs.engines import make_engine;"
            "e = make_engine('vllm', sys.argv[1], max_model_len=256, llm_options={'enforce_eager': True});"
            "o = e.generate([sys.argv[2]], n=1, temperature=0.0, top_p=1.0, max_tokens=12, seed=[0]);"
            "print('GEN:' + repr(o[0])); e.close()")
    del vllm
    v = subprocess.run([sys.executable, "-c", code, str(out), prompt], capture_output=True, text=True,
                       timeout=600, check=False)
    assert v.returncode == 0, v.stderr[-3000:]
    assert "<think>" in v.stdout.split("GEN:")[-1]


def _reference(tmp_path: Path, params: dict) -> Path:
    """The same training, uninterrupted, run by the worker directly."""
    out = tmp_path / "reference"
    out.mkdir()
    cfg = {"kind": "train.sft", "params": params, "output_dir": str(out), "checkpoint_dir": str(out / ".ck"),
           "stop_flag": str(out / "stop"), "status_file": str(out / "status.json"), "attempt": 1}
    (out / "cfg.json").write_text(json.dumps(cfg))
    r = subprocess.run([sys.executable, "-m", "llmjobs.jobs.train.worker", str(out / "cfg.json")],
                       capture_output=True, text=True, timeout=600, check=False, env=os.environ | {"RANK": "0"})
    assert r.returncode == 0, r.stderr[-3000:]
    return out


STEPS = 96


def test_sigkill_then_resume_matches_an_uninterrupted_run(cli, tmp_path, tokenizer_dir, chat_data):
    # steps enough that the kill lands well before the end (a tiny model trains ~50 steps/s on one thread)
    params = _sft(tokenizer_dir, chat_data, max_steps=STEPS, save_steps=4, save_total_limit=3)
    recipe = _recipe(tmp_path, {"ft": {"kind": "train.sft", "params": params}})
    r = cli("submit", recipe)
    assert r.returncode == 0, r.stderr
    run_id = r.stdout.split()[0]
    out = _output(cli, run_id, "ft")
    from llmjobs.jobs.train import checkpoint

    view = cli.wait_until(run_id, lambda v: v["steps"][0]["shards"][0]["attempts"]
                          and v["steps"][0]["shards"][0]["attempts"][0]["stdout"], timeout=120)
    (attempt,) = view["steps"][0]["shards"][0]["attempts"]
    ckpts = out / ".checkpoints" / "shard-00000"
    deadline = time.time() + 300
    while time.time() < deadline and len(checkpoint.complete(ckpts)) < 2:
        time.sleep(0.02)
    kill_job(attempt)  # at once: the job, its trainer with it
    view = cli.wait_until(run_id, lambda v: v["status"] not in ("running", "queued"), timeout=60)
    assert view["status"] == "failed" and not (out / "model.safetensors").exists()

    done = checkpoint.complete(ckpts)
    assert 2 <= len(done) and done[-1][0] < STEPS
    (_, newest), (previous_step, _) = done[-1], done[-2]
    with open(newest / "optimizer.pt", "r+b") as f:  # cut short after it was marked complete
        f.truncate(100)
    assert checkpoint.latest(ckpts)[0] == previous_step

    r = cli("resume", run_id, "--wait", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    log = cli("logs", run_id, "ft").stdout
    assert f"resumed from checkpoint step {previous_step} " in log
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [h["step"] for h in history] == list(range(1, STEPS + 1))

    ref = _reference(tmp_path, params)
    import torch

    got, want = _weights(out), _weights(ref)
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], atol=1e-5, rtol=1e-4)
    ref_history = json.loads((ref / "metrics.json").read_text())["history"]
    assert [h["loss"] for h in history] == pytest.approx([h["loss"] for h in ref_history], rel=1e-4)


def test_walltime_signal_checkpoints_requeues_and_finishes(cli, tmp_path, tokenizer_dir, chat_data):
    """The scheduler's checkpoint signal (SIGUSR2, what the local backend and Slurm send before the walltime
    or on preemption) while training: the trainer saves at the next step and exits, the job is requeued and
    continues from that step. The test sends the signal itself once training is under way, so the timing
    does not depend on how fast this machine is."""
    params = _sft(tokenizer_dir, chat_data, max_steps=120, save_steps=10_000, logging_steps=10)
    recipe = _recipe(tmp_path, {"ft": {"kind": "train.sft", "requeues": 2, "params": params}})
    r = cli("submit", recipe)
    assert r.returncode == 0, r.stderr
    run_id = r.stdout.split()[0]
    view = cli.wait_until(run_id, lambda v: v["steps"][0]["shards"][0]["attempts"]
                          and v["steps"][0]["shards"][0]["attempts"][0]["stdout"], timeout=120)
    attempt = view["steps"][0]["shards"][0]["attempts"][0]
    stdout = Path(attempt["stdout"])
    deadline = time.time() + 300
    while time.time() < deadline and "step 20/120" not in (stdout.read_text() if stdout.exists() else ""):
        time.sleep(0.2)
    assert "step 20/120" in stdout.read_text()
    os.kill(job_pid(attempt), signal.SIGUSR2)
    view = cli.wait_until(run_id, lambda v: v["status"] not in ("running", "queued"), timeout=600)
    assert view["status"] == "succeeded", json.dumps(view)[:2000]
    log = cli("logs", run_id, "ft").stdout
    stopped = int(log.split("stop requested: checkpoint step ")[1].split()[0])
    assert 20 <= stopped < 120
    assert f"resumed from checkpoint step {stopped} " in log
    out = _output(cli, run_id, "ft")
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [h["step"] for h in history] == list(range(1, 121))
    (attempt,) = cli.status(run_id)["steps"][0]["shards"][0]["attempts"]
    assert attempt["state"] == "succeeded"  # one attempt: requeued in place, not failed and resubmitted


def test_two_processes_train_one_model_with_gloo(cli, tmp_path, tokenizer_dir, chat_data):
    """torchrun with two CPU processes: gloo, one gradient, the same weights on both ranks at the end; the
    token-mean loss over the step makes the run equal to one process with twice the accumulation."""
    params = _sft(tokenizer_dir, chat_data, max_steps=6, save_steps=3, nproc_per_node=2)
    recipe = _recipe(tmp_path, {"ft": {"kind": "train.sft", "params": params}})
    r = cli("submit", recipe, "--wait", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    run_id = r.stdout.split()[0]
    out = _output(cli, run_id, "ft")
    s = json.loads((out / "metrics.json").read_text())["summary"]
    assert s["processes"] == 2 and s["ranks_agree"] is True
    log = cli("logs", run_id, "ft").stdout
    assert "llmjobs.jobs.train.torchrun --nnodes=1 --node_rank=0 --nproc_per_node=2" in log
