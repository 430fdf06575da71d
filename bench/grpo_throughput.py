"""GRPO throughput: llmjobs ``train.grpo`` (its worker process, as the kind starts it) beside TRL's
``GRPOTrainer`` run directly with the same configuration, in the same session.

A random-init Llama (``--shape``), a character tokenizer, a fixed set of 64 prompts (single-digit sums),
transformers generation (the GPU machine has no vLLM), the same reward functions (llmjobs' accuracy and
format) and the same GRPOConfig values. Each side runs in its own process: ``--warmup`` steps, then
``--steps`` timed ones (the rate is taken from TRL's ``step_time`` log of the timed steps). It prints
generated tokens/s and optimizer steps/s of both and the ratio llmjobs / TRL (goal >= 1.0).

    python bench/grpo_throughput.py                       # GPU: shape small, 20 timed steps
    python bench/grpo_throughput.py --shape tiny --steps 3 --warmup 1   # a CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHAPES = {
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
             "num_key_value_heads": 2},
    "small": {"hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 16, "num_attention_heads": 16,
              "num_key_value_heads": 16},
}


def build_inputs(d: Path, shape: str) -> tuple[Path, Path]:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    chars = list("0123456789+=\\boxed{}<>/think ")
    vocab = {t: i for i, t in enumerate(["<unk>", "<s>", "</s>", "<pad>", *dict.fromkeys(chars)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", model_max_length=4096)
    model_dir = d / "model"
    config = AutoConfig.for_model("llama", vocab_size=len(fast), max_position_embeddings=4096,
                                  bos_token_id=1, eos_token_id=2, pad_token_id=3, **SHAPES[shape])
    import torch

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(model_dir)
    fast.save_pretrained(model_dir)
    rng = random.Random(0)
    data = d / "prompts.jsonl"
    with data.open("w") as f:
        for i in range(64):
            a, b = rng.randint(0, 9), rng.randint(0, 9)
            f.write(json.dumps({"id": str(i), "problem": f"{a}+{b}=", "answer": str(a + b)}) + "\n")
    return model_dir, data


def params(model: Path, data: Path, a: argparse.Namespace) -> dict[str, Any]:
    return {"model": str(model), "data": str(data), "template": "{problem}", "chat_template": False,
            "num_generations": a.generations, "per_device_train_batch_size": a.batch,
            "max_completion_length": a.completion, "max_prompt_length": 16, "learning_rate": 1e-5,
            "beta": 0.04, "max_steps": a.warmup + a.steps, "save_steps": 10_000, "seed": 0,
            "rewards": {"accuracy": 1.0, "format": 0.2}, "generation": {"engine": "transformers"},
            "processes": 1, "gpu_memory_gib": 1000}


def rates(log_history: list[dict[str, Any]], warmup: int, completions_per_step: int) -> dict[str, float]:
    timed = [e for e in log_history if "step_time" in e and e.get("step", 0) > warmup]
    seconds = sum(float(e["step_time"]) for e in timed)
    tokens = sum(float(e.get("completions/mean_length", e.get("completion_length"))) * completions_per_step
                 for e in timed)
    return {"steps": len(timed), "seconds": seconds, "steps_per_s": len(timed) / seconds,
            "tokens_per_s": tokens / seconds}


def run_llmjobs(model: Path, data: Path, work: Path, a: argparse.Namespace) -> dict[str, Any]:
    """The kind's worker process, with the config file the kind writes."""
    out, ckpt = work / "llmjobs-out", work / "llmjobs-ckpt"
    out.mkdir(parents=True)
    ckpt.mkdir(parents=True)
    cfg = {"kind": "train.grpo", "params": params(model, data, a), "output_dir": str(out),
           "checkpoint_dir": str(ckpt), "stop_flag": str(work / "stop"), "status_file": str(work / "status.json"),
           "attempt": 1, "run_id": "bench", "step": "rl"}
    path = work / "llmjobs.json"
    path.write_text(json.dumps(cfg))
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}
    subprocess.run([sys.executable, "-m", "llmjobs.jobs.train.grpo_worker", str(path)], check=True, env=env)
    history = json.loads((out / "metrics.json").read_text())["history"]  # TRL's log, one row per step
    return rates(history, a.warmup, a.batch)


def run_trl(model: Path, data: Path, work: Path, a: argparse.Namespace) -> dict[str, Any]:
    """GRPOTrainer directly: the same GRPOConfig values, dataset and reward functions, nothing else."""
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from llmjobs.jobs.train import rewards
    from llmjobs.jobs.train.grpo_params import GRPOParams

    p = GRPOParams.model_validate(params(model, data, a))
    tok = AutoTokenizer.from_pretrained(model)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    ds = Dataset.from_list([{"prompt": r["problem"], "answer": r["answer"]} for r in rows])
    funcs, weights = rewards.build(p.rewards, p.max_completion_length)
    cuda = torch.cuda.is_available()
    args = GRPOConfig(output_dir=str(work / "trl-out"), report_to="none", save_strategy="no", logging_steps=1,
                      seed=0, use_cpu=not cuda, bf16=cuda, num_generations=p.num_generations,
                      max_completion_length=p.max_completion_length, temperature=p.temperature,
                      learning_rate=p.learning_rate, beta=p.beta, epsilon=p.epsilon, loss_type=p.loss_type,
                      scale_rewards=p.scale_rewards, num_iterations=p.num_iterations,
                      per_device_train_batch_size=p.per_device_train_batch_size,
                      gradient_accumulation_steps=p.gradient_accumulation_steps, max_steps=p.max_steps,
                      lr_scheduler_type=p.lr_scheduler_type, max_grad_norm=p.max_grad_norm, use_vllm=False,
                      disable_tqdm=True, reward_weights=weights)
    trainer = GRPOTrainer(model=str(model), reward_funcs=funcs, args=args, train_dataset=ds, processing_class=tok)
    trainer.train()
    rewards.close(funcs)
    return rates(trainer.state.log_history, a.warmup, a.batch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="small")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32, help="per_device_train_batch_size (completions)")
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--completion", type=int, default=256, help="max_completion_length")
    ap.add_argument("--side", choices=["trl"], help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.side == "trl":  # the child process of the TRL side
        work = Path(a.work)
        print("RESULT " + json.dumps(run_trl(work / "model", work / "prompts.jsonl", work, a)), flush=True)
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model, data = build_inputs(work, a.shape)
        t = time.time()
        ours = run_llmjobs(model, data, work, a)
        t_ours = time.time() - t
        t = time.time()
        child = subprocess.run([sys.executable, __file__, "--side", "trl", "--work", str(work),
                                *[f"--{k}={getattr(a, k)}" for k in ("shape", "steps", "warmup", "batch",
                                                                       "generations", "completion")]],
                               check=True, capture_output=True, text=True)
        t_trl = time.time() - t
        line = next(x for x in child.stdout.splitlines() if x.startswith("RESULT "))
        theirs = json.loads(line[len("RESULT "):])
    print(f"shape {a.shape}, batch {a.batch} completions ({a.generations} per prompt), max_completion_length "
          f"{a.completion}, {a.steps} timed steps after {a.warmup}")
    print(f"{'':10} {'tokens/s':>12} {'steps/s':>10} {'process s':>10}")
    print(f"{'llmjobs':10} {ours['tokens_per_s']:12,.1f} {ours['steps_per_s']:10.3f} {t_ours:10.1f}")
    print(f"{'TRL':10} {theirs['tokens_per_s']:12,.1f} {theirs['steps_per_s']:10.3f} {t_trl:10.1f}")
    print(f"ratio llmjobs/TRL: tokens/s {ours['tokens_per_s'] / theirs['tokens_per_s']:.3f}x, steps/s "
          f"{ours['steps_per_s'] / theirs['steps_per_s']:.3f}x")


if __name__ == "__main__":
    main()
