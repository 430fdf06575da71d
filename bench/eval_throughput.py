"""Generation throughput: raw ``vllm.LLM.generate`` against the llmjobs eval path, same prompts, same engine.

Both sides use one vLLM engine (started once), the same rendered prompts, ``SamplingParams(n=N)`` with the
same per-prompt seeds (none on vLLM's CPU build, which cannot take them) and max_tokens. The llmjobs side adds what evaluation needs: planning the missing
(problem, sample) pairs, chunking, and streaming every sample to JSONL with a flush and fsync per chunk.
Prints generated tokens/s of each side and their ratio (goal: >= 0.95). Rounds alternate the two sides
after a warm-up, so neither side gets the cold start.

    python bench/eval_throughput.py                          # tiny random Llama built on the spot (CPU)
    python bench/eval_throughput.py --model DIR --problems 250 --samples 16 --max-tokens 1024   # a real model
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tiny_model(data: Path) -> Path:
    spec = importlib.util.spec_from_file_location("gen_fixtures", ROOT / "tests/eval/generation/conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.build_tiny_llama(Path(tempfile.mkdtemp(prefix="tiny-llama-")), data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model directory (default: build the tiny test Llama)")
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/mgsm_ja.tsv"))
    ap.add_argument("--preset", default="mgsm_ja")
    ap.add_argument("--template", default="ja_instruction")
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--chunk", type=int, default=None, help="problems per engine call (default: the pool's)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--eager", action="store_true", help="enforce_eager (skip torch.compile)")
    args = ap.parse_args()

    from transformers import AutoTokenizer
    from vllm import SamplingParams

    from llmjobs.jobs.engines.vllm_engine import VLLMEngine
    from llmjobs.jobs.eval.data import load_problems
    from llmjobs.jobs.eval.generate import EngineSpec, Sampling, generate, request_seed
    from llmjobs.jobs.eval.prompts import render_prompt

    model = args.model or str(tiny_model(Path(args.data)))
    tokenizer = AutoTokenizer.from_pretrained(model)
    problems = load_problems(args.data, preset=args.preset, limit=args.problems)
    items = [(p.id, render_prompt(p, args.template, tokenizer)) for p in problems]
    sampling = Sampling(samples=args.samples, temperature=args.temperature, top_p=args.top_p,
                        max_tokens=args.max_tokens, seed=0)
    engine = VLLMEngine(model, max_model_len=None if args.model else 512,
                        llm_options={"enforce_eager": True} if args.eager else None)

    prompts = [p for _, p in items]
    raw_params = [SamplingParams(n=args.samples, temperature=args.temperature, top_p=args.top_p,
                                 max_tokens=args.max_tokens,
                                 seed=request_seed(0, pid) if engine.per_request_seeds else None)
                  for pid, _ in items]

    def raw() -> tuple[int, float]:
        start = time.perf_counter()
        outs = engine.llm.generate(prompts, raw_params, use_tqdm=False)
        return sum(len(c.token_ids) for o in outs for c in o.outputs), time.perf_counter() - start

    def llmjobs_path() -> tuple[int, float]:
        out = Path(tempfile.mkdtemp(prefix="bench-eval-"))
        try:
            start = time.perf_counter()
            stats = generate(items, out, sampling, EngineSpec(engine="vllm", model=model), chunk=args.chunk,
                             engine=engine)
            return stats["generated_tokens"], time.perf_counter() - start
        finally:
            shutil.rmtree(out, ignore_errors=True)

    raw()  # warm-up: first batches pay one-off costs
    totals = {"raw": [0, 0.0], "llmjobs": [0, 0.0]}
    for r in range(args.rounds):
        order = [("raw", raw), ("llmjobs", llmjobs_path)]
        for name, fn in order if r % 2 == 0 else order[::-1]:
            tokens, seconds = fn()
            totals[name][0] += tokens
            totals[name][1] += seconds
            print(f"round {r + 1} {name:8s} {tokens:8d} tokens {seconds:8.2f} s {tokens / seconds:10.1f} tok/s")
    rate = {k: t / s for k, (t, s) in totals.items()}
    print(f"\n{len(items)} problems x {args.samples} samples, max_tokens {args.max_tokens}, "
          f"{os.cpu_count()} CPUs, model {'tiny test Llama' if not args.model else model}")
    print(f"raw vllm.LLM.generate : {rate['raw']:10.1f} generated tokens/s")
    print(f"llmjobs eval path     : {rate['llmjobs']:10.1f} generated tokens/s")
    print(f"ratio llmjobs / raw   : {rate['llmjobs'] / rate['raw']:.3f}  (goal >= 0.95)")
    engine.close()


if __name__ == "__main__":
    main()
