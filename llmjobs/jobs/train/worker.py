"""One training process (``python -m llmjobs.jobs.train.worker CONFIG``), started once per GPU by torchrun,
or alone on a CPU-only node.

The loop: packed, padding-free micro-batches from the step plan; the loss is the token mean over the whole
optimizer step (all micro-batches and ranks), so packing, batch shape and world size do not change it; a
checkpoint every ``save_steps`` and when the kind raises the stop flag (walltime signal); the final model in
Hugging Face format in the step's output directory, with ``metrics.json``, ``loss.png`` and ``result.json``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from llmjobs.jobs.train import checkpoint, data, dsconfig, fused_loss, modeling, packing, params
from llmjobs.jobs.train.metrics import MetricsLog, flops_per_step, peak_flops
from llmjobs.jobs.train.torchrun import detach_from_walltime_signal

log = logging.getLogger("llmjobs.train")


class Trainer:
    def __init__(self, cfg: dict[str, Any], p: params.SFTParams | None = None) -> None:
        import torch
        import torch.distributed as dist

        self.cfg = cfg
        self.kind = cfg["kind"]
        model_cls = params.LoraParams if self.kind == "train.lora" else params.SFTParams
        # the params were checked at submit; the heavy checks (tokenizer, model structure) run again here
        self.p = p if p is not None else model_cls.model_validate(cfg["params"])
        self.out = Path(cfg["output_dir"])
        self.ckpt_root = Path(cfg["checkpoint_dir"])
        self.stop_flag = Path(cfg["stop_flag"])
        self.rank = int(os.environ.get("RANK", "0"))
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(self.local_rank)
            self.device = torch.device("cuda", self.local_rank)
        else:
            self.device = torch.device("cpu")
        if self.world > 1:
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.dist = dist if self.world > 1 else None
        self.torch = torch
        self.pad_to: int | None = None  # unpacked rows padded to this length (the benchmark's baseline)

    # ---- setup -------------------------------------------------------------------------------------------
    def say(self, msg: str) -> None:
        if self.rank == 0:
            print(f"[train] {msg}", flush=True)

    def setup(self) -> None:
        torch, p = self.torch, self.p
        random.seed(p.seed)
        np.random.seed(p.seed % 2**32)
        torch.manual_seed(p.seed)
        t0 = time.time()
        self.load_data()
        self.rows = modeling.rows_per_micro(p, self.device.type)
        self.plan = packing.make_plan(self.ds, p.packing, p.max_length, self.rows, self.world,
                                      p.gradient_accumulation_steps, p.seed)
        opts = p.trainer_options
        max_steps = opts.get("max_steps", p.max_steps)
        self.total = max_steps if max_steps and max_steps > 0 else max(
            1, math.ceil(p.num_train_epochs * self.plan.steps_per_epoch))
        fill = self.plan.tokens_per_bin.sum() / (len(self.plan.bins) * p.max_length) if p.packing else None
        self.say(f"data: {self.ds.stats['samples']} samples, {self.ds.stats['tokens']} tokens "
                 f"({self.ds.stats['loss_tokens']} trained) in {time.time() - t0:.1f}s; "
                 f"{len(self.plan.bins)} rows, {self.plan.steps_per_epoch} steps/epoch, {self.total} steps"
                 + (f", packing fill {fill:.3f}" if fill is not None else "")
                 + f"; dropped over max_length {self.ds.stats['dropped_overlong']}, truncated "
                   f"{self.ds.stats['truncated']}")
        self.packing_fill = fill
        self.model, self.attn = modeling.build(p, self.tokenizer, self.device.type)
        if not getattr(self.model, "hf_device_map", None) and not getattr(self.model, "is_loaded_in_4bit", False):
            self.model.to(self.device)
        self.autocast = modeling.autocast_dtype(p, self.device.type)
        self.precision = modeling.precision(p, self.device.type)
        self._optim()
        self.head = _fused_head(self.model) if p.fused_loss and self.engine is None else None
        self.compiled = modeling.compile_wanted(p, self.device.type)
        self.say(f"model: {sum(x.numel() for x in self.model.parameters()) / 1e6:.1f}M parameters, "
                 f"{sum(x.numel() for x in self.model.parameters() if x.requires_grad) / 1e6:.2f}M trained, "
                 f"attention {self.attn}, precision {self.precision}, "
                 f"{'compiled' if self.compiled else 'eager'} layers, "
                 f"{'chunked' if self.head is not None else 'plain'} cross-entropy, {self.rows} row(s) of "
                 f"{p.max_length} per micro-batch, {self.world} process(es) on {self.device.type}")

    def load_data(self) -> None:
        self.tokenizer = data.load_tokenizer(self.p)
        self.ds = data.build(self.p, self.tokenizer)

    def _optim(self) -> None:
        torch, p = self.torch, self.p
        from transformers import get_scheduler

        opts = p.trainer_options
        # bf16_master: the optimizer updates fp32 copies of the bf16 weights, which get the rounded result
        self.trained = [(n, x) for n, x in self.model.named_parameters() if x.requires_grad]
        self.masters = None
        if self.precision == "bf16_master" and not (p.deepspeed is not None and self.world > 1):
            self.masters = [x.detach().float() for _, x in self.trained]
        decay, no_decay = [], []
        for i, (name, prm) in enumerate(self.trained):
            target = self.masters[i] if self.masters is not None else prm
            (no_decay if prm.ndim < 2 or "norm" in name.lower() else decay).append(target)
        groups = [{"params": decay, "weight_decay": p.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        fused = self.device.type == "cuda" and opts.get("optim", "adamw_torch_fused") != "adamw_torch"
        self.optimizer = torch.optim.AdamW(groups, lr=p.learning_rate, betas=(opts.get("adam_beta1", 0.9),
                                           opts.get("adam_beta2", 0.999)), eps=opts.get("adam_epsilon", 1e-8),
                                           fused=fused or None)
        warmup = opts.get("warmup_steps") or math.ceil(p.warmup_ratio * self.total)
        self.scheduler = get_scheduler(p.lr_scheduler_type, self.optimizer, num_warmup_steps=warmup,
                                       num_training_steps=self.total,
                                       scheduler_specific_kwargs=opts.get("lr_scheduler_kwargs") or None)
        self.engine = None
        self.wrapped = self.model
        if p.deepspeed is not None and self.world > 1:
            try:
                import deepspeed
            except ImportError:
                deepspeed = None
                self.say("deepspeed is not installed: DistributedDataParallel instead")
            if deepspeed is not None:
                bf16 = self.precision in ("bf16", "bf16_master", "bf16_autocast")
                config = dsconfig.generate(p, p.deepspeed, self.world, bf16=bf16, rows=self.rows)
                self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
                    model=self.model, optimizer=self.optimizer, lr_scheduler=self.scheduler, config=config)
                self.wrapped = self.engine
                self.autocast = None  # DeepSpeed holds bf16 weights and fp32 masters itself
                return
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.local_rank] if self.device.type == "cuda" else None
            self.wrapped = DistributedDataParallel(self.model, device_ids=ids)
            from llmjobs.jobs.train import ddp_hooks

            ddp_hooks.register(self.wrapped)

    # ---- checkpoints -------------------------------------------------------------------------------------
    def _trainable_state(self) -> dict[str, Any]:
        if self.p.is_lora:
            return {k: v for k, v in self.model.state_dict().items() if "lora_" in k}
        state = self.model.state_dict()
        if self.masters is not None:  # the fp32 masters, not their bf16 roundings
            state.update({name: m for (name, _), m in zip(self.trained, self.masters)})
        return state

    def save(self, step: int, state: dict[str, Any]) -> None:
        torch = self.torch
        tag = f"{self.cfg['attempt']}"
        tmp = self.ckpt_root / f"{checkpoint.PREFIX}{step:08d}.tmp-{tag}"
        if self.rank == 0:
            tmp.mkdir(parents=True, exist_ok=True)
        self._barrier()
        if self.engine is not None:
            self.engine.save_checkpoint(str(tmp), tag="deepspeed")
        elif self.rank == 0:
            torch.save(self._trainable_state(), tmp / "model.pt")
            torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
        if self.rank == 0:
            torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
            (tmp / "trainer_state.json").write_text(json.dumps(state))
        rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state() if self.device.type == "cuda" else None}
        torch.save(rng, tmp / f"rng-{self.rank}.pt")
        self._barrier()
        if self.rank == 0:
            checkpoint.publish(self.ckpt_root, tmp, step, {"world": self.world, "kind": self.kind},
                               keep=self.p.trainer_options.get("save_total_limit", self.p.save_total_limit))
            self.say(f"checkpoint step {step} saved")
        self._barrier()

    def resume(self) -> dict[str, Any] | None:
        torch = self.torch
        found = checkpoint.latest(self.ckpt_root)
        if found is None:
            return None
        step, d = found
        if self.engine is not None:
            self.engine.load_checkpoint(str(d), tag="deepspeed")
        else:
            sd = torch.load(d / "model.pt", map_location=self.device, weights_only=True)
            missing = self.model.load_state_dict(sd, strict=not self.p.is_lora)
            del missing
            if self.masters is not None:
                with torch.no_grad():
                    for (name, prm), m in zip(self.trained, self.masters):
                        m.copy_(sd[name])
                        prm.copy_(m)
            self.optimizer.load_state_dict(torch.load(d / "optimizer.pt", map_location=self.device,
                                                      weights_only=False))
        self.scheduler.load_state_dict(torch.load(d / "scheduler.pt", weights_only=False))
        rng_file = d / f"rng-{self.rank}.pt"
        if rng_file.exists():
            rng = torch.load(rng_file, weights_only=False)
            random.setstate(rng["python"])
            np.random.set_state(rng["numpy"])
            torch.set_rng_state(rng["torch"])
            if rng.get("cuda") is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"])
        state = json.loads((d / "trainer_state.json").read_text())
        if state.get("world") != self.world:
            self.say(f"checkpoint written by {state.get('world')} process(es), resumed on {self.world}: the data "
                     "order from here on differs from an uninterrupted run")
        self.say(f"resumed from checkpoint step {step} ({d.name})")
        return state

    def _barrier(self) -> None:
        if self.dist is not None:
            self.dist.barrier()

    # ---- one optimizer step ------------------------------------------------------------------------------
    def _batch(self, bins: list[list[int]]) -> dict[str, Any]:
        """The micro-batch on the device, with what the loss needs computed on the host (the labelled
        positions, their targets), so that no step waits for the GPU to hand back a count or an index."""
        torch = self.torch
        if self.p.packing:
            b = packing.collate_packed(self.ds, bins)
        else:
            b = packing.collate_padded(self.ds, bins, self.tokenizer.pad_token_id, self.pad_to)
        labels = b.pop("labels")
        if labels.shape[0] == 1:
            # only the positions that carry a label go through the vocabulary projection
            keep = np.flatnonzero(labels[0] != data.IGNORE)
            b["logits_to_keep"], b["target"] = keep, labels[0, keep]
        else:
            b["target"] = labels.reshape(-1)
        cuda = self.device.type == "cuda"

        def put(v: Any) -> Any:
            t = torch.from_numpy(np.ascontiguousarray(v))
            return t.pin_memory().to(self.device, non_blocking=True) if cuda else t

        out = {k: put(v) for k, v in b.items() if k not in ("cu_seqlens", "max_seqlen")}
        if self.p.packing and self.attn in ("flash_attention_2", "flash_attention_3", "llmjobs_varlen"):
            cu = put(b["cu_seqlens"])
            out.update(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=int(b["max_seqlen"]),
                       max_length_k=int(b["max_seqlen"]))
        return out

    def _micro_loss(self, batch: dict[str, Any], denom: int) -> Any:
        torch = self.torch
        target = batch.pop("target")
        kwargs: dict[str, Any] = {"use_cache": False}
        ctx = (torch.autocast(self.device.type, dtype=self.autocast) if self.autocast is not None
               else _nullcontext())
        if self.head is not None:  # the model hands back its final hidden states; no logits tensor
            with ctx, fused_loss.projection_skipped(self.head):
                hidden = self.wrapped(**batch, **kwargs).logits
            hidden = hidden.reshape(-1, hidden.shape[-1])
            loss_sum = fused_loss.linear_cross_entropy_sum(hidden, self.head.weight, target, self.autocast,
                                                           compiled=self.compiled)
        else:
            with ctx:
                logits = self.wrapped(**batch, **kwargs).logits
            logits = logits.reshape(-1, logits.shape[-1])
            loss_sum = torch.nn.functional.cross_entropy(logits.float(), target, ignore_index=data.IGNORE,
                                                         reduction="sum")
        # token mean over the whole step; DDP/DeepSpeed average gradients over ranks, hence x world
        return loss_sum * (self.world / denom)

    def step(self, step: int) -> Any:
        """One optimizer step; returns the step's mean loss as a device tensor (reading it waits for the GPU)."""
        torch, p = self.torch, self.p
        denom = self.plan.step_loss_tokens(step)
        total = torch.zeros((), device=self.device, dtype=torch.float64)
        accum = p.gradient_accumulation_steps
        for m in range(accum):
            batch = self._batch(self.plan.micro(step, self.rank, m))
            last = m == accum - 1
            if self.engine is not None:
                loss = self._micro_loss(batch, denom)
                self.engine.backward(loss, scale_wrt_gas=False)
                self.engine.step()
            else:
                sync = _nullcontext() if last or self.world == 1 else self.wrapped.no_sync()
                with sync:
                    loss = self._micro_loss(batch, denom)
                    loss.backward()
            total += loss.detach().double() / self.world
        if self.engine is None:
            if self.masters is not None:  # bf16 gradients to the fp32 masters (freed as they go)
                for (_, prm), m in zip(self.trained, self.masters):
                    m.grad = prm.grad.float() if prm.grad is not None else None
                    prm.grad = None
            if p.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(self.masters or self.model.parameters(), p.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            if self.masters is not None:
                with torch.no_grad():
                    torch._foreach_copy_([x for _, x in self.trained], self.masters)
        if self.dist is not None:
            self.dist.all_reduce(total)
        return total

    def should_stop(self) -> bool:
        flag = 1.0 if self.rank == 0 and self.stop_flag.exists() else 0.0
        if self.dist is None:
            return bool(flag)
        t = self.torch.tensor([flag], device=self.device)
        self.dist.all_reduce(t, op=self.dist.ReduceOp.MAX)
        return bool(t.item())

    # ---- the run -----------------------------------------------------------------------------------------
    def run(self) -> int:
        self.setup()
        state = self.resume() or {"step": 0, "history": [], "train_seconds": 0.0, "tokens": 0}
        start = state["step"]
        before = state["train_seconds"]  # training time of earlier attempts
        metrics = MetricsLog(state["history"])
        fl = flops_per_step(self.model, self.ds)
        peak = peak_flops(self.device)
        logging_steps = self.p.trainer_options.get("logging_steps", self.p.logging_steps)
        t_start = time.time()
        window_t, window_tok = time.time(), 0
        if self.device.type == "cuda":
            self.torch.cuda.reset_peak_memory_stats()
        step = start
        pending: list[tuple[int, Any, float, int]] = []  # steps whose loss is still on the device

        def flush() -> None:  # reading the losses waits for the GPU: only at log lines and checkpoints
            for done, loss_t, lr, tokens in pending:
                metrics.add(done, float(loss_t), lr, tokens)
            pending.clear()

        while step < self.total:
            loss_t = self.step(step)
            step += 1
            tokens = self.plan.step_tokens(step - 1)
            window_tok += tokens
            state["tokens"] += tokens
            pending.append((step, loss_t, self.scheduler.get_last_lr()[0], tokens))
            if step % logging_steps == 0 or step == self.total:
                flush()
                loss = metrics.history[-1]["loss"]
                dt = time.time() - window_t
                tps = window_tok / dt if dt > 0 else 0.0
                eta = (time.time() - t_start) / (step - start) * (self.total - step)
                mfu = f" mfu {fl(tps / self.world) / peak:.3f}" if peak else ""
                self.say(f"step {step}/{self.total} loss {loss:.4f} lr {self.scheduler.get_last_lr()[0]:.3e} "
                         f"tokens/s {tps:,.0f}{mfu} eta {_hms(eta)}")
                window_t, window_tok = time.time(), 0
            stop = self.should_stop()
            if stop or (step % self.p.save_steps == 0 and step < self.total):
                flush()
                state.update(step=step, history=metrics.history, world=self.world,
                             train_seconds=before + time.time() - t_start)
                self.save(step, state)
                if stop:
                    self.say(f"stop requested: checkpoint step {step} written; exiting for the requeue")
                    self._write_status({"state": "interrupted", "step": step})
                    return 0
        self.finish(metrics, state, before + time.time() - t_start, fl, peak)
        return 0

    def _write_status(self, status: dict[str, Any]) -> None:
        if self.rank == 0:
            path = Path(self.cfg["status_file"])
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(status))
            os.replace(tmp, path)

    def finish(self, metrics: MetricsLog, state: dict[str, Any], seconds: float, fl: Any, peak: float | None) -> None:
        self._barrier()
        full_state = None
        if self.engine is not None and self.p.deepspeed and self.p.deepspeed.zero == 3:
            full_state = self.engine._zero3_consolidated_16bit_state_dict()
        peak_mem = self.torch.cuda.max_memory_allocated() / 2**30 if self.device.type == "cuda" else None
        agree = self.ranks_agree() if full_state is None else None
        if self.rank == 0:
            from llmjobs.jobs.train import outputs

            tps = state["tokens"] / seconds if seconds > 0 else 0.0
            summary = {
                "kind": self.kind, "steps": self.total, "final_loss": metrics.history[-1]["loss"],
                "first_loss": metrics.history[0]["loss"], "tokens": state["tokens"], "train_seconds": seconds,
                "tokens_per_s": tps, "real_token_share": self.real_token_share(),
                "packing_fill": self.packing_fill, "mfu": fl(tps / self.world) / peak if peak else None,
                "gpu_hours": seconds * self.world / 3600 if self.device.type == "cuda" else 0.0,
                "peak_memory_gib": peak_mem, "processes": self.world, "attention": self.attn,
                "samples": self.ds.stats["samples"], "samples_dropped_overlong": self.ds.stats["dropped_overlong"],
                "samples_truncated": self.ds.stats["truncated"],
                "samples_dropped_no_loss_tokens": self.ds.stats["dropped_no_loss_tokens"],
                "ranks_agree": agree,
            }
            outputs.save_model(self, full_state)
            outputs.write_metrics(self.out, summary, metrics.history, self.ds.stats)
            self._write_status({"state": "done", "result": summary})
            self.say(f"done: {self.total} steps, loss {summary['first_loss']:.4f} -> {summary['final_loss']:.4f}, "
                     f"{tps:,.0f} tokens/s; model in {self.out}")
        self._barrier()

    def ranks_agree(self) -> bool:
        """Every rank ends with the same trained weights (a checksum gathered from all ranks)."""
        torch = self.torch
        with torch.no_grad():
            total = sum(float(x.double().sum()) for x in self.model.parameters() if x.requires_grad)
        if self.dist is None:
            return True
        sums = [None] * self.world
        self.dist.all_gather_object(sums, total)
        return all(abs(s - sums[0]) <= 1e-6 * max(1.0, abs(sums[0])) for s in sums)

    def real_token_share(self) -> float:
        if self.p.packing:
            return 1.0  # padding-free: every computed token is a real one
        lengths = self.ds.lengths
        if self.pad_to:
            return float(lengths.sum() / (len(lengths) * self.pad_to))
        bs = self.rows
        padded = sum(max(lengths[[d for b in self.plan.bins[i:i + bs] for d in b]]) * bs
                     for i in range(0, len(self.plan.bins), bs))
        return float(lengths.sum() / padded)


# model types whose logits are exactly lm_head(final hidden states): no soft-capping or scaling after it
FUSABLE = ("llama", "mistral", "qwen2", "qwen3", "phi3", "olmo2")


def _fused_head(model: Any) -> Any:
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in FUSABLE:
        return None
    return fused_loss.fusable_head(model)


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: object) -> None:
        return None


def _hms(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def main(argv: list[str]) -> int:
    detach_from_walltime_signal()
    logging.basicConfig(level=logging.WARNING)
    cfg = json.loads(Path(argv[0]).read_text())
    trainer = Trainer(cfg)
    try:
        return trainer.run()
    finally:
        if trainer.dist is not None and trainer.dist.is_initialized():
            trainer.dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
