"""Self-consistency metrics.

Definitions (n_i samples and c_i correct ones for problem i; P problems):
- maj@k: the share of problems whose vote over their FIRST k samples (sample index 0..k-1) is correct
  (``voting.vote``). It is what one would have measured generating only k samples with the same seeds;
  for k > n_i all n_i samples vote. maj@N (N = most samples of any problem) is ``majority_accuracy``.
- maj@k over random subsets (``maj_at_k_subsets``): the same vote over the first k samples of 100 seeded
  random orders of each problem's samples, averaged; smoother than the single first-k draw.
- pass@k: the unbiased estimator mean_i [1 - C(n_i - c_i, k) / C(n_i, k)], for k = 1..min_i n_i.
- mean@1: mean_i c_i / n_i (equals pass@1; with equal n_i it is the share of all samples that are correct).
- reasoning-failure rate: the share of all samples whose ``<think>`` never closed.
A sample without an answer counts as wrong everywhere and never votes.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import comb

from llmjobs.jobs.eval.voting import Vote, VoteClass, vote


def pass_at_k(n: int, c: int, k: int) -> float:
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def maj_curve(classes: Sequence[Sequence[VoteClass]], sizes: Sequence[int]) -> dict[int, float]:
    top = max(sizes, default=0)
    return {
        k: sum(vote(cls, min(k, n)).correct for cls, n in zip(classes, sizes)) / len(sizes)
        for k in range(1, top + 1)
    }


def maj_curve_subsets(
    classes: Sequence[Sequence[VoteClass]], sizes: Sequence[int], draws: int = 100, seed: int = 0
) -> dict[int, float]:
    """maj@k averaged over ``draws`` seeded random orders of each problem's samples (the first k of each order
    vote; ties go to the class whose lowest sample index among those k is lowest). A smoother estimate of
    the same quantity as ``maj_curve``; k runs to min n_i."""
    import random

    rng = random.Random(seed)
    top = min(sizes, default=0)
    hits = [0] * (top + 1)
    for cls, n in zip(classes, sizes):
        label = [-1] * n
        for j, c in enumerate(cls):
            for m in c.members:
                label[m] = j
        order = list(range(n))
        for _ in range(draws):
            rng.shuffle(order)
            count: dict[int, int] = {}
            first: dict[int, int] = {}
            winner = -1
            for k, idx in enumerate(order[:top], 1):
                c = label[idx]
                if c >= 0:
                    count[c] = count.get(c, 0) + 1
                    first[c] = min(first.get(c, idx), idx)
                    # only class c changed, so the winner is the old one or c
                    if winner < 0 or (count[c], -first[c]) > (count[winner], -first[winner]):
                        winner = c
                hits[k] += winner >= 0 and cls[winner].correct
    denom = draws * len(sizes)
    return {k: hits[k] / denom for k in range(1, top + 1)}


def pass_curve(sizes: Sequence[int], correct_counts: Sequence[int]) -> dict[int, float]:
    low = min(sizes, default=0)
    return {
        k: sum(pass_at_k(n, c, k) for n, c in zip(sizes, correct_counts)) / len(sizes) for k in range(1, low + 1)
    }


def mean_at_1(sizes: Sequence[int], correct_counts: Sequence[int]) -> float:
    return sum(c / n for n, c in zip(sizes, correct_counts)) / len(sizes) if sizes else 0.0


def summarize(
    classes: Sequence[Sequence[VoteClass]],
    correct: Sequence[Sequence[bool]],
    closed: Sequence[Sequence[bool]],
    answered: Sequence[Sequence[bool]],
    categories: Sequence[str | None],
) -> dict:
    """Metrics of one grading policy. All arguments are per problem (outer) and per sample (inner)."""
    sizes = [len(c) for c in correct]
    counts = [sum(c) for c in correct]
    votes: list[Vote] = [vote(cls) for cls in classes]
    total = sum(sizes)
    out = {
        "problems": len(sizes),
        "samples": total,
        "majority_accuracy": sum(v.correct for v in votes) / len(votes) if votes else 0.0,
        "mean_at_1": mean_at_1(sizes, counts),
        "maj_at_k": {str(k): v for k, v in maj_curve(classes, sizes).items()},
        "maj_at_k_subsets": {str(k): v for k, v in maj_curve_subsets(classes, sizes).items()},
        "pass_at_k": {str(k): v for k, v in pass_curve(sizes, counts).items()},
        "reasoning_failure_rate": sum(not x for row in closed for x in row) / total if total else 0.0,
        "no_answer_rate": sum(not x for row in answered for x in row) / total if total else 0.0,
        "ties": sum(v.tie for v in votes),
        "per_category": per_category(votes, sizes, counts, categories),
    }
    return out


def per_category(
    votes: Sequence[Vote], sizes: Sequence[int], counts: Sequence[int], categories: Sequence[str | None]
) -> dict[str, dict]:
    groups: dict[str, list[int]] = {}
    for i, cat in enumerate(categories):
        if cat is not None:
            groups.setdefault(cat, []).append(i)
    return {
        cat: {
            "problems": len(idx),
            "majority_accuracy": sum(votes[i].correct for i in idx) / len(idx),
            "mean_at_1": mean_at_1([sizes[i] for i in idx], [counts[i] for i in idx]),
        }
        for cat, idx in sorted(groups.items())
    }
