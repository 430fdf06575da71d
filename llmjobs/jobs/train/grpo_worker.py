"""One ``train.grpo`` process (``python -m llmjobs.jobs.train.grpo_worker CONFIG``), started by torchrun on
every GPU of every node, or alone on a CPU-only node: TRL's GRPOTrainer with the llmjobs pieces around it.

- prompts come from the eval loader (field mapping, presets) rendered with the eval prompt templates;
- rewards from ``llmjobs.jobs.train.rewards``;
- checkpoints: TRL writes ``checkpoint-N`` into a staging directory; at ``on_save`` (every rank done writing)
  rank 0 moves it into the step's checkpoint directory as ``step-N`` and marks it COMPLETE with the train
  package's ``checkpoint.publish``; a run starts from the newest complete one (``resume_from_checkpoint``);
- the kind's stop flag (walltime signal) makes every rank save at the next optimizer step and exit;
- at the end: the model (or adapter) and tokenizer in HF format, ``metrics.json`` and ``grpo.png``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from llmjobs.jobs.train import checkpoint
from llmjobs.jobs.train.grpo_params import GRPOParams, check_batch
from llmjobs.jobs.train.torchrun import detach_from_walltime_signal

log = logging.getLogger("llmjobs.train")


def say(msg: str) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"[grpo] {msg}", flush=True)


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def load_tokenizer(p: GRPOParams) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(p.tokenizer_path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def model_path(p: GRPOParams, tok: Any, work: Path) -> str:
    """The policy as a path: TRL loads the reference (beta > 0) from the policy's path, so a fresh ``init:``
    model is written to disk first (seeded, so every rank writes the same weights)."""
    if p.init is None:
        return str(p.model)
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    dest = work / "init-model" / f"rank-{os.environ.get('RANK', '0')}"
    if (dest / "config.json").exists():
        return str(dest)
    cfg = dict(p.init.config)
    cfg.setdefault("vocab_size", len(tok))
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        cfg.setdefault(name, getattr(tok, name))
    config = AutoConfig.for_model(cfg.pop("model_type", "llama"), **cfg)
    torch.manual_seed(p.seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(dest)
    tok.save_pretrained(dest)
    return str(dest)


def build_dataset(p: GRPOParams, tok: Any) -> tuple[Any, dict[str, int]]:
    from datasets import Dataset

    from llmjobs.jobs.eval.data import load_problems
    from llmjobs.jobs.eval.prompts import render_prompt

    problems = load_problems(p.data.path, p.data.fields, p.data.preset, p.data.limit)
    rows, dropped = [], 0
    for prob in problems:
        prompt = render_prompt(prob, p.template, tok if p.chat_template else None, p.system)
        if p.max_prompt_length is not None and len(tok(prompt, add_special_tokens=False).input_ids) > \
                p.max_prompt_length:
            dropped += 1
            continue
        rows.append({"prompt": prompt, "answer": prob.answer, "id": prob.id})
    if not rows:
        raise ValueError(f"{p.data.path}: every prompt is longer than max_prompt_length {p.max_prompt_length}")
    return Dataset.from_list(rows), {"problems": len(problems), "prompts": len(rows),
                                     "dropped_over_max_prompt_length": dropped}


def use_vllm(p: GRPOParams) -> bool:
    import importlib.util

    import torch

    if p.generation.engine == "transformers":
        return False
    if p.generation.engine == "vllm":
        return True
    return torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None


def grpo_config(p: GRPOParams, cfg: dict[str, Any], staging: Path, vllm: bool) -> Any:
    import torch
    from trl import GRPOConfig

    cuda = torch.cuda.is_available()
    kw: dict[str, Any] = {
        "output_dir": str(staging), "report_to": "none", "save_strategy": "steps", "save_steps": p.save_steps,
        "save_total_limit": None, "logging_steps": p.logging_steps, "seed": p.seed, "use_cpu": not cuda,
        "bf16": cuda and p.precision != "fp32",
        "num_generations": p.num_generations, "max_completion_length": p.max_completion_length,
        "temperature": p.temperature, "learning_rate": p.learning_rate, "beta": p.beta, "epsilon": p.epsilon,
        "loss_type": p.loss_type, "scale_rewards": p.scale_rewards, "num_iterations": p.num_iterations,
        "per_device_train_batch_size": p.per_device_train_batch_size,
        "gradient_accumulation_steps": p.gradient_accumulation_steps, "max_steps": p.max_steps,
        "num_train_epochs": p.num_train_epochs, "lr_scheduler_type": p.lr_scheduler_type,
        "warmup_steps": p.warmup_ratio,  # transformers 5: a float below 1 is the warmup ratio
        "weight_decay": p.weight_decay, "max_grad_norm": p.max_grad_norm,
        "gradient_checkpointing": p.gradient_checkpointing, "use_vllm": vllm, "disable_tqdm": True,
    }
    if vllm:
        g = p.generation
        kw.update(vllm_mode=g.mode, vllm_gpu_memory_utilization=g.gpu_memory_utilization,
                  vllm_enable_sleep_mode=g.sleep_mode and g.mode == "colocate")
        if g.mode == "server":
            kw.update(vllm_server_host=cfg.get("vllm_server_host") or "127.0.0.1", vllm_server_port=g.server_port)
    kw.update(p.trainer)
    return GRPOConfig(**kw)


def peft_config(p: GRPOParams) -> Any:
    if p.lora is None:
        return None
    from peft import LoraConfig

    return LoraConfig(r=p.lora.r, lora_alpha=p.lora.alpha, lora_dropout=p.lora.dropout,
                      target_modules=p.lora.target_modules, task_type="CAUSAL_LM")


def callbacks(cfg: dict[str, Any], p: GRPOParams) -> tuple[Any, Any]:
    import torch
    from transformers import TrainerCallback

    ckpt_root = Path(cfg["checkpoint_dir"])
    stop_flag = Path(cfg["stop_flag"])
    rank = int(os.environ.get("RANK", "0"))

    class Publish(TrainerCallback):
        """TRL's checkpoint-N becomes a complete llmjobs checkpoint step-N (marker written last)."""

        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            _barrier()  # every rank has written its part (rng state, shards)
            if rank == 0:
                src = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                tmp = ckpt_root / f"{checkpoint.PREFIX}{state.global_step:08d}.tmp-{cfg['attempt']}"
                if tmp.exists():
                    import shutil

                    shutil.rmtree(tmp)
                os.replace(src, tmp)
                checkpoint.publish(ckpt_root, tmp, state.global_step,
                                   {"kind": "train.grpo", "world": int(os.environ.get("WORLD_SIZE", "1"))},
                                   keep=p.save_total_limit)
                say(f"checkpoint step {state.global_step} saved")
            _barrier()

    class Stop(TrainerCallback):
        """The stop flag (walltime signal relayed by the kind): all ranks save at this step and stop."""

        stopped = False

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
            flag = 1.0 if rank == 0 and stop_flag.exists() else 0.0
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                t = torch.tensor([flag], device="cuda" if torch.cuda.is_available() else "cpu")
                dist.all_reduce(t, op=dist.ReduceOp.MAX)
                flag = float(t.item())
            if flag:
                Stop.stopped = True
                control.should_save = True
                control.should_training_stop = True
            return control

    return Publish(), Stop


def history(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per logged optimizer step: reward (total and per function), accuracy, KL, completion length."""
    rows = []
    for e in log_history:
        if "reward" not in e or "step" not in e:
            continue
        row = {"step": e["step"], "reward": e.get("reward"), "reward_std": e.get("reward_std"),
               "kl": e.get("kl"), "loss": e.get("loss"), "learning_rate": e.get("learning_rate"),
               "completion_length": e.get("completions/mean_length"),
               "clipped_ratio": e.get("completions/clipped_ratio"), "entropy": e.get("entropy"),
               "step_time": e.get("step_time")}
        for k, v in e.items():
            if k.startswith("rewards/") and k.endswith("/mean"):
                row[f"reward_{k[len('rewards/'):-len('/mean')]}"] = v
        row["accuracy"] = row.get("reward_accuracy")
        rows.append(row)
    return rows


def plot(out: Path, rows: list[dict[str, Any]], title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no grpo.png")
        return
    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for k in sorted({k for r in rows for k in r if k.startswith("reward_")}):
        axes[0].plot(steps, [r.get(k) for r in rows], lw=1, label=k[len("reward_"):])
    axes[0].plot(steps, [r["reward"] for r in rows], lw=1.5, color="black", label="total (weighted)")
    axes[0].set_title("reward per function")
    axes[0].legend(fontsize=7)
    axes[1].plot(steps, [r["kl"] if r["kl"] is not None else float("nan") for r in rows], lw=1)
    axes[1].set_title("KL to the reference")
    axes[2].plot(steps, [r["completion_length"] for r in rows], lw=1)
    axes[2].set_title("mean completion length (tokens)")
    for ax in axes:
        ax.set_xlabel("optimizer step")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out / "grpo.png", dpi=100)
    plt.close(fig)


def _write_status(cfg: dict[str, Any], status: dict[str, Any]) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        path = Path(cfg["status_file"])
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(status))
        os.replace(tmp, path)


def run(cfg: dict[str, Any]) -> int:
    import torch
    from trl import GRPOTrainer

    from llmjobs.jobs.train import rewards

    p = GRPOParams.model_validate(cfg["params"])
    world = int(os.environ.get("WORLD_SIZE", "1"))
    check_batch(p, world)  # the submit check assumed params.processes; this is the real count
    out = Path(cfg["output_dir"])
    work = out / ".train"
    ckpt_root = Path(cfg["checkpoint_dir"])
    staging = ckpt_root / "trl-staging"
    torch.manual_seed(p.seed)
    tok = load_tokenizer(p)
    ds, data_stats = build_dataset(p, tok)
    path = model_path(p, tok, work)
    funcs, weights = rewards.build(p.rewards, p.max_completion_length)
    vllm = use_vllm(p)
    args = grpo_config(p, cfg, staging, vllm)
    args.reward_weights = weights
    publish, stop = callbacks(cfg, p)
    if cfg.get("model_init_kwargs"):
        args.model_init_kwargs = cfg["model_init_kwargs"]
    trainer = GRPOTrainer(model=path, reward_funcs=funcs, args=args, train_dataset=ds, processing_class=tok,
                          peft_config=peft_config(p), callbacks=[publish, stop])
    found = checkpoint.latest(ckpt_root)
    gen = ("vLLM " + p.generation.mode) if vllm else "transformers"
    say(f"{data_stats['prompts']} prompts ({data_stats['dropped_over_max_prompt_length']} over max_prompt_length "
        f"dropped); {world} process(es); generation {gen}; beta {p.beta}, reference "
        f"{'loaded' if trainer.ref_model is not None else 'none'}; rewards "
        + ", ".join(f"{f.__name__} x {w:g}" for f, w in zip(funcs, weights))
        + (f"; resuming from {found[1].name}" if found else ""))
    t0 = time.time()
    try:
        trainer.train(resume_from_checkpoint=str(found[1]) if found else None)
    finally:
        rewards.close(funcs)
    seconds = time.time() - t0
    if stop.stopped:
        say(f"stop requested: checkpoint step {trainer.state.global_step} written; exiting for the requeue")
        _write_status(cfg, {"state": "interrupted", "step": trainer.state.global_step})
        return 0
    trainer.save_model(str(out))
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        tok.save_pretrained(out)
        rows = history(trainer.state.log_history)
        if p.lora is not None and p.lora.merge:
            from llmjobs.jobs.train.outputs import merge_adapter

            merge_adapter(path, out, out / "merged")
        resumed_at = found[0] if found else 0
        done_steps = trainer.state.global_step - resumed_at
        per_step = p.per_device_train_batch_size * world * p.gradient_accumulation_steps
        gen_tokens = sum((r["completion_length"] or 0) * per_step for r in rows if r["step"] > resumed_at)
        acc = [r["accuracy"] for r in rows if r["accuracy"] is not None]
        k = max(1, len(acc) // 4)
        summary = {
            "kind": "train.grpo", "steps": trainer.state.global_step, "resumed_from_step": resumed_at or None,
            "train_seconds": seconds, "steps_per_s": done_steps / seconds if seconds > 0 else 0.0,
            "tokens_generated": gen_tokens, "tokens_generated_per_s": gen_tokens / seconds if seconds else 0.0,
            "accuracy_first": sum(acc[:k]) / k if acc else None,
            "accuracy_last": sum(acc[-k:]) / k if acc else None,
            "reference_model": trainer.ref_model is not None, "beta": p.beta, "generation": gen,
            "processes": world, "lora": p.lora is not None, "reward_weights": dict(
                zip([f.__name__ for f in funcs], weights)),
        }
        (out / "metrics.json").write_text(json.dumps({"summary": summary, "data": data_stats, "history": rows},
                                                     indent=1))
        plot(out, rows, f"train.grpo: {summary['steps']} steps, beta {p.beta}")
        _write_status(cfg, {"state": "done", "result": summary})
        say(f"done: {summary['steps']} steps, accuracy {summary['accuracy_first']} -> "
            f"{summary['accuracy_last']}; model in {out}")
    _barrier()
    return 0


def main(argv: list[str]) -> int:
    detach_from_walltime_signal()
    logging.basicConfig(level=logging.WARNING)
    cfg = json.loads(Path(argv[0]).read_text())
    if os.environ.get("WORLD_SIZE", "1") == "1":
        # one process (launch sets RANK/LOCAL_RANK for the SFT loop): accelerate would take LOCAL_RANK as a
        # torchrun launch and wait for a MASTER_ADDR rendezvous
        for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
            os.environ.pop(name, None)
    try:
        return run(cfg)
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
