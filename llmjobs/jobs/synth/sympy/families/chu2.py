"""中2: simultaneous equations, linear functions, values of expressions, monomials."""

from __future__ import annotations

import random
from fractions import Fraction

import sympy as sp

from llmjobs.jobs.synth.sympy.families._util import (
    X,
    Y,
    by_name,
    elements,
    is_number,
    linear_tex,
    nz,
    paren,
    polynomial_equal,
    tex,
)
from llmjobs.jobs.synth.sympy.registry import Draft, family


def _eq2(a: int, b: int, c: int) -> str:
    """``a x + b y = c``."""
    left = linear_tex(a, 0, "x") + (f" {'+' if b > 0 else '-'} {'' if abs(b) == 1 else abs(b)}y" if b else "")
    return f"{left} = {c}"


@family("simultaneous_equations", "中2", "two linear equations in two unknowns")
def simultaneous_equations(rng: random.Random, difficulty: int) -> Draft:
    hi = (4, 6, 9)[difficulty - 1]
    x0, y0 = rng.randint(-8, 8), rng.randint(-8, 8)
    while True:
        a1, b1, a2, b2 = nz(rng, -hi, hi), nz(rng, -hi, hi), nz(rng, -hi, hi), nz(rng, -hi, hi)
        if difficulty == 1:
            b2 = -b1 if rng.random() < 0.5 else b1  # y cancels by adding or subtracting
        if a1 * b2 - a2 * b1 != 0:
            break
    c1, c2 = a1 * x0 + b1 * y0, a2 * x0 + b2 * y0
    e1, e2 = _eq2(a1, b1, c1), _eq2(a2, b2, c2)
    # eliminate y: multiply (1) by b2 and (2) by b1, subtract
    m1, m2 = b2, b1
    def steps(sub: str) -> str:
        return "\n".join([
            f"(1) ${e1}$", f"(2) ${e2}$",
            (f"(1) $\\times {paren(m1)}$ $-$ (2) $\\times {paren(m2)}$: "
            f"${linear_tex(a1 * m1 - a2 * m2, 0)} = {c1 * m1 - c2 * m2}$"),
            f"$x = {x0}$",
            f"{sub}: ${linear_tex(b1, 0, 'y')} = {c1} - {paren(a1 * x0)} = {c1 - a1 * x0}$",
            f"$y = {y0}$"])

    answer = f"\\left({x0}, {y0}\\right)"

    def check(v) -> bool:
        items = elements(v)
        if len(items) != 2:
            return False
        xs, ys = (by_name(i, x=X, y=Y) for i in items)
        return sp.simplify(a1 * xs + b1 * ys - c1) == 0 and sp.simplify(a2 * xs + b2 * ys - c2) == 0

    return Draft(
        text={"ja": f"連立方程式 ${e1}$, ${e2}$ を解き、$(x, y)$ の形で答えなさい。",
              "en": f"Solve the system ${e1}$, ${e2}$. Give the answer as $(x, y)$."},
        answer=answer,
        solution={"ja": "$y$ を消去する。\n" + steps("(1) に代入") + f"\n$(x, y) = {answer}$",
                  "en": "Eliminate $y$.\n" + steps("Substitute into (1)") + f"\n$(x, y) = {answer}$"},
        params={"a1": a1, "b1": b1, "c1": c1, "a2": a2, "b2": b2, "c2": c2},
        check=check,  # substitution into both equations
    )


@family("linear_function", "中2", "the line through two points")
def linear_function(rng: random.Random, difficulty: int) -> Draft:
    slope = Fraction(nz(rng, -6, 6), 1 if difficulty < 3 else rng.choice([1, 2, 3]))
    x1 = rng.randint(-6, 6)
    dx = nz(rng, 1, 6) * (slope.denominator if difficulty < 3 else 1)
    x2 = x1 + dx
    b = Fraction(rng.randint(-9, 9)) if difficulty < 3 else Fraction(rng.randint(-18, 18), slope.denominator)
    y1, y2 = slope * x1 + b, slope * x2 + b
    line = sp.Rational(slope.numerator, slope.denominator) * X + sp.Rational(b.numerator, b.denominator)
    answer = f"y = {tex(line)}"
    steps = [f"$a = \\frac{{{tex(y2)} - {paren(y1)}}}{{{x2} - {paren(x1)}}} = {tex(slope)}$",
             f"${tex(y1)} = {tex(slope)} \\times {paren(x1)} + b$, $b = {tex(b)}$",
             f"${answer}$"]

    def check(v) -> bool:
        if not isinstance(v, sp.Equality):
            return False
        rhs = by_name(v.rhs, x=X)
        ok = all(sp.simplify(rhs.subs(X, px) - sp.Rational(py.numerator, py.denominator)) == 0
                 for px, py in ((x1, y1), (x2, y2)))
        return ok and str(v.lhs) == "y"

    return Draft(
        text={"ja": f"2点 $\\left({x1}, {tex(y1)}\\right)$, $\\left({x2}, {tex(y2)}\\right)$ を通る直線の式を求めなさい。",
              "en": f"Find the equation of the line through $\\left({x1}, {tex(y1)}\\right)$ and "
                    f"$\\left({x2}, {tex(y2)}\\right)$, in the form $y = ax + b$."},
        answer=answer,
        solution={"ja": "$y = ax + b$ とおく。\n" + "\n".join(steps),
                  "en": "Write $y = ax + b$.\n" + "\n".join(steps)},
        params={"x1": x1, "y1": str(y1), "x2": x2, "y2": str(y2)},
        check=check,  # both points lie on the answer's line
    )


@family("expression_value", "中2", "value of an expression in two letters")
def expression_value(rng: random.Random, difficulty: int) -> Draft:
    a, b = nz(rng, -5, 5), nz(rng, -5, 5)
    p, q, r = nz(rng, -6, 6), nz(rng, -6, 6), rng.randint(-9, 9)
    if difficulty == 1:
        expr = p * X + q * Y + r
    elif difficulty == 2:
        expr = p * X ** 2 + q * X * Y + r
    else:
        expr = p * X ** 2 * Y + q * X * Y ** 2 + r * Y
    value = expr.subs({X: a, Y: b})
    body = tex(expr)
    steps = [f"${body}$", f"$= {tex(expr.subs({X: sp.Symbol(f'({a})'), Y: sp.Symbol(f'({b})')}))}$".replace(
        "\\left(", "(").replace("\\right)", ")"), f"$= {value}$"]
    expected = sum(c * a ** i * b ** j for (i, j), c in sp.Poly(expr, X, Y).terms())  # term by term
    return Draft(
        text={"ja": f"$x = {a}$, $y = {b}$ のとき、${body}$ の値を求めなさい。",
              "en": f"Find the value of ${body}$ when $x = {a}$ and $y = {b}$."},
        answer=tex(value),
        solution={"ja": "$x$ と $y$ に値を代入する。\n" + "\n".join(steps),
                  "en": "Substitute the values of $x$ and $y$.\n" + "\n".join(steps)},
        params={"expr": str(expr), "x": a, "y": b},
        check=lambda v: is_number(v, expected),
    )


@family("monomial_arithmetic", "中2", "multiply and divide monomials")
def monomial_arithmetic(rng: random.Random, difficulty: int) -> Draft:
    c1, c2 = nz(rng, -6, 6), nz(rng, -6, 6)
    e = [rng.randint(0, 3) for _ in range(4)]
    m1 = c1 * X ** max(e[0], 1) * Y ** e[1]
    m2 = c2 * X ** e[2] * Y ** max(e[3], 1)
    if difficulty == 1:
        shown, value = f"{tex(m1)} \\times {_par(m2)}", m1 * m2
        step = f"$= {c1} \\times {paren(c2)} \\times {tex(m1 / c1)} \\times {tex(m2 / c2)}$"
    else:
        c3 = rng.choice([d for d in range(-12, 13) if d and (c1 * c2) % d == 0])
        m3 = c3 * X ** rng.randint(0, max(e[0], 1) + e[2]) * Y ** rng.randint(0, e[1] + max(e[3], 1))
        shown, value = f"{tex(m1)} \\times {_par(m2)} \\div {_par(m3)}", m1 * m2 / m3
        step = f"$= \\frac{{{tex(m1)} \\times {_par(m2)}}}{{{tex(m3)}}}$"
    value = sp.simplify(value)
    return Draft(
        text={"ja": f"次の計算をしなさい。\n${shown}$", "en": f"Simplify ${shown}$."},
        answer=tex(value),
        solution={"ja": f"係数どうし、文字どうしを計算する。\n${shown}$\n{step}\n$= {tex(value)}$",
                  "en": f"Multiply the coefficients and the letters separately.\n${shown}$\n{step}\n"
                        f"$= {tex(value)}$"},
        params={"shown": shown},
        check=lambda v: polynomial_equal(v, value),
    )


def _par(m: sp.Expr) -> str:
    s = tex(m)
    return f"\\left({s}\\right)" if s.startswith("-") else s
