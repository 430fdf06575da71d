"""The grader's fast path: pairs grouped by gold in batches give the verdicts one-pair-per-task grading gives,
and a runaway pair inside a batch ends as ``timeout`` alone while its batch mates are still graded."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("math_verify")
pytest.importorskip("pebble")

from llmjobs.jobs.eval.grading import Grader, verify_batch

PAIRS = [
    ("\\frac{1}{2}", "0.5"), ("\\frac{1}{2}", "1/2"), ("\\frac{1}{2}", "2"), ("\\frac{1}{2}", "\\dfrac{2}{4}"),
    ("(1, 2)", "(1,2)"), ("(1, 2)", "(2, 1)"), ("(1, 2)", "[1, 2]"),
    ("3", "x = 3"), ("3", "3.0"), ("3", "4"), ("3", "\\text{three}"),
    ("2\\sqrt{3}", "\\sqrt{12}"), ("2\\sqrt{3}", "3.4641016"), ("2\\sqrt{3}", "\\sqrt{13}"),
    ("(-\\infty, 3]", "x \\le 3"), ("(-\\infty, 3]", "(-\\infty, 3)"),
]


def test_batches_agree_with_one_pair_per_task():
    with Grader(workers=2, timeout_s=10.0, cache=False, same_text=False, batch=1) as slow:
        expected = [(v.correct, v.status) for v in slow.grade_many(PAIRS)]
        assert slow.stats.batches == 0
    with Grader(workers=2, timeout_s=10.0, cache=False, same_text=False) as fast:
        got = [(v.correct, v.status) for v in fast.grade_many(PAIRS)]
        assert fast.stats.batches >= 2 and fast.stats.batch_retries == 0  # really batched, over both workers
    assert got == expected
    assert [c for c, _ in got] == [True, True, False, True, True, False, False, True, True, False, False,
                                   True, True, False, False, False]


def test_a_runaway_pair_in_a_batch_times_out_alone():
    """The worker's alarm stops runaway SymPy work running in Python and the batch goes on."""
    pairs = [("7", "7.0"), ("7", "(10^{8})!"), ("7", "8"), ("7", "9^{9^{9}}"), ("\\frac{1}{3}", "1/3")]
    with Grader(workers=1, timeout_s=1.0) as g:
        start = time.monotonic()
        verdicts = g.grade_many(pairs)
        assert time.monotonic() - start < 30
        assert [(v.correct, v.status) for v in verdicts] == [(True, "ok"), (False, "timeout"), (False, "integers"),
                                                             (False, "timeout"), (True, "ok")]
        assert g.stats.timeouts == 2 and g.stats.batch_retries == 0


def test_a_batch_past_its_hard_limit_is_graded_again_pair_by_pair():
    """Work stuck inside C ignores the alarm: then the batch overruns its hard limit, its worker is killed and
    its pairs are graded one task each under the pool's hard per-pair timeout. (A hard limit too short for any
    batch forces that path here; the runaway pair is still cut off by the per-pair timeout.)"""
    pairs = [("7", "7.0"), ("7", "9^{9^{9}}"), ("7", "8"), ("\\frac{1}{3}", "1/3")]
    with Grader(workers=2, timeout_s=1.0, batch_timeout_s=0.01) as g:
        verdicts = g.grade_many(pairs)
        assert [(v.correct, v.status) for v in verdicts] == [(True, "ok"), (False, "timeout"), (False, "integers"),
                                                             (True, "ok")]
        assert g.stats.batch_retries >= 1 and g.stats.batches == 0 and g.stats.timeouts == 1
        assert g.grade("2", "2.0").correct  # the pool goes on with fresh workers


def test_in_the_worker_each_gold_is_parsed_once_and_each_pair_has_its_own_alarm():
    """Called in this process (the main thread, as in a pool worker): a pair whose Python-level work outlasts
    the alarm is ``timeout`` and the next pair of the same batch is still graded."""
    import math_verify

    from llmjobs.jobs.eval.grading import warm_up

    warm_up()  # as in a worker: the parser's first use is not inside a timed pair
    calls = []
    real = math_verify.parse

    def counting(text, **kw):
        calls.append(text)
        if text == "$\\slow$":
            t = time.monotonic()
            while time.monotonic() - t < 8:  # Python code: the alarm interrupts it
                pass
        return real(text, **kw)

    math_verify.parse = counting
    try:
        out = verify_batch([("41", ["41", "\\slow", "42"]), ("41", ["41.0"])], 2.0)
    finally:
        math_verify.parse = real
    assert out == [[(True, "ok"), (False, "timeout"), (False, "ok")], [(True, "ok")]]
    assert calls.count("$41$") <= 1  # parsed at most once (the worker keeps parsed strings)


def test_plain_integers_are_compared_without_math_verify():
    with Grader(workers=1, timeout_s=10.0) as g:
        verdicts = g.grade_many([("42", "42"), ("42", "+42"), ("42", "43"), ("-7", "-7"), ("1000", "1,000"),
                                 ("0", "-0"), ("42", "42.0")])
        assert [(v.correct, v.status) for v in verdicts] == [
            (True, "same_text"), (True, "integers"), (False, "integers"), (True, "same_text"),
            (True, "same_text"), (True, "integers"), (True, "ok")]  # "42.0" is not a plain integer
        assert g.stats.integers == 3 and g.stats.verified == 1
