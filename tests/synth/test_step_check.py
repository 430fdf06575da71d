"""The step pairs of check_steps, graded by the real grader: synth.sympy's own worked solutions hold line by line,
and one wrong line (a wrong rewrite, an equation that does not hold at the answer) makes them fail."""

from __future__ import annotations

import random

import pytest

from llmjobs.jobs.synth.step_check import display_lines, label_value, step_pairs, substitute

pytest.importorskip("math_verify")
pytest.importorskip("pebble")

FAMILIES = ["integer_arithmetic", "fraction_arithmetic", "linear_expression", "linear_equation"]

ARITHMETIC = """Do multiplication and division first, then addition and subtraction.
$\\left(-8\\right) - 8$
$= -8 - 8$
$= -16$"""
EQUATION = """Move the $x$ terms to the left and the numbers to the right.
$5x + 3 = 38$
$5x = 38 - 3$
$5x = 35$
$x = 7$"""


@pytest.fixture(scope="module")
def grader():
    from llmjobs.jobs.eval.grading import Grader

    with Grader(workers=1, timeout_s=10) as g:
        yield g


def holds(grader, pairs) -> bool:
    return bool(pairs) and all(v.correct for v in grader.grade_many(pairs))


def test_display_lines_are_whole_lines_with_a_leading_equals_removed():
    text = "We have $x$ here.\n  $= 3 + 4$  \n$a$ and $b$\n$$7$$\nno math"
    assert display_lines(text) == ["3 + 4", "7"]
    assert display_lines(EQUATION)[0] == "5x + 3 = 38"  # the prose line's inline $x$ is not a step


def test_substitution_leaves_commands_alone_and_writes_products_out(grader):
    # each substituted expression must grade equal to its value: 5x at 7, -x at 7, 2x at -3, ...
    cases = [("5x", "7", "35"), ("-x", "7", "-7"), ("2x", "-3", "-6"), ("3 \\times x", "4", "12"),
             ("\\frac{x}{2}", "6", "3"), ("\\left(x + 1\\right) \\cdot 2", "4", "10"), ("x^{2} - x", "3", "6"),
             ("4x", "\\frac{1}{2}", "2")]
    for expr, value, expected in cases:
        out = substitute(expr, "x", value)
        assert "x" not in out.replace("\\times", ""), out
        assert holds(grader, [(expected, out)]), (expr, out)
    assert substitute("\\text{max} + x", "x", "1") == "\\text{max} + (1)"


def test_the_examples_hold_and_a_majority_label_may_carry_the_unknown(grader):
    assert step_pairs(ARITHMETIC, "-16")[1] == ("-16", "-8 - 8")
    assert holds(grader, step_pairs(ARITHMETIC, "-16"))
    pairs = step_pairs(EQUATION, "7")
    assert len(pairs) == 4 and holds(grader, pairs)
    assert step_pairs(EQUATION, "x = 7") == pairs and label_value("$x=7$") == "7"
    assert not holds(grader, step_pairs(EQUATION, "8"))  # the right steps checked at the wrong label


def test_a_chain_checks_every_adjacent_pair_and_no_display_line_gives_nothing(grader):
    assert len(step_pairs("$2x = 14 = 7 + 7$", "7")) == 2
    assert holds(grader, step_pairs("$2x = 14 = 7 + 7$", "7"))
    assert not holds(grader, step_pairs("$2x = 14 = 7 + 8$", "7"))
    assert step_pairs("3 + 4 is 7, so the answer is 7.", "7") == []


def test_a_corrupted_middle_line_fails(grader):
    assert not holds(grader, step_pairs(ARITHMETIC.replace("$= -8 - 8$", "$= -8 + 8$"), "-16"))
    # an equation step that does not hold at the answer: 5x = 38 + 3 at x = 7
    assert not holds(grader, step_pairs(EQUATION.replace("$5x = 38 - 3$", "$5x = 38 + 3$"), "7"))


def _drafts(name: str, n: int, seed: int):
    from llmjobs.jobs.synth.sympy import registry

    fam = registry.families()[name]
    rng = random.Random(seed)
    return [fam.draft(rng, rng.choice([1, 2, 3])) for _ in range(n)]


@pytest.mark.parametrize("name", FAMILIES)
def test_synth_sympy_solutions_hold_step_by_step(grader, name):
    for d in _drafts(name, 8, 21):
        pairs = step_pairs(d.solution["en"], d.answer)
        assert len(pairs) >= 2, d.solution["en"]
        verdicts = grader.grade_many(pairs)
        assert all(v.correct for v in verdicts), [(p, v) for p, v in zip(pairs, verdicts) if not v.correct]


@pytest.mark.parametrize("name", FAMILIES)
def test_synth_sympy_solutions_with_one_wrong_middle_line_fail(grader, name):
    """The middle display line shifted by one (an expression line gets "+ 1", an equation its right side):
    the final answer is untouched, the check must still fail."""
    for d in _drafts(name, 8, 22):
        lines = d.solution["en"].splitlines()
        shown = [i for i, line in enumerate(lines) if line.startswith("$") and line.endswith("$")]
        i = shown[len(shown) // 2]
        lines[i] = lines[i][:-1] + " + 1$"
        pairs = step_pairs("\n".join(lines), d.answer)
        assert len(pairs) >= 2 and not holds(grader, pairs), "\n".join(lines)
