"""Answer extraction and cleaning (no math-verify needed)."""

from __future__ import annotations

import pytest

from llmjobs.jobs.eval.answers import Extraction, clean_answer, extract_answer, last_boxed


@pytest.mark.parametrize(
    "text, expected",
    [
        # last boxed after the last </think>; a boxed inside the reasoning does not count
        ("<think>try \\boxed{1}</think>So \\boxed{\\frac{1}{2}} or rather \\boxed{3}", Extraction("3", True, "boxed")),
        ("<think>a</think><think>b \\boxed{9}</think>final: \\boxed{4}", Extraction("4", True, "boxed")),
        ("<think>a \\boxed{9}</think>I cannot tell.", Extraction(None, True, None)),
        # nested braces, escaped braces, fbox
        ("\\boxed{\\frac{a}{b^{2}}}", Extraction("\\frac{a}{b^{2}}", True, "boxed")),
        ("\\boxed{\\{1, 2\\}}", Extraction("\\{1, 2\\}", True, "boxed")),
        ("\\fbox{7} then \\boxed 8", Extraction("8", True, "boxed")),
        # an unterminated last box (cut off by max_tokens) falls back to the earlier complete one
        ("\\boxed{5} ... \\boxed{\\frac{1}{", Extraction("5", True, "boxed")),
        # answer lines, with full-width forms normalised by NFKC
        ("計算します。\n最終的な回答：４２円", Extraction("42円", True, "line")),
        ("答え：\n\n**7**", Extraction("7", True, "line")),
        ("答えは 18 ドルです。", Extraction("18 ドルです。", True, "line")),
        ("Therefore, the Final Answer is: 12.\n", Extraction("12.", True, "line")),
        ("最終的な回答：1\n...\n最終的な回答：2", Extraction("2", True, "line")),
        ("Final Answer: The final answer is $\\frac{5}{2}$. I hope it is correct.", Extraction("\\frac{5}{2}", True, "line")),
        # boxed wins over a line
        ("最終的な回答：1\n\\boxed{2}", Extraction("2", True, "boxed")),
        ("no answer at all", Extraction(None, True, None)),
        ("", Extraction(None, True, None)),
        # reasoning that never closes
        ("<think>so \\boxed{5} and then on and on", Extraction(None, False, None)),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_unclosed_reasoning_can_be_graded_from_its_text():
    text = "<think>so \\boxed{5} and then on and on"
    assert extract_answer(text, grade_unclosed=True) == Extraction("5", False, "boxed")
    # a prompt that already opened <think>: an output with no </think> is unclosed
    assert extract_answer("thinking... \\boxed{5}", expect_think=True) == Extraction(None, False, None)
    assert extract_answer("reasoning</think>\\boxed{5}", expect_think=True) == Extraction("5", True, "boxed")


def test_last_boxed_skips_escaped_braces():
    assert last_boxed("\\boxed{a\\}b}") == "a\\}b"


@pytest.mark.parametrize(
    "raw, cleaned",
    [
        ("４２", "42"),
        ("42円", "42"),
        ("約42個", "42"),
        ("18 ドルです。", "18"),
        ("1,000", "1000"),
        ("１，０００，０００", "1000000"),
        ("1,-2", "1,-2"),  # not a thousands separator
        ("3, 5, 7", "3, 5, 7"),
        ("2分の1", "\\frac{1}{2}"),
        ("$\\frac{3}{4}$.", "\\frac{3}{4}"),
        ("\\$18", "18"),
        ("−5", "-5"),
        ("x = 3", "x = 3"),
        ("火曜日", "火曜日"),  # only words: kept
        ("3時間20分", "3時間20分"),  # words inside the answer: kept, not mangled into "3時間20"
        ("**12**", "12"),
    ],
)
def test_clean_answer(raw, cleaned):
    assert clean_answer(raw) == cleaned
