"""Grading with math-verify in the process pool: MATH-500 golds, Japanese answer forms, the hard timeout, cache."""

from __future__ import annotations

import threading
import time

import pytest

from llmjobs.jobs.eval.answers import clean_answer, extract_answer

from .conftest import shared_data

pytest.importorskip("math_verify")
pytest.importorskip("pebble")

from llmjobs.jobs.eval.grading import Grader

# MATH-500 problems whose gold solution does not grade correct against the gold answer, with the reason.
# (None today: every solution's last \boxed{} grades equal to the answer.)
MATH500_EXCEPTIONS: dict[str, str] = {}


@pytest.mark.slow
def test_every_math500_solution_grades_correct_against_its_answer():
    """The front-end end to end on real solutions: last \\boxed{} of the full solution text, cleaned, wrapped
    in $...$, parsed and verified by math-verify (identical strings are NOT short-cut here)."""
    from llmjobs.jobs.eval.data import load_problems

    problems = load_problems(shared_data("math500_test.jsonl"), preset="math500")
    extractions = [extract_answer(p.extra["solution"]) for p in problems]
    assert all(e.source == "boxed" for e in extractions)
    with Grader(workers=2, timeout_s=20.0, same_text=False) as g:
        verdicts = g.grade_many([(p.answer, e.answer) for p, e in zip(problems, extractions)])
        failures = {p.id: (p.answer, e.answer, v.status)
                    for p, e, v in zip(problems, extractions, verdicts) if not v.correct}
        assert g.stats.verified > 250 and g.stats.same_text == 0  # math-verify really did the work
        assert {k: v for k, v in failures.items() if k not in MATH500_EXCEPTIONS} == {}, failures
        assert set(MATH500_EXCEPTIONS) <= set(failures), "an exception now grades correct: remove it"

        # The same grader must not call everything equal: each solution against the NEXT problem's answer.
        shifted = g.grade_many([(p.answer, e.answer) for p, e in zip(problems[1:], extractions)])
        pairs = list(zip(problems[1:], extractions))
        equal_text = [v.correct for (p, e), v in zip(pairs, shifted) if clean_answer(p.answer) == clean_answer(e.answer)]
        other = [v.correct for (p, e), v in zip(pairs, shifted) if clean_answer(p.answer) != clean_answer(e.answer)]
        assert all(equal_text)
        assert sum(other) / len(other) < 0.02, sum(other)


JAPANESE = [
    # (model output, gold, expected)
    ("最終的な回答：４２", "42", True),  # full-width digits
    ("最終的な回答：42", "42", True),
    ("最終的な回答：42円", "42", True),  # units
    ("答え：42個", "42", True),
    ("\\boxed{42\\text{円}}", "42", True),
    ("最終的な回答：約42人", "42", True),
    ("答えは 18 ドルです。", "18", True),
    ("最終的な回答：12.50ドル", "12.5", True),
    ("最終的な回答：1,000", "1000", True),  # thousands separators
    ("最終的な回答：１，０００円", "1000", True),
    ("最終的な回答：1,000,000", "1000000", True),
    ("最終的な回答：2分の1", "\\frac{1}{2}", True),  # fractions
    ("最終的な回答：1/2", "0.5", True),
    ("\\boxed{\\frac{1}{2}}", "0.5", True),
    ("最終的な回答：5/3", "\\frac{5}{3}", True),
    ("最終的な回答：3.5", "7/2", True),
    ("最終的な回答：x = 3", "3", True),  # an assignment
    ("最終的な回答：−5", "-5", True),  # the minus sign U+2212 and the full-width hyphen
    ("最終的な回答：－5", "-5", True),
    ("最終的な回答：２５％", "25", True),
    ("最終的な回答：\\boxed{７}", "7", True),
    ("**最終的な回答：** 12", "12", True),
    ("最終的な回答：(1, 2)", "(1,2)", True),
    ("最終的な回答：43", "42", False),
    ("最終的な回答：42円", "420", False),
    ("最終的な回答：x = 4", "3", False),
    ("最終的な回答：3時間20分", "200", False),  # mixed units are not converted
    ("<think>最終的な回答：42", "42", False),  # reasoning never closed: no answer
    ("考えましたが分かりません。", "42", False),  # no answer at all
]


@pytest.mark.parametrize("same_text", [True, False], ids=["shortcut", "math-verify-only"])
def test_japanese_answer_forms(same_text):
    with Grader(workers=2, same_text=same_text) as g:
        verdicts = g.grade_many([(gold, extract_answer(out).answer) for out, gold, _ in JAPANESE])
    got = [(out, gold, v.correct) for (out, gold, _), v in zip(JAPANESE, verdicts)]
    assert got == JAPANESE


RUNAWAY = "9^{9^{9}}"  # SymPy evaluates the power tower while comparing: minutes and gigabytes


def test_runaway_sympy_is_cut_off_by_the_hard_timeout(grader):
    """A tower that math-verify would compute for minutes is killed after the timeout, also when the grader is
    called off the main thread (where math-verify's own signal-based timeout cannot work), and the pool keeps
    grading afterwards with a fresh worker."""
    g = Grader(workers=1, timeout_s=2.0)
    try:
        start = time.monotonic()
        v = g.grade("5", RUNAWAY)
        assert v.status == "timeout" and not v.correct
        assert time.monotonic() - start < 15
        assert g.stats.timeouts == 1 and g.stats.examples["timeout"] == [("5", RUNAWAY)]

        box: list = []
        thread = threading.Thread(target=lambda: box.append(g.grade_many([("7", "(10^{8})!"), ("7", "7.0")])))
        start = time.monotonic()
        thread.start()
        thread.join(30)
        assert not thread.is_alive()
        assert [(x.correct, x.status) for x in box[0]] == [(False, "timeout"), (True, "ok")]
        assert g.grade("\\frac{1}{2}", "0.5").correct  # the replacement worker grades
    finally:
        g.close()


def test_math_verify_own_timeout_refuses_threads():
    """Why the pool exists: math-verify's signal-based timeout raises off the main thread."""
    from math_verify import parse, verify

    errors: list[BaseException] = []

    def run():
        try:
            verify(parse("$1$"), parse("$1$"))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert errors and "thread" in str(errors[0])


def test_cache_answers_repeated_pairs_without_the_pool(grader):
    before = grader.stats.verified
    first = grader.grade_many([("\\frac{1}{3}", "0.3333333"), ("\\frac{1}{3}", "1/3")] * 3)
    assert [v.correct for v in first] == [True, True] * 3
    assert grader.stats.verified - before == 2  # duplicates in one batch are verified once
    again = grader.grade_many([("\\frac{1}{3}", "1/3")])
    assert again[0].correct and grader.stats.verified - before == 2
    # cleaning happens first: "$1/3$。" is the text "1/3", equal to the gold without asking math-verify
    assert grader.grade("1/3", "$1/3$。").status == "same_text" and grader.stats.verified - before == 2


def test_equivalent_is_what_voting_uses(grader):
    assert grader.equivalent_many([("\\frac{1}{2}", "0.5"), ("0.5", "1/2"), ("0.5", "0.6")]) == [True, True, False]
    assert grader.equivalent("3", "x = 3")
    assert not grader.equivalent("x = 3", "y = 4")


def test_no_answer_is_wrong_without_grading(grader):
    v = grader.grade("1", None)
    assert (v.correct, v.status) == (False, "no_answer")
