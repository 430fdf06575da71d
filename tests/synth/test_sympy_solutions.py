"""The worked solutions that a tiny model is trained on are right step by step, not only in the last line:
every displayed step of the arithmetic, fraction, linear-expression and linear-equation families is read back
with the LaTeX parser math-verify uses and must equal the answer (or have it as its only solution)."""

from __future__ import annotations

import random
import re

import pytest

sympy = pytest.importorskip("sympy")
l2s = pytest.importorskip("latex2sympy2_extended")

from llmjobs.jobs.synth.sympy import registry

_MATH = re.compile(r"^\$(.*)\$$")


def _steps(solution: str) -> list[str]:
    """The display lines ("$...$" alone on a line), with a leading "= " removed."""
    out = []
    for line in solution.splitlines():
        m = _MATH.match(line.strip())
        if m:
            out.append(re.sub(r"^=\s*", "", m.group(1)))
    return out


def _value(latex: str):
    return l2s.latex2sympy(latex)


@pytest.mark.parametrize("name", ["integer_arithmetic", "fraction_arithmetic", "linear_expression"])
def test_every_step_equals_the_answer(name):
    fam = registry.families()[name]
    rng = random.Random(11)
    for _ in range(25):
        d = fam.draft(rng, rng.choice([1, 2, 3]))
        answer = _value(d.answer)
        steps = _steps(d.solution["en"])
        assert len(steps) >= 2, d.solution["en"]
        assert d.solution["en"].splitlines()[1:] == d.solution["ja"].splitlines()[1:]  # same maths, both languages
        for step in steps:
            assert sympy.simplify(_value(step) - answer) == 0, (step, d.answer, d.solution["en"])


def test_every_linear_equation_step_has_the_answer_as_its_only_solution():
    fam = registry.families()["linear_equation"]
    x = sympy.Symbol("x")
    rng = random.Random(12)
    for _ in range(30):
        d = fam.draft(rng, rng.choice([1, 2, 3]))
        answer = _value(d.answer)
        steps = _steps(d.solution["en"])
        assert steps[-1] == f"x = {d.answer}" and len(steps) >= 3, d.solution["en"]
        for step in steps:
            eq = _value(step)
            eq = eq.subs({s: x for s in eq.free_symbols if s.name == "x"})
            assert sympy.solve(eq, x) == [answer], (step, d.answer, d.solution["en"])
