"""Voting and metrics against hand-computed examples (equivalence by the real math-verify grader)."""

from __future__ import annotations

from fractions import Fraction
from math import comb

import pytest

from llmjobs.jobs.eval.metrics import maj_curve, mean_at_1, pass_at_k, pass_curve, summarize
from llmjobs.jobs.eval.voting import build_classes, build_classes_many, vote

pytest.importorskip("math_verify")


def _classes(grader, gold, answers):
    verdicts = grader.grade_many([(gold, a) for a in answers])
    correct = [v.correct for v in verdicts]
    return build_classes(answers, correct, grader.equivalent_many), correct


def test_equivalent_forms_vote_together_and_ties_go_to_the_first_seen(grader):
    # gold 1/2; three forms of it, three forms of 3, two samples without an answer
    answers = ["3", "\\frac{1}{2}", "3.0", "0.5", None, None, "1/2", "3"]
    classes, correct = _classes(grader, "1/2", answers)
    assert correct == [False, True, False, True, False, False, True, False]
    assert [(c.members, c.correct) for c in classes] == [([0, 2, 7], False), ([1, 3, 6], True)]
    # position by position, hand-counted (wrong class first seen, so it wins ties)
    expected = {
        1: (False, False),  # {0}
        2: (False, True),  # 1-1 tie -> first seen: wrong
        3: (False, False),  # 2-1
        4: (False, True),  # 2-2 tie -> wrong
        5: (False, True),  # no-answer sample does not vote: still 2-2
        6: (False, True),
        7: (True, False),  # 2-3
        8: (False, True),  # 3-3 tie -> wrong
    }
    for k, (ok, tie) in expected.items():
        v = vote(classes, k)
        assert (v.correct, v.tie) == (ok, tie), k
    full = vote(classes)
    assert (full.answer, full.votes, full.tied, full.cls) == ("3", 3, 2, 0)


def test_wrong_answers_merge_only_when_equivalent(grader):
    answers = ["1/4", "0.25", "\\frac{2}{8}", "x = 7", "7", "8", "8"]
    classes, correct = _classes(grader, "8", answers)
    assert correct == [False, False, False, False, False, True, True]
    # the three quarters vote together; "x = 7" and "7": "7" is equal to the representative "x = 7"
    assert [(c.representative, c.members) for c in classes] == [("1/4", [0, 1, 2]), ("x = 7", [3, 4]), ("8", [5, 6])]
    v = vote(classes)
    assert (v.answer, v.correct, v.votes, v.tie) == ("1/4", False, 3, False)


def test_no_answer_samples_do_not_vote():
    classes = build_classes([None, None, None], [False, False, False], lambda pairs: [False] * len(pairs))
    assert classes == []
    v = vote(classes)
    assert (v.answer, v.correct, v.votes, v.cls) == (None, False, 0, None)
    # one answer among many blanks wins alone
    classes = build_classes([None, "4", None], [False, True, False], lambda pairs: [False] * len(pairs))
    assert vote(classes, 1).answer is None and vote(classes, 2).correct


def test_build_classes_many_batches_problems_in_rounds():
    calls: list[int] = []

    def equivalent_many(pairs):  # textual equivalence of stripped forms, counting calls
        calls.append(len(pairs))
        return [a.strip("0.") == b.strip("0.") for a, b in pairs]

    problems = [(["1", "2", "2.0", "3"], [False] * 4), (["5", "5.0"], [False, False]), ([None], [False])]
    classes = build_classes_many(problems, equivalent_many)
    assert [[c.members for c in cls] for cls in classes] == [[[0], [1, 2], [3]], [[0, 1]], []]
    # one round per distinct answer, both problems in the same call; round 1 has nothing to compare with
    assert len(calls) == 3


def test_pass_at_k_is_the_unbiased_estimator():
    assert pass_at_k(8, 3, 1) == pytest.approx(3 / 8)
    assert pass_at_k(8, 3, 2) == pytest.approx(1 - Fraction(comb(5, 2), comb(8, 2)))  # 1 - 10/28
    assert pass_at_k(8, 3, 5) == pytest.approx(1 - 1 / 56)
    assert pass_at_k(8, 3, 6) == 1.0  # fewer than k wrong samples
    assert pass_at_k(4, 0, 4) == 0.0
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)
    assert pass_curve([4, 2], [1, 2]) == {1: pytest.approx((1 / 4 + 1) / 2), 2: pytest.approx((1 / 2 + 1) / 2)}


def test_summary_metrics_hand_computed(grader):
    # problem A (cat 中1): 4 samples, gold 2: answers 2, 2.0, 5, unclosed (no answer)
    # problem B (cat 中2): 4 samples, gold 1/2: answers 0.5, 3, 3, 1/2  -> tie 2-2, first seen (0.5) wins
    # problem C (cat 中1): 2 samples, gold 7: answers 8, no answer
    gold = {"A": "2", "B": "1/2", "C": "7"}
    samples = {"A": ["2", "2.0", "5", None], "B": ["0.5", "3", "3", "1/2"], "C": ["8", None]}
    closed = {"A": [True, True, True, False], "B": [True] * 4, "C": [True, True]}
    classes, correct = zip(*[_classes(grader, gold[p], samples[p]) for p in "ABC"])
    out = summarize(classes, correct, [closed[p] for p in "ABC"],
                    [[a is not None for a in samples[p]] for p in "ABC"], ["中1", "中2", "中1"])
    assert out["majority_accuracy"] == pytest.approx(2 / 3)  # A yes, B yes (tie), C no
    assert out["ties"] == 1
    assert out["mean_at_1"] == pytest.approx((2 / 4 + 2 / 4 + 0) / 3)
    # maj@1: A "2" ok, B "0.5" ok, C "8" no; maj@2: A ok, B 1-1 tie -> 0.5 ok, C no;
    # maj@3: A 2-1 ok, B 1-2 -> 3 wins, no; C (2 samples) no;  maj@4: as the full vote
    assert out["maj_at_k"] == {"1": pytest.approx(2 / 3), "2": pytest.approx(2 / 3), "3": pytest.approx(1 / 3),
                               "4": pytest.approx(2 / 3)}
    # pass@k only up to the smallest sample count (2)
    assert set(out["pass_at_k"]) == {"1", "2"}
    assert out["pass_at_k"]["2"] == pytest.approx((1 - comb(2, 2) / comb(4, 2) + 1 - comb(2, 2) / comb(4, 2) + 0) / 3)
    assert out["reasoning_failure_rate"] == pytest.approx(1 / 10)
    assert out["no_answer_rate"] == pytest.approx(2 / 10)
    assert out["per_category"] == {
        "中1": {"problems": 2, "majority_accuracy": 0.5, "mean_at_1": pytest.approx(0.25)},
        "中2": {"problems": 1, "majority_accuracy": 1.0, "mean_at_1": pytest.approx(0.5)},
    }
    assert maj_curve(classes, [4, 4, 2])[4] == pytest.approx(2 / 3)
    assert mean_at_1([4], [1]) == 0.25


def test_maj_at_k_over_random_subsets():
    from llmjobs.jobs.eval.metrics import maj_curve_subsets
    from llmjobs.jobs.eval.voting import VoteClass

    # n=3: the right answer once (sample 0), a wrong one twice. Over random subsets: maj@1 = 1/3;
    # maj@2: {0,1} and {0,2} tie and go to sample 0 (right), {1,2} is wrong -> 2/3; maj@3 = 0.
    one = [VoteClass("1", [0], True), VoteClass("2", [1, 2], False)]
    curve = maj_curve_subsets([one], [3], draws=3000)
    assert curve[1] == pytest.approx(1 / 3, abs=0.04) and curve[2] == pytest.approx(2 / 3, abs=0.04)
    assert curve[3] == 0.0
    # n=2, wrong first: every 2-subset is a tie won by sample 0 -> maj@2 is exactly 0
    tie = [VoteClass("5", [0], False), VoteClass("4", [1], True)]
    assert maj_curve_subsets([tie], [2], draws=50)[2] == 0.0
    # no-answer samples do not vote; k stops at the smallest sample count
    blanks = [VoteClass("4", [2], True)]
    curve = maj_curve_subsets([blanks, one], [3, 3], draws=3000)
    assert curve[3] == pytest.approx((1 + 0) / 2) and curve[1] == pytest.approx((1 / 3 + 1 / 3) / 2, abs=0.04)
    assert list(maj_curve_subsets([one, blanks[:0]], [3, 1], draws=5)) == [1]
