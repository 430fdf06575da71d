"""The distill filters against hand-made samples with known verdicts: ties, equivalent forms, samples without
an answer, theta at its boundaries, the per-sample rules."""

from __future__ import annotations

import pytest

from llmjobs.jobs.synth.filters import (
    BELOW_THETA,
    DISAGREES,
    NO_ANSWER,
    NO_CORRECT,
    NO_STEPS,
    OVER_K,
    TIE,
    TOO_LONG,
    UNCLOSED,
    WRONG,
    WRONG_STEP,
    Rules,
    Sample,
    candidates,
    decide,
    histogram,
)


def gt(*specs):
    """(answer, correct, closed, tokens) per sample."""
    return [Sample(i, a, c, cl, t) for i, (a, c, cl, t) in enumerate(specs)]


def test_ground_truth_keeps_correct_samples_then_applies_the_sample_rules():
    samples = gt(("5", True, True, 10), ("4", False, True, 10), (None, False, True, 10), ("5", True, False, 10),
                 ("5.0", True, True, 99), ("5", True, True, 10), ("5", True, True, 10))
    d = decide(samples, "5", Rules("ground_truth", keep_per_problem=2, max_sample_tokens=50))
    assert d.kept == [0, 5] and d.label == "5"
    assert d.dropped == {1: WRONG, 2: NO_ANSWER, 3: UNCLOSED, 4: TOO_LONG, 6: OVER_K}
    assert d.agreement == pytest.approx(5 / 7) and d.problem_reason is None
    # unclosed samples may stay; no cap
    d = decide(samples, "5", Rules("ground_truth", drop_unclosed=False))
    assert d.kept == [0, 3, 4, 5, 6]


def test_an_unclosed_sample_without_an_answer_is_dropped_as_unclosed():
    samples = gt(("5", True, True, 1), (None, False, False, 1), (None, False, True, 1))
    assert decide(samples, "5", Rules("ground_truth")).dropped == {1: UNCLOSED, 2: NO_ANSWER}
    samples = [Sample(0, "5", cls=0), Sample(1, None, closed=False), Sample(2, "5", cls=0)]
    d = decide(samples, None, Rules("majority", theta=0.6))
    assert d.kept == [0, 2] and d.dropped == {1: UNCLOSED}


def test_ground_truth_without_a_correct_sample_drops_the_problem():
    d = decide(gt(("4", False, True, 1), (None, False, True, 1)), "5", Rules("ground_truth"))
    assert d.kept == [] and d.problem_reason == NO_CORRECT
    with pytest.raises(ValueError, match="answer"):
        decide(gt(("4", False, True, 1)), "", Rules("ground_truth"))


def maj(*classes, answers=None):
    """One sample per entry: its class (None: no answer)."""
    return [Sample(i, None if c is None else (answers or {}).get(c, f"a{c}"), cls=c) for i, c in enumerate(classes)]


@pytest.mark.parametrize(("theta", "kept"), [(0.8, True), (0.8000001, False), (1.0, False), (0.5, True)])
def test_majority_theta_boundary_is_inclusive(theta, kept):
    samples = maj(0, 0, 0, 0, 1)  # 4 of 5 = 0.8
    d = decide(samples, None, Rules("majority", theta=theta))
    assert bool(d.kept) is kept
    if kept:
        assert d.kept == [0, 1, 2, 3] and d.label == "a0" and d.dropped == {4: DISAGREES}
    else:
        assert d.problem_reason == BELOW_THETA and set(d.dropped.values()) == {BELOW_THETA}


def test_majority_counts_samples_without_an_answer_in_n():
    d = decide(maj(0, 0, 0, 0, None), None, Rules("majority", theta=0.8))  # 4 of 5 agree, one said nothing
    assert d.kept == [0, 1, 2, 3] and d.dropped == {4: NO_ANSWER}
    d = decide(maj(0, 0, 0, None, None), None, Rules("majority", theta=0.8))  # 3 of 5
    assert d.kept == [] and d.problem_reason == BELOW_THETA
    d = decide(maj(None, None), None, Rules("majority", theta=0.1))
    assert d.problem_reason == NO_ANSWER


def test_majority_tie_has_no_label_even_below_half_theta():
    d = decide(maj(0, 1, 0, 1), None, Rules("majority", theta=0.5))
    assert d.kept == [] and d.problem_reason == TIE and d.label is None
    d = decide(maj(0, 1, 0, 1, 1), None, Rules("majority", theta=0.5))  # 3 of 5 beat 2
    assert d.kept == [1, 3, 4] and d.label == "a1"


def test_majority_label_is_the_first_member_answer_and_sample_rules_apply():
    samples = [Sample(0, "1/2", cls=0), Sample(1, "0.5", cls=0, closed=False), Sample(2, "\\frac{1}{2}", cls=0),
               Sample(3, "3", cls=1), Sample(4, "2/4", cls=0, tokens=500)]
    d = decide(samples, None, Rules("majority", theta=0.8, max_sample_tokens=100))
    assert d.label == "1/2" and d.kept == [0, 2]
    assert d.dropped == {1: UNCLOSED, 3: DISAGREES, 4: TOO_LONG}


def test_check_steps_drops_first_and_keep_per_problem_counts_only_checked_samples():
    """Samples 0 and 1 reach the answer through a wrong step / no shown step: with a cap of 2, the two kept
    samples are the first two whose steps hold, not the first two correct ones."""
    samples = [Sample(0, "7", True, step_fault=WRONG_STEP), Sample(1, "7", True, step_fault=NO_STEPS),
               Sample(2, "7", True), Sample(3, "8", False, step_fault=WRONG_STEP),
               Sample(4, "7", True, closed=False, step_fault=WRONG_STEP), Sample(5, "7", True), Sample(6, "7", True)]
    d = decide(samples, "7", Rules("ground_truth", keep_per_problem=2, check_steps=True))
    assert d.kept == [2, 5]
    assert d.dropped == {0: WRONG_STEP, 1: NO_STEPS, 3: WRONG, 4: WRONG_STEP, 6: OVER_K}
    assert len(d.dropped) + len(d.kept) == len(samples)
    # the faults count only when the rule is on
    assert decide(samples, "7", Rules("ground_truth", keep_per_problem=2)).kept == [0, 1]
    # nothing checked survives: the problem is dropped, its correct samples all accounted for
    d = decide(samples[:2], "7", Rules("ground_truth", check_steps=True))
    assert d.kept == [] and d.problem_reason == "every_correct_sample_dropped"


def test_check_steps_under_majority_applies_to_the_winning_class():
    samples = [Sample(0, "x = 7", cls=0, step_fault=WRONG_STEP), Sample(1, "7", cls=0), Sample(2, "7", cls=0),
               Sample(3, "9", cls=1, step_fault=NO_STEPS)]
    rules = Rules("majority", theta=0.75, check_steps=True)
    passed, label = candidates(samples, None, rules)
    assert [s.index for s in passed] == [0, 1, 2] and label == "x = 7"  # the steps are checked at this label
    d = decide(samples, None, rules)
    assert d.kept == [1, 2] and d.label == "x = 7" and d.dropped == {0: WRONG_STEP, 3: DISAGREES}
    assert candidates(samples, None, Rules("majority", theta=1.0))[0] == []  # below theta: nothing to check
    passed, label = candidates(samples, "7", Rules("ground_truth"))
    assert passed == [] and label == "7"  # no sample was graded correct


def test_histogram_bins_cover_zero_to_one():
    h = histogram([0.0, 0.05, 0.1, 0.95, 1.0], bins=10)
    assert [b["problems"] for b in h] == [2, 1, 0, 0, 0, 0, 0, 0, 0, 2] and h[-1]["to"] == 1.0


def test_equivalent_forms_form_one_class_through_the_grader():
    """The classes majority uses come from the grader: 1/2, 0.5 and \\frac{2}{4} are one answer."""
    pytest.importorskip("math_verify")
    pytest.importorskip("pebble")
    from llmjobs.jobs.eval.grading import Grader
    from llmjobs.jobs.eval.voting import build_classes

    answers = ["1/2", "0.5", "3", "\\frac{2}{4}", None, "0.50"]
    with Grader(workers=1, timeout_s=10) as g:
        cls = build_classes(answers, [False] * len(answers), g.equivalent_many)
    member_of = {m: j for j, c in enumerate(cls) for m in c.members}
    samples = [Sample(i, a, cls=member_of.get(i)) for i, a in enumerate(answers)]
    d = decide(samples, None, Rules("majority", theta=4 / 6))
    assert d.kept == [0, 1, 3, 5] and d.label == "1/2" and d.agreement == pytest.approx(4 / 6)
    assert d.dropped == {2: DISAGREES, 4: NO_ANSWER}
