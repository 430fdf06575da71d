"""数学IIIC: complex numbers, vectors, limits, derivatives and integrals of transcendental functions, series."""

from __future__ import annotations

import math
import random

import sympy as sp

from llmjobs.jobs.synth.sympy.families._util import X, is_number, number, nz, tex
from llmjobs.jobs.synth.sympy.registry import Draft, family


def _complex_tex(z: sp.Expr) -> str:
    re, im = sp.re(z), sp.im(z)
    if im == 0:
        return tex(re)
    imag = ("" if im == 1 else "-" if im == -1 else tex(im)) + "i"
    if re == 0:
        return imag
    return f"{tex(re)} {'-' if im < 0 else '+'} {imag.lstrip('-')}"


def _as_complex(v) -> complex | None:
    """The parser reads 'i' as a symbol: put the imaginary unit in its place."""
    if isinstance(v, sp.Equality):
        v = v.rhs
    if not isinstance(v, sp.Expr):
        return None
    v = v.subs({s: sp.I for s in v.free_symbols if s.name == "i"})
    if v.free_symbols:
        return None
    return complex(sp.N(v))


@family("complex_arithmetic", "数学IIIC", "arithmetic of complex numbers")
def complex_arithmetic(rng: random.Random, difficulty: int) -> Draft:
    a, b, c, d = rng.randint(-6, 6), nz(rng, -6, 6), rng.randint(-6, 6), nz(rng, -6, 6)
    op = rng.choice(["*"] if difficulty == 1 else ["*", "/", "+"])
    z1, z2 = a + b * sp.I, c + d * sp.I
    value = sp.expand(z1 * z2) if op != "/" else sp.expand(sp.radsimp(z1 / z2))
    if op == "+":
        value = sp.expand(z1 ** 2 + z2)
        shown = f"\\left({_complex_tex(z1)}\\right)^{{2}} + \\left({_complex_tex(z2)}\\right)"
        numeric = complex(a, b) ** 2 + complex(c, d)
    elif op == "*":
        shown = f"\\left({_complex_tex(z1)}\\right)\\left({_complex_tex(z2)}\\right)"
        numeric = complex(a, b) * complex(c, d)
    else:
        shown = f"\\frac{{{_complex_tex(z1)}}}{{{_complex_tex(z2)}}}"
        numeric = complex(a, b) / complex(c, d)
    answer = _complex_tex(value)
    step = "$i^2 = -1$" + (" 分母の共役複素数を掛ける。" if op == "/" else "")
    step_en = "$i^2 = -1$" + (" Multiply by the conjugate of the denominator." if op == "/" else "")
    return Draft(
        text={"ja": f"${shown}$ を $a + bi$ の形で表しなさい（$i$ は虚数単位）。",
              "en": f"Write ${shown}$ in the form $a + bi$, where $i$ is the imaginary unit."},
        answer=answer, solution={"ja": f"{step}\n${shown} = {answer}$", "en": f"{step_en}\n${shown} = {answer}$"},
        params={"a": a, "b": b, "c": c, "d": d, "op": op},
        check=lambda v: (z := _as_complex(v)) is not None and abs(z - numeric) < 1e-9,  # Python complex numbers
    )


@family("complex_modulus", "数学IIIC", "absolute value of a complex number")
def complex_modulus(rng: random.Random, difficulty: int) -> Draft:
    a, b = nz(rng, -9, 9), nz(rng, -9, 9)
    z = a + b * sp.I
    if difficulty > 1:
        c, d = nz(rng, -4, 4), nz(rng, -4, 4)
        z = sp.expand(z * (c + d * sp.I))
        a, b = int(sp.re(z)), int(sp.im(z))
    value = sp.sqrt(a * a + b * b)
    return Draft(
        text={"ja": f"複素数 $z = {_complex_tex(z)}$ の絶対値 $|z|$ を求めなさい。",
              "en": f"Find the absolute value $|z|$ of $z = {_complex_tex(z)}$."},
        answer=tex(value),
        solution={"ja": f"$|z| = \\sqrt{{({a})^2 + ({b})^2}} = {tex(value)}$",
                  "en": f"$|z| = \\sqrt{{({a})^2 + ({b})^2}} = {tex(value)}$"},
        params={"a": a, "b": b}, check=lambda v: is_number(v, abs(complex(a, b))))


def _vec(v: tuple[int, ...]) -> str:
    return "\\left(" + ", ".join(map(str, v)) + "\\right)"


@family("vector_dot", "数学IIIC", "dot products and lengths of vectors")
def vector_dot(rng: random.Random, difficulty: int) -> Draft:
    dim = 2 if difficulty < 3 else 3
    u = tuple(rng.randint(-6, 6) for _ in range(dim))
    w = tuple(rng.randint(-6, 6) for _ in range(dim))
    ask = rng.choice(["dot", "length"] if difficulty > 1 else ["dot"])
    if ask == "dot":
        value = sp.Integer(sum(p * q for p, q in zip(u, w)))
        ja, en = "内積 $\\vec{a} \\cdot \\vec{b}$", "the dot product $\\vec{a} \\cdot \\vec{b}$"
        step = "$" + " + ".join(f"({p})({q})" for p, q in zip(u, w)) + f" = {value}$"
        # second way: |a+b|^2 - |a-b|^2 = 4 a.b
        second = (sum((p + q) ** 2 for p, q in zip(u, w)) - sum((p - q) ** 2 for p, q in zip(u, w))) / 4
    else:
        s = tuple(p + q for p, q in zip(u, w))
        value = sp.sqrt(sum(c * c for c in s))
        ja, en = "$|\\vec{a} + \\vec{b}|$", "$|\\vec{a} + \\vec{b}|$"
        step = f"$\\vec{{a}} + \\vec{{b}} = {_vec(s)}$\n$|\\vec{{a}} + \\vec{{b}}| = {tex(value)}$"
        second = math.hypot(*s)
    return Draft(
        text={"ja": f"$\\vec{{a}} = {_vec(u)}$, $\\vec{{b}} = {_vec(w)}$ のとき、{ja}を求めなさい。",
              "en": f"Let $\\vec{{a}} = {_vec(u)}$ and $\\vec{{b}} = {_vec(w)}$. Find {en}."},
        answer=tex(value), solution={"ja": step, "en": step},
        params={"u": list(u), "w": list(w), "ask": ask}, check=lambda v: is_number(v, second))


@family("limit", "数学IIIC", "limits of rational functions")
def limit(rng: random.Random, difficulty: int) -> Draft:
    if rng.random() < 0.5:  # x -> a, a removable zero
        a = nz(rng, -5, 5)
        b = rng.randint(-6, 6)
        num, den = sp.expand((X - a) * (X - b + (1 if difficulty == 3 else 0) * X)), X - a
        point, shown_point = a, str(a)
        value = sp.limit(num / den, X, a)

        def f(t: float) -> float:
            return float(num.subs(X, t)) / float(den.subs(X, t))

        probe = [a + 1e-6, a - 1e-6]
    else:  # x -> infinity
        deg = rng.randint(1, 2 if difficulty < 3 else 3)
        p, q = nz(rng, -7, 7), nz(rng, 1, 7)
        num = p * X ** deg + rng.randint(-9, 9) * X + rng.randint(-9, 9)
        den = q * X ** deg + rng.randint(-9, 9)
        point, shown_point = sp.oo, "\\infty"
        value = sp.limit(num / den, X, sp.oo)

        def f(t: float) -> float:
            return float(num.subs(X, t) / den.subs(X, t))

        probe = [1e7]
    shown = f"\\lim_{{x \\to {shown_point}}} \\frac{{{tex(num)}}}{{{tex(den)}}}"
    method_ja = "分母分子を因数分解して約分する。" if point != sp.oo else "分母分子を最高次の項で割る。"
    method_en = "Factor and cancel." if point != sp.oo else "Divide numerator and denominator by the highest power."
    return Draft(
        text={"ja": f"${shown}$ を求めなさい。", "en": f"Find ${shown}$."}, answer=tex(value),
        solution={"ja": f"{method_ja}\n${shown} = {tex(value)}$", "en": f"{method_en}\n${shown} = {tex(value)}$"},
        params={"num": str(num), "den": str(den), "point": str(point)},
        # second way: evaluate the function next to the limit point
        check=lambda v: (n := number(v)) is not None and all(abs(f(t) - float(n)) < 1e-4 for t in probe))


@family("derivative_transcendental", "数学IIIC", "derivatives of exp, log and trig functions at a point")
def derivative_transcendental(rng: random.Random, difficulty: int) -> Draft:
    k, c = nz(rng, -3, 3), nz(rng, -5, 5)
    n = rng.randint(1, 4)
    kind = rng.choice(["exp", "sin", "log"] if difficulty > 1 else ["exp", "sin"])
    if kind == "exp":
        f, a = c * X ** n * sp.exp(k * X), rng.choice([0, 1, -1, 2])
    elif kind == "sin":
        f, a = c * X ** n * sp.sin(k * X), rng.choice([sp.pi, sp.pi / 2, sp.pi / 3, sp.pi / 6])
    else:
        f, a = c * X ** n * sp.log(X), rng.choice([1, sp.E, sp.E ** 2])
    df = sp.diff(f, X)
    value = sp.expand(df.subs(X, a))  # like terms combine on their own; simplify() costs 70 ms a draw

    def check(v) -> bool:
        import mpmath

        nval = number(v)
        if nval is None:
            return False
        fl = sp.lambdify(X, f, "mpmath")  # here, not per draw: only checked candidates pay for it
        with mpmath.workdps(40):  # second way: a numeric derivative in high precision
            d = mpmath.diff(fl, mpmath.mpf(sp.N(a, 50)))
        return abs(complex(d) - complex(sp.N(nval, 30))) < 1e-9

    return Draft(
        text={"ja": f"$f(x) = {tex(f)}$ のとき、$f'\\left({tex(a)}\\right)$ を求めなさい。",
              "en": f"Let $f(x) = {tex(f)}$. Find $f'\\left({tex(a)}\\right)$."},
        answer=tex(value),
        solution={"ja": f"積の微分法より $f'(x) = {tex(df)}$\n$f'\\left({tex(a)}\\right) = {tex(value)}$",
                  "en": f"By the product rule, $f'(x) = {tex(df)}$\n$f'\\left({tex(a)}\\right) = {tex(value)}$"},
        params={"f": str(f), "a": str(a)}, check=check)


@family("integral_transcendental", "数学IIIC", "definite integrals of exp, 1/x and trig functions")
def integral_transcendental(rng: random.Random, difficulty: int) -> Draft:
    kind = rng.choice(["exp", "trig", "recip"] if difficulty < 3 else ["exp", "trig", "recip", "xexp"])
    k = nz(rng, 1, 4)
    c = nz(rng, -9, 9)
    if kind == "exp":
        f, lo, hi = c * sp.exp(k * X), 0, rng.choice([1, 2, 3])
    elif kind == "trig":
        f, lo, hi = c * rng.choice([sp.sin, sp.cos])(k * X), 0, rng.choice([sp.pi / 2, sp.pi / 3, sp.pi / 6, sp.pi])
    elif kind == "recip":
        f, lo, hi = sp.Rational(c, 1) / (X + k), 0, rng.randint(1, 5)
    else:
        f, lo, hi = c * X * sp.exp(X), 0, rng.choice([1, 2])
        k = 1
    value = sp.simplify(sp.integrate(f, (X, lo, hi)))

    def check(v) -> bool:
        import mpmath

        nval = number(v)
        if nval is None:
            return False
        fl = sp.lambdify(X, f, "mpmath")
        with mpmath.workdps(30):  # second way: numeric quadrature
            q = mpmath.quad(fl, [mpmath.mpf(sp.N(lo, 40)), mpmath.mpf(sp.N(hi, 40))])
        return abs(complex(q) - complex(sp.N(nval, 30))) < 1e-9

    F = sp.integrate(f, X)
    return Draft(
        text={"ja": f"定積分 $\\int_{{{tex(lo)}}}^{{{tex(hi)}}} {tex(f)} \\, dx$ を求めなさい。",
              "en": f"Evaluate $\\int_{{{tex(lo)}}}^{{{tex(hi)}}} {tex(f)} \\, dx$."},
        answer=tex(value),
        solution={"ja": f"原始関数は ${tex(F)}$\n${tex(value)}$", "en": f"An antiderivative is ${tex(F)}$\n"
                                                                      f"${tex(value)}$"},
        params={"f": str(f), "lo": str(lo), "hi": str(hi)}, check=check)


@family("infinite_series", "数学IIIC", "sums of infinite geometric series")
def infinite_series(rng: random.Random, difficulty: int) -> Draft:
    a = nz(rng, -15, 15)
    den = rng.randint(2, 9)
    r = sp.Rational(nz(rng, -(den - 1), den - 1), den)
    value = a / (1 - r)
    n = sp.Symbol("n")
    term = a * r ** (n - 1)
    # second way: partial sums converge to the answer
    partial = sum(a * float(r) ** i for i in range(400))
    return Draft(
        text={"ja": f"無限等比級数 $\\sum_{{n=1}}^{{\\infty}} {tex(term)}$ の和を求めなさい。",
              "en": f"Find the sum of the infinite geometric series $\\sum_{{n=1}}^{{\\infty}} {tex(term)}$."},
        answer=tex(value),
        solution={"ja": f"初項 ${a}$、公比 ${tex(r)}$ で $|r| < 1$ より収束する。\n$\\frac{{{a}}}{{1 - \\left({tex(r)}\\right)}}"
                        f" = {tex(value)}$",
                  "en": f"First term ${a}$, ratio ${tex(r)}$, $|r| < 1$, so it converges.\n"
                        f"$\\frac{{{a}}}{{1 - \\left({tex(r)}\\right)}} = {tex(value)}$"},
        params={"a": a, "r": str(r)}, check=lambda v: is_number(v, partial, 1e-9))
