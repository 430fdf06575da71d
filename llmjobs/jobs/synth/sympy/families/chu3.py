"""中3: expansion, factoring, square roots, quadratic equations, y = ax^2, Pythagoras."""

from __future__ import annotations

import math
import random

import sympy as sp

from llmjobs.jobs.synth.sympy.families._util import (
    X,
    by_name,
    elements,
    is_number,
    nz,
    polynomial_equal,
    sqrt_simplify,
    tex,
)
from llmjobs.jobs.synth.sympy.registry import Draft, family


@family("expansion", "中3", "expand products of binomials")
def expansion(rng: random.Random, difficulty: int) -> Draft:
    a = 1 if difficulty == 1 else nz(rng, -4, 4)
    c = 1 if difficulty < 3 else nz(rng, -4, 4)
    b, d = nz(rng, -9, 9), nz(rng, -9, 9)
    square = rng.random() < 0.3
    if square:
        c, d = a, b
    f1, f2 = a * X + b, c * X + d
    product = sp.expand(f1 * f2)
    shown = f"\\left({tex(f1)}\\right)^{{2}}" if square else f"\\left({tex(f1)}\\right)\\left({tex(f2)}\\right)"
    step = (f"$= {tex(a * c * X ** 2)} + \\left({tex(a * d)} + {tex(b * c)}\\right)x + {tex(b * d)}$"
            .replace("+ -", "- "))
    return Draft(
        text={"ja": f"次の式を展開しなさい。\n${shown}$", "en": f"Expand ${shown}$."},
        answer=tex(product),
        solution={"ja": f"${shown}$\n{step}\n$= {tex(product)}$", "en": f"${shown}$\n{step}\n$= {tex(product)}$"},
        params={"a": a, "b": b, "c": c, "d": d},
        check=lambda v: polynomial_equal(v, f1 * f2),  # evaluation of the unexpanded product at random points
    )


@family("factoring", "中3", "factor quadratics")
def factoring(rng: random.Random, difficulty: int) -> Draft:
    k = 1 if difficulty < 3 else rng.choice([2, 3, -1, -2])
    a = 1 if difficulty == 1 else rng.choice([1, 1, 2, 3])
    p, q = nz(rng, -9, 9), nz(rng, -9, 9)
    poly = sp.expand(k * (a * X + p) * (X + q))
    factored = sp.factor(poly)
    answer = tex(factored)

    def check(v) -> bool:
        v = by_name(v.rhs if isinstance(v, sp.Equality) else v, x=X)
        if not isinstance(v, (sp.Mul, sp.Pow)):  # a product, not the expanded polynomial
            return False
        return sp.expand(v - poly) == 0

    return Draft(
        text={"ja": f"次の式を因数分解しなさい。\n${tex(poly)}$", "en": f"Factor ${tex(poly)}$ completely."},
        answer=answer,
        solution={"ja": f"${tex(poly)} = {answer}$", "en": f"${tex(poly)} = {answer}$"},
        params={"poly": str(poly)},
        check=check,  # expanding the parsed product gives the polynomial back
    )


@family("square_roots", "中3", "simplify expressions with square roots")
def square_roots(rng: random.Random, difficulty: int) -> Draft:
    base = rng.choice([2, 3, 5, 6, 7])
    kind = rng.choice(["sum", "product"] if difficulty < 3 else ["sum", "product", "rationalize"])
    if kind == "sum":
        m, n = rng.randint(1, 5), rng.randint(1, 5)
        c1, c2 = nz(rng, -4, 4), nz(rng, -4, 4)
        if c1 * m + c2 * n == 0:
            c2 += 1 if c2 != -1 else 2
        shown = f"{c1 if c1 != 1 else ''}\\sqrt{{{m * m * base}}} {'+' if c2 > 0 else '-'} " \
                f"{abs(c2) if abs(c2) != 1 else ''}\\sqrt{{{n * n * base}}}"
        value = (c1 * m + c2 * n) * sp.sqrt(base)
        numeric = c1 * math.sqrt(m * m * base) + c2 * math.sqrt(n * n * base)
        params = {"kind": kind, "m": m, "n": n, "c1": c1, "c2": c2, "base": base}
    elif kind == "product":
        u, w = rng.randint(2, 12), rng.randint(2, 12)
        shown = f"\\sqrt{{{u}}} \\times \\sqrt{{{w}}}"
        value = sp.sqrt(u * w)
        numeric = math.sqrt(u) * math.sqrt(w)
        params = {"kind": kind, "u": u, "w": w}
    else:
        m = rng.randint(1, 6) * base
        shown = f"\\frac{{{m}}}{{\\sqrt{{{base}}}}}"
        value = sp.Rational(m, base) * sp.sqrt(base)
        numeric = m / math.sqrt(base)
        params = {"kind": kind, "m": m, "base": base}
    a, _b = sqrt_simplify(u * w) if kind == "product" else (None, None)
    note = f"$\\sqrt{{{u * w}}} = {tex(value)}$" if kind == "product" and a != 1 else f"$= {tex(value)}$"
    return Draft(
        text={"ja": f"次の計算をしなさい。\n${shown}$", "en": f"Simplify ${shown}$."},
        answer=tex(value),
        solution={"ja": f"${shown}$\n{note}", "en": f"${shown}$\n{note}"},
        params=params,
        check=lambda v: is_number(v, numeric),
    )


@family("quadratic_equation", "中3", "quadratic equations: factoring and the formula")
def quadratic_equation(rng: random.Random, difficulty: int) -> Draft:
    if difficulty < 3 or rng.random() < 0.4:
        r1, r2 = rng.randint(-12, 12), rng.randint(-12, 12)
        a = 1 if difficulty == 1 else rng.choice([1, 2, 3, -1])
        poly = sp.expand(a * (X - r1) * (X - r2))
    else:
        while True:
            b, c = rng.randint(-12, 12), rng.randint(-12, 12)
            disc = b * b - 4 * c
            if disc > 0 and math.isqrt(disc) ** 2 != disc:
                break
        poly = X ** 2 + b * X + c
    roots = sorted(set(sp.solve(poly, X)), key=lambda r: float(r))
    answer = ", ".join(tex(r) for r in roots)
    coeffs = sp.Poly(poly, X).all_coeffs()

    def check(v) -> bool:
        got = [by_name(i, x=X) for i in elements(v)]
        if len(got) != len(roots):
            return False
        return all(abs(complex(sp.N(poly.subs(X, g)))) < 1e-9 for g in got) and len(set(got)) == len(roots)

    method_ja = "因数分解" if all(r.is_rational for r in roots) else "解の公式"
    method_en = "Factor" if all(r.is_rational for r in roots) else "Use the quadratic formula"
    return Draft(
        text={"ja": f"二次方程式 ${tex(poly)} = 0$ を解きなさい。解が2つあるときはカンマで区切って答えなさい。",
              "en": f"Solve ${tex(poly)} = 0$. If there are two solutions, separate them with a comma."},
        answer=answer,
        solution={"ja": f"{method_ja}する。\n${tex(sp.factor(poly))} = 0$\n$x = {answer}$",
                  "en": f"{method_en}.\n${tex(sp.factor(poly))} = 0$\n$x = {answer}$"},
        params={"coeffs": [str(c) for c in coeffs]},
        check=check,  # every root makes the polynomial vanish; as many roots as expected
    )


@family("quadratic_rate", "中3", "y = ax^2: rate of change")
def quadratic_rate(rng: random.Random, difficulty: int) -> Draft:
    a = sp.Rational(nz(rng, -6, 6), 1 if difficulty < 3 else rng.choice([1, 2, 3]))
    p = rng.randint(-8, 7)
    q = p + rng.randint(1, 8)
    value = a * (p + q)
    fp, fq = a * p ** 2, a * q ** 2
    steps = f"$\\frac{{{tex(fq)} - ({tex(fp)})}}{{{q} - ({p})}} = {tex(value)}$"
    return Draft(
        text={"ja": f"関数 $y = {tex(a * X ** 2)}$ について、$x$ の値が ${p}$ から ${q}$ まで増加するときの変化の割合を"
                    "求めなさい。",
              "en": f"For $y = {tex(a * X ** 2)}$, find the average rate of change as $x$ increases from ${p}$ "
                    f"to ${q}$."},
        answer=tex(value),
        solution={"ja": f"(yの増加量)÷(xの増加量)\n{steps}", "en": f"(change in y) / (change in x)\n{steps}"},
        params={"a": str(a), "p": p, "q": q},
        check=lambda v: is_number(v, (float(a) * q * q - float(a) * p * p) / (q - p)),
    )


@family("pythagorean", "中3", "Pythagorean theorem")
def pythagorean(rng: random.Random, difficulty: int) -> Draft:
    a, b = rng.randint(1, 40), rng.randint(1, 40)
    ask_leg = difficulty > 1 and rng.random() < 0.5
    if ask_leg:
        hyp, leg = max(a, b) + rng.randint(1, 15), min(a, b)
        value = sp.sqrt(hyp ** 2 - leg ** 2)
        numeric = math.sqrt(hyp ** 2 - leg ** 2)
        ja = f"直角三角形の斜辺が ${hyp}$、他の1辺が ${leg}$ のとき、残りの辺の長さを求めなさい。"
        en = f"A right triangle has hypotenuse ${hyp}$ and one leg ${leg}$. Find the other leg."
        step = f"$\\sqrt{{{hyp}^2 - {leg}^2}} = \\sqrt{{{hyp ** 2 - leg ** 2}}} = {tex(value)}$"
        params = {"hyp": hyp, "leg": leg}
    else:
        value = sp.sqrt(a * a + b * b)
        numeric = math.hypot(a, b)
        ja = f"直角をはさむ2辺の長さが ${a}$, ${b}$ の直角三角形の斜辺の長さを求めなさい。"
        en = f"A right triangle has legs ${a}$ and ${b}$. Find the hypotenuse."
        step = f"$\\sqrt{{{a}^2 + {b}^2}} = \\sqrt{{{a * a + b * b}}} = {tex(value)}$"
        params = {"legs": sorted([a, b])}
    return Draft(text={"ja": ja, "en": en}, answer=tex(value), solution={"ja": step, "en": step}, params=params,
                 check=lambda v: is_number(v, numeric))
