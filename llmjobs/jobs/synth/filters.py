"""Which teacher samples become training data: the ``ground_truth`` and ``majority`` filters of synth.distill.

Pure decisions over samples that are already extracted and graded (``Sample``): no model, no grader, so the
rules are testable on hand-made verdicts. Every sample dropped gets one reason, every problem dropped one
reason, so the report adds up:

- ``ground_truth``: a sample is kept when it is graded equal to the known answer; then, in sample order,
  unclosed reasoning (``drop_unclosed``) and over-long samples (``max_sample_tokens``) are dropped, and at
  most ``keep_per_problem`` samples of a problem are kept (the first ones by sample index). The label is the
  known answer.
- ``majority``: the answers of a problem's N samples are put in equivalence classes (by the grader); the
  problem is kept when its largest class holds at least ``theta`` of the N samples (samples without an
  answer count in N: they did not agree) and no other class is as large (a tie has no majority). The label
  is the class's first answer; its members are the kept samples, with the same per-sample rules as above.

With ``check_steps`` the first per-sample rule is the process check (``synth.step_check``): a sample whose
displayed steps do not hold at the label (``wrong_step``) or that displays none (``no_checkable_step``) is
dropped before the other rules, so ``keep_per_problem`` counts only samples whose steps were checked.
``candidates`` names the samples that check applies to (the ones passing the filter proper), so the caller
grades the steps of those only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

FilterName = Literal["ground_truth", "majority"]

# sample-level reasons
WRONG, NO_ANSWER, DISAGREES, UNCLOSED, TOO_LONG, OVER_K = (
    "wrong", "no_answer", "not_in_majority", "unclosed_think", "too_long", "over_keep_per_problem")
WRONG_STEP, NO_STEPS = "wrong_step", "no_checkable_step"
# problem-level reasons
NO_CORRECT, BELOW_THETA, TIE = "no_correct_sample", "below_theta", "tie"


@dataclass(frozen=True)
class Sample:
    index: int  # sample index within the problem
    answer: str | None  # extracted final answer (None: none found)
    correct: bool = False  # graded equal to the known answer (ground_truth)
    closed: bool = True  # the reasoning closed its </think>
    tokens: int | None = None
    cls: int | None = None  # equivalence class (majority); None for no answer
    step_fault: str | None = None  # check_steps: WRONG_STEP or NO_STEPS when the displayed steps fail
    failed_step: tuple[str, str] | None = None  # the first (gold, answer) step pair that did not grade equal


@dataclass
class Decision:
    kept: list[int] = field(default_factory=list)  # sample indexes, ascending
    label: str | None = None  # the answer the kept samples carry
    agreement: float = 0.0  # ground_truth: correct / N; majority: largest class / N
    dropped: dict[int, str] = field(default_factory=dict)  # sample index -> reason
    problem_reason: str | None = None  # why nothing of this problem is kept (None when something is)


@dataclass(frozen=True)
class Rules:
    filter: FilterName = "ground_truth"
    theta: float = 0.8
    keep_per_problem: int | None = None
    drop_unclosed: bool = True
    max_sample_tokens: int | None = None
    check_steps: bool = False


def _per_sample(candidates: Sequence[Sample], rules: Rules, decision: Decision) -> None:
    """The per-sample rules, in order, over the samples that passed the filter proper."""
    for s in sorted(candidates, key=lambda s: s.index):
        if rules.check_steps and s.step_fault is not None:
            decision.dropped[s.index] = s.step_fault
        elif rules.drop_unclosed and not s.closed:
            decision.dropped[s.index] = UNCLOSED
        elif rules.max_sample_tokens is not None and s.tokens is not None and s.tokens > rules.max_sample_tokens:
            decision.dropped[s.index] = TOO_LONG
        elif rules.keep_per_problem is not None and len(decision.kept) >= rules.keep_per_problem:
            decision.dropped[s.index] = OVER_K
        else:
            decision.kept.append(s.index)


def _no_answer(s: Sample) -> str:
    # an unclosed reasoning has no answer (unless its reasoning is graded): say which failure it was
    return UNCLOSED if not s.closed else NO_ANSWER


def _ground_truth(samples: Sequence[Sample], gold: str) -> tuple[Decision, list[Sample]]:
    """The filter proper: the decision so far and the samples it passes (the graded-correct ones)."""
    d = Decision(label=gold)
    n = len(samples)
    right = [s for s in samples if s.correct and s.answer is not None]
    d.agreement = len(right) / n if n else 0.0
    for s in samples:
        if s.answer is None:
            d.dropped[s.index] = _no_answer(s)
        elif not s.correct:
            d.dropped[s.index] = WRONG
    return d, right


def ground_truth(samples: Sequence[Sample], gold: str, rules: Rules) -> Decision:
    d, right = _ground_truth(samples, gold)
    _per_sample(right, rules, d)
    if not d.kept:
        d.problem_reason = NO_CORRECT if not right else "every_correct_sample_dropped"
    return d


def _majority(samples: Sequence[Sample], rules: Rules) -> tuple[Decision, list[Sample]]:
    """The filter proper: the decision so far and the winning class's members ([] when the problem is
    dropped, its reason set)."""
    d = Decision()
    n = len(samples)
    sizes = Counter(s.cls for s in samples if s.answer is not None and s.cls is not None)
    for s in samples:
        if s.answer is None or s.cls is None:
            d.dropped[s.index] = _no_answer(s)
    if not sizes:
        d.problem_reason = NO_ANSWER
        return d, []
    top = max(sizes.values())
    winners = [c for c, k in sizes.items() if k == top]
    d.agreement = top / n
    if d.agreement < rules.theta:
        d.problem_reason = BELOW_THETA
    elif len(winners) > 1:
        d.problem_reason = TIE
    if d.problem_reason is not None:
        for s in samples:
            d.dropped.setdefault(s.index, d.problem_reason)
        return d, []
    winner = winners[0]
    members = [s for s in samples if s.cls == winner and s.answer is not None]
    d.label = min(members, key=lambda s: s.index).answer
    for s in samples:
        if s.index not in d.dropped and s.cls != winner:
            d.dropped[s.index] = DISAGREES
    return d, members


def majority(samples: Sequence[Sample], rules: Rules) -> Decision:
    d, members = _majority(samples, rules)
    if d.problem_reason is not None:
        return d
    _per_sample(members, rules, d)
    if not d.kept:
        d.problem_reason = "every_majority_sample_dropped"
    return d


def candidates(samples: Sequence[Sample], gold: str | None, rules: Rules) -> tuple[list[Sample], str | None]:
    """The samples that pass the filter proper (before the per-sample rules) and the label they carry: the ones
    whose steps ``check_steps`` checks, against that label."""
    if rules.filter == "ground_truth":
        d, passed = _ground_truth(samples, _needs_gold(gold))
    else:
        d, passed = _majority(samples, rules)
    return passed, d.label


def _needs_gold(gold: str | None) -> str:
    if gold is None or gold == "":
        raise ValueError("the ground_truth filter needs the problem's answer")
    return gold


def decide(samples: Sequence[Sample], gold: str | None, rules: Rules) -> Decision:
    if rules.filter == "ground_truth":
        return ground_truth(samples, _needs_gold(gold), rules)
    return majority(samples, rules)


def histogram(values: Sequence[float], bins: int = 10) -> list[dict]:
    """Counts of values in [0, 1] over ``bins`` equal bins (the last one closed: 1.0 falls in it)."""
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int(v * bins))] += 1
    return [{"from": round(i / bins, 3), "to": round((i + 1) / bins, 3), "problems": c}
            for i, c in enumerate(counts)]
