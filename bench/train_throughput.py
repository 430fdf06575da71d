"""Training throughput on one GPU: llmjobs train.sft defaults vs padding every sample to max_length (and LoRA).

A random-init model shaped like llm-jp-3-1.8b (vocab 99,584, hidden 2,048, intermediate 7,168, 24 layers,
16 heads) trained on random tokens with a CoT-like length mix (lognormal, mean ~1.5k, capped at 4,096).
Each configuration runs the llmjobs training loop itself (``worker.Trainer.step``) for a few warm-up steps,
then N timed steps; it prints real (non-pad) tokens/s, MFU against the dense bf16 peak, peak memory, and
ratios against the padded baseline measured in the same run. Before timing, the packed varlen path is
checked for leaks on a small model (packed per-token losses == documents run alone).

    python bench/train_throughput.py                    # (a) llmjobs defaults, (c) padded to max_length
    python bench/train_throughput.py --modes sft,sft_prev,padded,lora --steps 10
    python bench/train_throughput.py --shape tiny --steps 2 --samples 200   # a CPU rehearsal (no leak check)

Modes: ``sft`` the defaults (on a GPU: bf16 weights with fp32 masters, a token budget per micro-batch from the
GPU's memory (32,768 on an H200), chunked cross-entropy, compiled decoder layers); ``sft_16k`` the defaults
with 4 rows (16,384 tokens, the budget of an 80 GiB GPU before the memory-scaled budget); ``sft_eager`` the defaults without torch.compile; ``sft_prev`` the defaults before those (fp32 weights under bf16 autocast, one 4,096-token row,
plain cross-entropy over full logits); ``sft_bf16`` pure bf16 weights; ``sft_32k`` 8 rows (32,768 tokens);
``sft_bf16_bs4`` / ``sft_bs4``: 4 rows with pure bf16 / previous precision; ``padded`` one sample per
micro-batch padded to max_length (sdpa with the padding mask); ``lora`` the train.lora defaults with
r/alpha 2r (``--lora-r``, 64) on every linear layer, ``lora_eager`` without torch.compile, ``qlora`` over a
4-bit base (needs bitsandbytes); ``trl`` TRL's SFTTrainer configured as its documentation shows, ``trl_lora``
the same with a peft LoraConfig of the same rank (needs trl and datasets).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPES = {
    "llm-jp-3-1.8b": {"vocab_size": 99584, "hidden_size": 2048, "intermediate_size": 7168,
                      "num_hidden_layers": 24, "num_attention_heads": 16, "num_key_value_heads": 16},
    "13b": {"vocab_size": 99584, "hidden_size": 5120, "intermediate_size": 13824, "num_hidden_layers": 40,
            "num_attention_heads": 40, "num_key_value_heads": 40},
    "tiny": {"vocab_size": 1024, "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 4},
}


class FakeTokenizer:
    """What the loop asks of a tokenizer when the data is already token ids."""

    def __init__(self, vocab: int) -> None:
        self.vocab = vocab
        self.pad_token_id, self.bos_token_id, self.eos_token_id = 0, 1, 2

    def __len__(self) -> int:
        return self.vocab


def synthetic(n: int, vocab: int, max_length: int, seed: int = 0):
    from llmjobs.jobs.train.data import IGNORE, Dataset

    rng = np.random.default_rng(seed)
    sigma = 0.8
    lengths = rng.lognormal(np.log(1650) - sigma**2 / 2, sigma, n).astype(np.int64)
    lengths = np.clip(lengths, 32, max_length)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    tokens = rng.integers(3, vocab, int(offsets[-1]), dtype=np.int32)
    labels = np.full_like(tokens, IGNORE)
    for i in range(n):
        a, b = offsets[i], offsets[i + 1]
        labels[a:b - 1] = tokens[a + 1:b]
    return Dataset(tokens, labels, offsets, {"samples": n, "tokens": int(offsets[-1]),
                                             "loss_tokens": int((labels != IGNORE).sum()), "sources": [],
                                             "dropped_overlong": 0, "truncated": 0, "dropped_no_loss_tokens": 0})


def make_trainer(mode: str, shape: dict[str, Any], args: argparse.Namespace):
    import torch

    from llmjobs.jobs.train import params, worker

    common = {"init": params.InitSpec(config={"model_type": "llama", "max_position_embeddings": 8192,
                                             "tie_word_embeddings": False, **shape}, tokenizer="none"),
              "data": [], "max_length": args.max_length, "max_steps": args.warmup + args.steps,
              "save_steps": 10**9, "logging_steps": 10**9}
    lora = {"r": args.lora_r, "alpha": 2 * args.lora_r, "dropout": 0.05}
    if mode == "lora":  # r/2r on every linear layer, bf16 base and adapters (the defaults)
        p = params.LoraParams.model_construct(**common, **lora)
    elif mode == "lora_eager":
        p = params.LoraParams.model_construct(**common, **lora, torch_compile=False)
    elif mode == "qlora":  # the same adapters over a 4-bit nf4 base (double quant), loaded from a saved model
        common.pop("init")
        p = params.LoraParams.model_construct(**common, **lora, quantize="4bit", model=saved_model(shape, args))
    elif mode == "sft_eager":  # the defaults without torch.compile
        p = params.SFTParams.model_construct(**common, torch_compile=False)
    elif mode == "padded":  # every sample padded to max_length, one per micro-batch, sdpa with the padding mask
        p = params.SFTParams.model_construct(**common, packing=False, attn_implementation="sdpa",
                                             per_device_train_batch_size=1)
    elif mode == "sft_prev":  # the defaults before bf16_master, the token budget and the chunked loss
        p = params.SFTParams.model_construct(**common, precision="bf16_autocast", per_device_train_batch_size=1,
                                             fused_loss=False)
    elif mode == "sft_bf16":  # pure bf16 weights (precision: bf16)
        p = params.SFTParams.model_construct(**common, precision="bf16")
    elif mode == "sft_16k":  # the defaults with 4 packed rows (16k tokens) per micro-batch
        p = params.SFTParams.model_construct(**common, per_device_train_batch_size=4)
    elif mode == "sft_32k":  # the defaults with 8 packed rows (32k tokens) per micro-batch
        p = params.SFTParams.model_construct(**common, per_device_train_batch_size=8)
    elif mode == "sft_bf16_bs4":
        p = params.SFTParams.model_construct(**common, precision="bf16", per_device_train_batch_size=4)
    elif mode == "sft_bs4":  # the previous precision with 4 packed rows (16k tokens) per micro-batch
        p = params.SFTParams.model_construct(**common, precision="bf16_autocast", per_device_train_batch_size=4)
    else:  # what a user gets: the defaults
        p = params.SFTParams.model_construct(**common)
    cfg = {"kind": "train.lora" if "lora" in mode else "train.sft", "output_dir": args.out,
           "checkpoint_dir": args.out, "stop_flag": "/nonexistent", "status_file": "/dev/null", "attempt": 1}

    class BenchTrainer(worker.Trainer):
        def load_data(self) -> None:
            self.tokenizer = FakeTokenizer(shape["vocab_size"])
            self.ds = synthetic(args.samples, shape["vocab_size"], args.max_length)

    t = BenchTrainer(cfg, p)
    if mode == "padded":
        t.pad_to = args.max_length
    with torch.device(DEVICE):  # build the random model on the GPU directly
        t.setup()
    return t


DEVICE = "cpu"


def saved_model(shape: dict[str, Any], args: argparse.Namespace) -> str:
    """A random-init bf16 model of the shape saved to disk once (QLoRA quantizes while loading)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    path = Path(args.out) / "base"
    if not (path / "config.json").exists():
        config = LlamaConfig(**shape, max_position_embeddings=8192, tie_word_embeddings=False, pad_token_id=0,
                             bos_token_id=1, eos_token_id=2)
        torch.manual_seed(0)
        with torch.device(DEVICE):
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        model.save_pretrained(path)
        del model
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    return str(path)


def sync() -> None:
    import torch

    if DEVICE == "cuda":
        torch.cuda.synchronize()


def measure(mode: str, shape: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from llmjobs.jobs.train.metrics import flops_per_token

    cuda = DEVICE == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t = make_trainer(mode, shape, args)
    for s in range(args.warmup):
        t.step(s)
    sync()
    if args.profile:
        profile(t, args.warmup)
    start, tokens = time.time(), 0
    for s in range(args.warmup, args.warmup + args.steps):
        loss = t.step(s)
        tokens += t.plan.step_tokens(s)
    sync()
    dt = time.time() - start
    tps = tokens / dt
    per_token = flops_per_token(t.model, t.ds.lengths)
    out = {"mode": mode, "attention": t.attn, "precision": t.precision, "rows": t.rows,
           "loss_path": "chunked" if t.head is not None else "plain", "tokens_per_s": tps,
           "mfu": tps * per_token / 989e12, "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else 0,
           "loss": float(loss), "steps": args.steps, "tokens": tokens, "seconds": dt,
           "real_token_share": t.real_token_share(), "packing_fill": t.packing_fill}
    del t
    if cuda:
        torch.cuda.empty_cache()
    return out


def profile(t: Any, step: int, steps: int = 3) -> None:
    """Where the GPU time of a few optimizer steps goes: the kernels and operators with the most device time."""
    import torch
    from torch.profiler import ProfilerActivity

    with torch.profiler.profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for s in range(step, step + steps):
            t.step(s)
        sync()
    print(prof.key_averages().table(sort_by="self_device_time_total", row_limit=30, max_name_column_width=70),
          flush=True)


def measure_trl(shape: dict[str, Any], args: argparse.Namespace, lora: bool = False) -> dict[str, Any]:
    """(b) TRL's SFTTrainer as its documentation shows it: packing on, bf16, its default gradient checkpointing
    and per-device batch (8 packed rows), the attention implementation installed by default (sdpa).
    ``lora``: with a peft ``LoraConfig`` (r, 2r, dropout 0.05, all linear layers) as ``peft_config``; TRL then
    sets up peft's defaults (an fp32 model, as TRL loads a model id by default, fp32 adapters, bf16 autocast)."""
    import torch
    from datasets import Dataset as HFDataset
    from tokenizers import Tokenizer, models
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from llmjobs.jobs.train.metrics import flops_per_token

    cuda = DEVICE == "cuda"
    ds = synthetic(args.trl_samples, shape["vocab_size"], args.max_length)
    rows = [{"input_ids": ds.tokens[ds.offsets[i]:ds.offsets[i + 1]].tolist()} for i in range(len(ds))]
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")),
                                  pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    config = LlamaConfig(**shape, max_position_embeddings=8192, tie_word_embeddings=False, pad_token_id=0,
                         bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    with torch.device(DEVICE):
        model = AutoModelForCausalLM.from_config(config)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    marks: list[tuple[float, int]] = []

    class Clock(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            sync()
            marks.append((time.time(), int(state.num_input_tokens_seen)))

    cfg = SFTConfig(output_dir=args.out + "/trl", packing=True, max_length=args.max_length, bf16=cuda,
                    use_cpu=not cuda, max_steps=args.warmup + args.trl_steps, save_strategy="no", report_to="none",
                    logging_steps=10**9, disable_tqdm=True, include_num_input_tokens_seen="non_padding")
    peft_config = None
    if lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.05,
                                 target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=HFDataset.from_list(rows), processing_class=tok,
                         callbacks=[Clock()], peft_config=peft_config)
    trainer.train()
    (t0, n0), (t1, n1) = marks[args.warmup - 1], marks[-1]
    tps = (n1 - n0) / (t1 - t0)
    per_token = flops_per_token(model, ds.lengths)
    out = {"mode": "trl_lora" if lora else "trl", "attention": model.config._attn_implementation,
           "precision": "bf16 (TRL)",
           "rows": cfg.per_device_train_batch_size, "loss_path": "TRL", "tokens_per_s": tps,
           "mfu": tps * per_token / 989e12,
           "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else 0, "steps": args.trl_steps,
           "tokens": n1 - n0, "seconds": t1 - t0, "gradient_checkpointing": cfg.gradient_checkpointing}
    del trainer, model
    if cuda:
        torch.cuda.empty_cache()
    return out


def leak_check() -> dict[str, Any]:
    """Packed rows with the varlen kernel: per-token losses equal the documents run one by one."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from llmjobs.jobs.train import attention, modeling, packing

    attention.register()
    cfg = LlamaConfig(**SHAPES["tiny"], max_position_embeddings=4096)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attention.VARLEN,
                                             dtype=torch.bfloat16).cuda().eval()
    modeling.compile_layers(model)  # the defaults compile the layers: check the compiled path
    ds = synthetic(6, SHAPES["tiny"]["vocab_size"], 512, seed=1)

    def losses(b):

        cu = torch.from_numpy(b["cu_seqlens"]).cuda()
        kw = {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": int(b["max_seqlen"]),
                  "max_length_k": int(b["max_seqlen"])}
        with torch.no_grad():
            logits = model(input_ids=torch.from_numpy(b["input_ids"]).cuda(),
                           position_ids=torch.from_numpy(b["position_ids"]).cuda(), use_cache=False, **kw).logits
        return torch.nn.functional.cross_entropy(logits[0].float(), torch.from_numpy(b["labels"][0]).cuda(),
                                                 reduction="none", ignore_index=-100)

    packed = losses(packing.collate_packed(ds, [list(range(6))]))
    alone = torch.cat([losses(packing.collate_packed(ds, [[i]])) for i in range(6)])
    diff = float((packed - alone).abs().max())
    return {"varlen_packed_vs_alone_max_abs_diff": diff, "leak_free": diff < 2e-2}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="llm-jp-3-1.8b", choices=sorted(SHAPES))
    ap.add_argument("--modes", default="sft,padded")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--samples", type=int, default=4000)
    ap.add_argument("--max-length", type=int, default=4096)
    ap.add_argument("--trl-samples", type=int, default=600, help="samples TRL packs (mode trl)")
    ap.add_argument("--trl-steps", type=int, default=6, help="timed steps of mode trl (8 rows each)")
    ap.add_argument("--lora-r", type=int, default=64, help="LoRA rank of modes lora*, qlora, trl_lora (alpha 2r)")
    ap.add_argument("--profile", action="store_true", help="print where the device time of 3 steps goes "
                    "(after the warm-up, before timing; modes of the llmjobs loop)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    args.out = tempfile.mkdtemp()
    import torch
    import transformers

    global DEVICE
    DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name() if DEVICE == "cuda" else "CPU"
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {name}", flush=True)
    results: dict[str, Any] = {"shape": args.shape, "device": name}
    if DEVICE == "cuda":  # the varlen kernel is CUDA-only
        results["leak_check"] = leak_check()
        print(json.dumps(results["leak_check"]), flush=True)
    for mode in args.modes.split(","):
        try:
            if mode in ("trl", "trl_lora"):
                r = measure_trl(SHAPES[args.shape], args, lora=mode == "trl_lora")
            else:
                r = measure(mode, SHAPES[args.shape], args)
        except Exception as e:  # noqa: BLE001 - report and go on with the other modes
            r = {"mode": mode, "error": f"{type(e).__name__}: {e}"[:500]}
        results[mode] = r
        print(json.dumps(r), flush=True)
    base = results.get("padded", {}).get("tokens_per_s")
    trl = {m: results.get(m, {}).get("tokens_per_s") for m in ("trl", "trl_lora")}
    for mode in args.modes.split(","):
        r = results[mode]
        if "tokens_per_s" in r:
            ratio = f"{r['tokens_per_s'] / base:.2f}x padded" if base else ""
            ref = trl["trl_lora"] if "lora" in mode else trl["trl"]
            if ref and not mode.startswith("trl"):
                ratio += f"  {r['tokens_per_s'] / ref:.2f}x {'trl_lora' if 'lora' in mode else 'trl'}"
            print(f"{mode:12s} {r['attention']:15s} {r['precision']:13s} {r['rows']} row(s) {r['loss_path']:7s} "
                  f"{r['tokens_per_s']:>10,.0f} tokens/s  MFU {r['mfu']:.3f}  peak {r['peak_mem_gib']:.1f} GiB  "
                  f"{ratio}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
