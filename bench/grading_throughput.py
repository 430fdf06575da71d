"""Grading throughput in answers/s: the grader's fast path against math-verify called plainly in one process.

    python bench/grading_throughput.py [--problems 100] [--samples 16] [--workers N] [--data DIR]

Workload: self-consistency-like samples for the first MATH-500 problems. Each sample's answer is, with
probability 0.6, the gold written one of three ways (the answer text, the last \\boxed{} of the reference
solution, the answer in $...$), else one of three wrong answers -- so answers repeat within a problem as they
do when a model samples 16-40 times. Wrong answers (``--wrong``): ``near`` (default) are a model's typical
misses: for an integer gold the gold +-1 and twice it, for any other gold other problems' answers; ``other``
are always other problems' answers (intervals against integers and the like: the costliest pairs for
math-verify's parser). Seeded, identical in every run.

Baseline: math-verify called plainly in this process, ``verify(parse(gold), parse(answer))`` for every pair
(the strings cleaned as the grader cleans them; no timeout; its LaTeX parser warmed as the grader's workers
are). Then on the same pairs and the same number of pool workers (pool started outside the timing):
- one pair per pool task, no cache (how the grader worked before batching);
- ``Grader()`` as ``llmjobs grade`` uses it: cold cache, identical strings decided without math-verify,
  repeated pairs answered from the cache, the rest sent in batches grouped by gold with the per-item timeout;
- the whole ``grade_samples`` (extraction, grading under both unclosed-reasoning policies, voting with
  equivalence checks, metrics; no report files), pool start included.
Verdicts of the fast path are checked against the plain ones (they must agree).

Besides wall time, each line gives the CPU seconds spent (this process and its pool workers), because on a
shared machine the wall time mostly says how many other processes wanted the same cores: answers per
CPU-second is the cost, and ``--workers`` busy cores turn it into answers/s.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

from llmjobs.jobs.eval.answers import clean_answer, extract_answer
from llmjobs.jobs.eval.data import load_problems
from llmjobs.jobs.eval.grading import Grader, warm_up
from llmjobs.jobs.eval.score import grade_samples

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def wrong_answers(gold: str, others: list[str], rng: random.Random, kind: str) -> list[str]:
    if kind == "near" and gold.lstrip("-").isdigit():
        g = int(gold)
        return [str(g + 1), str(g - 1), str(2 * g)]
    return rng.sample([a for a in others if a != gold], 3)


def workload(data: Path, problems: int, samples: int, wrong_kind: str = "near") -> tuple[list[tuple[str, str]], list[dict]]:
    rng = random.Random(0)
    ps = load_problems(data / "math500_test.jsonl", preset="math500", limit=problems)
    all_answers = [p.answer for p in load_problems(data / "math500_test.jsonl", preset="math500")]
    pairs, records = [], []
    for p in ps:
        forms = [p.answer, extract_answer(p.extra["solution"]).answer or p.answer, f"${p.answer}$"]
        wrong = wrong_answers(p.answer, all_answers, rng, wrong_kind)
        for s in range(samples):
            answer = rng.choice(forms) if rng.random() < 0.6 else rng.choice(wrong)
            pairs.append((p.answer, answer))
            records.append({"id": p.id, "sample": s, "answer": p.answer,
                            "output": f"<think>...</think>The answer is \\boxed{{{answer}}}."})
    return pairs, records


def cpu_seconds() -> float:
    """CPU time of this process and every process under it (the forkserver and the pool's workers)."""
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


CPU: dict[str, float] = {}


def plain_math_verify(pairs: list[tuple[str, str]]) -> tuple[float, list[bool]]:
    from math_verify import parse, verify

    warm_up()  # the same warm parser tables the grader's workers start with
    cpu = cpu_seconds()
    start = time.perf_counter()
    out = [bool(verify(parse(f"${clean_answer(g)}$", parsing_timeout=None),
                       parse(f"${clean_answer(a)}$", parsing_timeout=None), timeout_seconds=None))
           for g, a in pairs]
    wall = time.perf_counter() - start
    CPU["plain"] = cpu_seconds() - cpu
    return wall, out


def timed_grading(pairs: list[tuple[str, str]], workers: int, **options) -> tuple[float, Grader]:
    grader = Grader(workers=workers, timeout_s=10.0, **options)
    try:
        # start the pool (every worker) outside the timing: pairs that need math-verify, one task each
        batch, grader.batch = grader.batch, 1
        grader.grade_many([(f"x_{i}", "y") for i in range(2 * grader.workers)])
        grader.batch = batch
        grader.stats = type(grader.stats)()
        if grader.cache is not None:
            grader.cache.clear()
        cpu = cpu_seconds()
        start = time.perf_counter()
        grader.verdicts = grader.grade_many(pairs)
        wall = time.perf_counter() - start
        grader.cpu_s = cpu_seconds() - cpu  # workers are still alive: their times are read before close
        return wall, grader
    finally:
        grader.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", type=int, default=100)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("LLMJOBS_TEST_DATA", DATA)))
    ap.add_argument("--wrong", choices=("near", "other"), default="near")
    args = ap.parse_args()

    pairs, records = workload(args.data, args.problems, args.samples, args.wrong)
    n = len(pairs)
    print(f"{args.problems} MATH-500 problems x {args.samples} samples = {n} answers (wrong answers: {args.wrong}), "
          f"{args.workers} workers; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

    plain_s, plain = plain_math_verify(pairs)
    print(f"plain math-verify, 1 process : {n / plain_s:8.1f} answers/s  ({plain_s:.2f} s; {CPU['plain']:.2f} CPU s, "
          f"{n / CPU['plain']:.0f} answers per CPU s)")
    base_s, base = timed_grading(pairs, args.workers, cache=False, same_text=False, batch=1)
    print(f"pool, one pair per task      : {n / base_s:8.1f} answers/s  ({base_s:.2f} s; {base.cpu_s:.2f} CPU s, "
          f"{n / base.cpu_s:.0f} answers per CPU s; {base.stats.verified} math-verify calls)")
    fast_s, fast = timed_grading(pairs, args.workers)
    st = fast.stats
    print(f"pool, fast path (llmjobs)    : {n / fast_s:8.1f} answers/s  ({fast_s:.2f} s; {fast.cpu_s:.2f} CPU s, "
          f"{n / fast.cpu_s:.0f} answers per CPU s; {st.verified} pairs to "
          f"math-verify in {st.batches} batches, {st.cache_hits} cache hits, {st.same_text} identical after cleaning, {st.integers} integer pairs)")
    agree = sum(v.correct == p for v, p in zip(fast.verdicts, plain))
    print(f"fast path / plain math-verify: {plain_s / fast_s:.1f}x wall, {CPU['plain'] / fast.cpu_s:.1f}x CPU; "
          f"verdicts agree on {agree}/{n}")

    start = time.perf_counter()
    res = grade_samples(records, None, None, workers=args.workers, plot=False)
    full_s = time.perf_counter() - start
    print(f"grade_samples : {n / full_s:8.1f} answers/s  ({full_s:.2f} s incl. pool start, both policies, voting; "
          f"maj@{args.samples} {100 * res['majority_accuracy']:.1f}%)")


if __name__ == "__main__":
    main()
