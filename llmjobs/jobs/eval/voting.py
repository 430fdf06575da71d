"""Majority voting over equivalence classes of answers.

Classes: every sample graded correct joins one class (they all equal the gold). The other samples with an
answer are grouped by their cleaned text, then each distinct text, in order of first appearance, joins the
first earlier class whose representative (its first member's answer) math-verify finds equivalent, or starts a
new class. Samples without an answer are in no class and do not vote. (Equivalence is assumed transitive:
two answers that both equal the gold vote together even if math-verify would not match them directly.)

Vote over the first ``k`` samples: the class with most members among them wins; a tie goes to the class whose
first member came first (lowest sample index), and is recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from llmjobs.jobs.eval.answers import clean_answer

Equivalent = Callable[[Sequence[tuple[str, str]]], list[bool]]


@dataclass
class VoteClass:
    representative: str
    members: list[int] = field(default_factory=list)  # positions in sample order, ascending
    correct: bool = False


@dataclass(frozen=True)
class Vote:
    answer: str | None  # representative of the winning class; None when no sample in the prefix answered
    correct: bool
    votes: int
    cls: int | None  # index of the winning class
    tie: bool  # several classes had the top count
    tied: int  # how many classes had the top count


def build_classes_many(
    problems: Sequence[tuple[Sequence[str | None], Sequence[bool]]], equivalent_many: Equivalent
) -> list[list[VoteClass]]:
    """Classes for many problems at once: ``(answers, correct)`` per problem, in sample order. The pairwise
    equivalence checks of all problems go to ``equivalent_many`` together, one round per distinct answer."""
    classes: list[list[VoteClass]] = []
    pending: list[list[tuple[str, list[int]]]] = []  # per problem: distinct wrong answers still to place
    for answers, correct in problems:
        cls: list[VoteClass] = []
        right = [i for i, (a, c) in enumerate(zip(answers, correct)) if a is not None and c]
        if right:
            cls.append(VoteClass(answers[right[0]], right, True))  # type: ignore[arg-type]
        by_text: dict[str, list[int]] = {}
        first_text: dict[str, str] = {}
        for i, (a, c) in enumerate(zip(answers, correct)):
            if a is None or c:
                continue
            key = clean_answer(a)
            if not key:  # blank answers do not vote
                continue
            by_text.setdefault(key, []).append(i)
            first_text.setdefault(key, a)
        pending.append([(first_text[k], members) for k, members in by_text.items()])
        classes.append(cls)

    while any(pending):
        asks: list[tuple[int, str, list[int], list[int]]] = []  # problem, answer, members, candidate classes
        pairs: list[tuple[str, str]] = []
        for p, queue in enumerate(pending):
            if not queue:
                continue
            answer, members = queue.pop(0)
            candidates = [j for j, c in enumerate(classes[p]) if not c.correct]
            asks.append((p, answer, members, candidates))
            pairs.extend((classes[p][j].representative, answer) for j in candidates)
        results = iter(equivalent_many(pairs)) if pairs else iter(())
        for p, answer, members, candidates in asks:
            verdicts = [next(results) for _ in candidates]
            target = next((j for j, same in zip(candidates, verdicts) if same), None)
            if target is None:
                classes[p].append(VoteClass(answer, list(members), False))
            else:
                classes[p][target].members = sorted(classes[p][target].members + members)
    for cls in classes:
        cls.sort(key=lambda c: c.members[0])
    return classes


def build_classes(answers: Sequence[str | None], correct: Sequence[bool], equivalent_many: Equivalent) -> list[VoteClass]:
    return build_classes_many([(answers, correct)], equivalent_many)[0]


def vote(classes: Sequence[VoteClass], k: int | None = None) -> Vote:
    """Majority over the samples at positions ``< k`` (all when ``k`` is None)."""
    best: tuple[int, int] | None = None  # (votes, class index)
    tied = 0
    for j, c in enumerate(classes):  # sorted by first member, so the first of equals is the earliest
        n = len(c.members) if k is None else sum(1 for m in c.members if m < k)
        if n == 0:
            continue
        if best is None or n > best[0]:
            best, tied = (n, j), 1
        elif n == best[0]:
            tied += 1
    if best is None:
        return Vote(None, False, 0, None, False, 0)
    winner = classes[best[1]]
    return Vote(winner.representative, winner.correct, best[0], best[1], tied > 1, tied)
