"""Grading throughput in answers/s: the grader with its cache against the same grader without it, one run.

    python bench/grading_throughput.py [--problems 100] [--samples 16] [--workers N] [--data DIR]

Workload: self-consistency-like samples for the first MATH-500 problems. Each sample's answer is, with
probability 0.6, the gold written one of three ways (the answer text, the last \\boxed{} of the reference
solution, the answer in $...$), else one of three wrong answers (other problems' answers) -- so answers repeat
within a problem as they do when a model samples 16-40 times. Seeded, identical in both runs.

Baseline: ``Grader(cache=False, same_text=False)``: every (gold, answer) pair is parsed and verified by
math-verify in the process pool. Cached: ``Grader()`` as ``llmjobs grade`` uses it (cold cache, identical
strings after cleaning decided without math-verify, repeated pairs answered from the cache). Both on the same
number of pool workers. Then the whole ``grade_samples`` (extraction, grading under both unclosed-reasoning
policies, voting with equivalence checks, metrics; no report files) on the same samples.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

from llmjobs.jobs.eval.answers import extract_answer
from llmjobs.jobs.eval.data import load_problems
from llmjobs.jobs.eval.grading import Grader
from llmjobs.jobs.eval.score import grade_samples

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def workload(data: Path, problems: int, samples: int) -> tuple[list[tuple[str, str]], list[dict]]:
    rng = random.Random(0)
    ps = load_problems(data / "math500_test.jsonl", preset="math500", limit=problems)
    all_answers = [p.answer for p in load_problems(data / "math500_test.jsonl", preset="math500")]
    pairs, records = [], []
    for p in ps:
        forms = [p.answer, extract_answer(p.extra["solution"]).answer or p.answer, f"${p.answer}$"]
        wrong = rng.sample([a for a in all_answers if a != p.answer], 3)
        for s in range(samples):
            answer = rng.choice(forms) if rng.random() < 0.6 else rng.choice(wrong)
            pairs.append((p.answer, answer))
            records.append({"id": p.id, "sample": s, "answer": p.answer,
                            "output": f"<think>...</think>The answer is \\boxed{{{answer}}}."})
    return pairs, records


def timed_grading(pairs: list[tuple[str, str]], workers: int, **options) -> tuple[float, Grader]:
    grader = Grader(workers=workers, timeout_s=10.0, **options)
    try:
        grader.grade("1", "2")  # start the pool outside the timing
        grader.stats = type(grader.stats)()
        if grader.cache is not None:
            grader.cache.clear()
        start = time.perf_counter()
        grader.grade_many(pairs)
        return time.perf_counter() - start, grader
    finally:
        grader.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", type=int, default=100)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("LLMJOBS_TEST_DATA", DATA)))
    args = ap.parse_args()

    pairs, records = workload(args.data, args.problems, args.samples)
    n = len(pairs)
    print(f"{args.problems} MATH-500 problems x {args.samples} samples = {n} answers, {args.workers} workers")

    base_s, base = timed_grading(pairs, args.workers, cache=False, same_text=False)
    print(f"without cache : {n / base_s:8.1f} answers/s  ({base_s:.2f} s, {base.stats.verified} math-verify calls)")
    cached_s, cached = timed_grading(pairs, args.workers)
    st = cached.stats
    print(f"with cache    : {n / cached_s:8.1f} answers/s  ({cached_s:.2f} s, {st.verified} math-verify calls, "
          f"{st.cache_hits} cache hits, {st.same_text} identical after cleaning)")
    print(f"ratio with/without cache: {base_s / cached_s:.1f}x")

    start = time.perf_counter()
    res = grade_samples(records, None, None, workers=args.workers, plot=False)
    full_s = time.perf_counter() - start
    print(f"grade_samples : {n / full_s:8.1f} answers/s  ({full_s:.2f} s incl. pool start, both policies, voting; "
          f"maj@{args.samples} {100 * res['majority_accuracy']:.1f}%)")


if __name__ == "__main__":
    main()
