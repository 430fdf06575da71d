"""数学IIB: sequences and sums, exponentials, logarithms, trigonometric equations, derivatives, integrals."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import sympy as sp

from llmjobs.jobs.synth.sympy.families._util import X, by_name, elements, is_number, nz, tex
from llmjobs.jobs.synth.sympy.registry import Draft, family


@family("arithmetic_sequence", "数学IIB", "arithmetic sequences: a term or the sum of terms")
def arithmetic_sequence(rng: random.Random, difficulty: int) -> Draft:
    a, d = rng.randint(-20, 20), nz(rng, -9, 9)
    n = rng.randint(5, 20 if difficulty < 3 else 50)
    ask = rng.choice(["term", "sum"] if difficulty > 1 else ["term"])
    terms = [a + k * d for k in range(n)]
    if ask == "term":
        value = a + (n - 1) * d
        ja, en = f"第{n}項", f"the {n}th term"
        step = f"$a_{{{n}}} = {a} + ({n} - 1) \\times ({d}) = {value}$"
        second = terms[-1]
    else:
        value = n * (2 * a + (n - 1) * d) // 2
        ja, en = f"初項から第{n}項までの和", f"the sum of the first {n} terms"
        step = f"$S_{{{n}}} = \\frac{{{n}\\left(2 \\times ({a}) + ({n} - 1) \\times ({d})\\right)}}{{2}} = {value}$"
        second = sum(terms)
    return Draft(
        text={"ja": f"初項 ${a}$、公差 ${d}$ の等差数列の{ja}を求めなさい。",
              "en": f"An arithmetic sequence has first term ${a}$ and common difference ${d}$. Find {en}."},
        answer=str(value), solution={"ja": step, "en": step},
        params={"a": a, "d": d, "n": n, "ask": ask}, check=lambda v: is_number(v, second))


@family("geometric_sequence", "数学IIB", "geometric sequences: a term or the sum of terms")
def geometric_sequence(rng: random.Random, difficulty: int) -> Draft:
    a = nz(rng, -9, 9)
    r = rng.choice([2, 3, -2, -3] if difficulty < 3 else [2, 3, -2, -3, 4, 5, sp.Rational(1, 2)])
    n = rng.randint(3, 10 if abs(r) <= 3 else 7)
    ask = rng.choice(["term", "sum"] if difficulty > 1 else ["term"])
    r = sp.sympify(r)
    terms = [Fraction(a) * Fraction(int(sp.numer(r)), int(sp.denom(r))) ** k for k in range(n)]
    if ask == "term":
        value = a * r ** (n - 1)
        ja, en = f"第{n}項", f"the {n}th term"
        step = f"$a_{{{n}}} = {a} \\times \\left({tex(r)}\\right)^{{{n - 1}}} = {tex(value)}$"
        second = terms[-1]
    else:
        value = sp.nsimplify(a * (r ** n - 1) / (r - 1))
        ja, en = f"初項から第{n}項までの和", f"the sum of the first {n} terms"
        step = f"$S_{{{n}}} = \\frac{{{a}\\left(\\left({tex(r)}\\right)^{{{n}}} - 1\\right)}}{{{tex(r)} - 1}} = " \
               f"{tex(value)}$"
        second = sum(terms)
    return Draft(
        text={"ja": f"初項 ${a}$、公比 ${tex(r)}$ の等比数列の{ja}を求めなさい。",
              "en": f"A geometric sequence has first term ${a}$ and common ratio ${tex(r)}$. Find {en}."},
        answer=tex(value), solution={"ja": step, "en": step},
        params={"a": a, "r": str(r), "n": n, "ask": ask}, check=lambda v: is_number(v, float(second)))


@family("sigma_sum", "数学IIB", "sums with the sigma notation")
def sigma_sum(rng: random.Random, difficulty: int) -> Draft:
    k = sp.Symbol("k")
    a, b, c = (rng.randint(-3, 3) if difficulty > 1 else 0), nz(rng, -5, 5), rng.randint(-9, 9)
    if difficulty == 3 and rng.random() < 0.5:
        a = nz(rng, -3, 3)
    n = rng.randint(4, 20)
    term = a * k ** 2 + b * k + c
    value = sp.summation(term, (k, 1, n))
    second = sum(a * i * i + b * i + c for i in range(1, n + 1))  # term by term
    step = f"$\\sum_{{k=1}}^{{{n}}} \\left({tex(term)}\\right) = {value}$"
    return Draft(
        text={"ja": f"$\\sum_{{k=1}}^{{{n}}} \\left({tex(term)}\\right)$ を求めなさい。",
              "en": f"Evaluate $\\sum_{{k=1}}^{{{n}}} \\left({tex(term)}\\right)$."},
        answer=str(value),
        solution={"ja": "$\\sum k = \\frac{n(n+1)}{2}$, $\\sum k^2 = \\frac{n(n+1)(2n+1)}{6}$ を使う。\n" + step,
                  "en": "Use $\\sum k = \\frac{n(n+1)}{2}$ and $\\sum k^2 = \\frac{n(n+1)(2n+1)}{6}$.\n" + step},
        params={"a": a, "b": b, "c": c, "n": n}, check=lambda v: is_number(v, second))


@family("exponential_equation", "数学IIB", "exponential equations")
def exponential_equation(rng: random.Random, difficulty: int) -> Draft:
    base = rng.choice([2, 3, 5])
    p, q = nz(rng, 1, 3), rng.randint(-4, 4)
    sol = sp.Rational(rng.randint(-4, 6), 1 if difficulty < 3 else rng.choice([1, p]))
    m = p * sol + q  # base^(p x + q) = base^m
    if difficulty > 1 and m.is_integer:
        rhs = sp.Integer(base) ** m
    else:
        rhs = None
    expo = tex(p * X + q)
    right = tex(rhs) if rhs is not None else f"{base}^{{{tex(m)}}}"
    return Draft(
        text={"ja": f"方程式 ${base}^{{{expo}}} = {right}$ を解きなさい。",
              "en": f"Solve ${base}^{{{expo}}} = {right}$ for $x$."},
        answer=tex(sol),
        solution={"ja": f"${right} = {base}^{{{tex(m)}}}$ より指数を比べて ${expo} = {tex(m)}$\n$x = {tex(sol)}$",
                  "en": f"${right} = {base}^{{{tex(m)}}}$; compare exponents: ${expo} = {tex(m)}$\n"
                        f"$x = {tex(sol)}$"},
        params={"base": base, "p": p, "q": q, "m": str(m)},
        # second way: the exponents agree numerically (base^(p x + q) = base^m)
        check=lambda v: (n := _num(v)) is not None and abs((p * n + q) - float(m)) < 1e-9,
    )


def _num(v):
    from llmjobs.jobs.synth.sympy.families._util import number

    n = number(v)
    return None if n is None else float(n)


@family("logarithm", "数学IIB", "values of logarithms")
def logarithm(rng: random.Random, difficulty: int) -> Draft:
    base = rng.choice([2, 3, 5, 10] if difficulty > 1 else [2, 3, 10])
    if difficulty == 1:
        e = rng.randint(-3, 6)
        arg = sp.Integer(base) ** e
        shown, value = f"\\log_{{{base}}} {tex(arg)}", sp.Integer(e)
        numeric = math.log(float(arg), base)
        step = f"${tex(arg)} = {base}^{{{e}}}$ より ${shown} = {e}$"
    else:
        u, w = rng.randint(2, 40), rng.randint(2, 40)
        e = rng.randint(0, 4)
        # log_b(u * b^e) + log_b(w) - log_b(u * w) = e
        c1 = u * base ** e
        shown = f"\\log_{{{base}}} {c1} + \\log_{{{base}}} {w} - \\log_{{{base}}} {u * w}"
        value = sp.Integer(e)
        log = f"\\log_{{{base}}}"
        step = f"${log} {c1} + {log} {w} - {log} {u * w} = {log} \\frac{{{c1} \\times {w}}}{{{u * w}}} = " \
               f"{log} {base ** e} = {e}$"
        if difficulty == 3 and rng.random() < 0.5:
            k = rng.randint(2, 3)
            shown = f"{k}{log} {base ** 2} + " + shown
            value = value + 2 * k
            numeric = k * math.log(base ** 2, base)
            step = f"${k}{log} {base ** 2} = {k} \\times 2 = {2 * k}$\n{step}\n${2 * k} + {e} = {value}$"
        else:
            numeric = 0.0
        numeric += math.log(c1, base) + math.log(w, base) - math.log(u * w, base)
    return Draft(text={"ja": f"${shown}$ の値を求めなさい。", "en": f"Evaluate ${shown}$."}, answer=tex(value),
                 solution={"ja": step, "en": step.replace("より", "so")}, params={"shown": shown},
                 check=lambda v: is_number(v, numeric, 1e-8))


_ANGLES = [sp.pi * k / 6 for k in range(12)] + [sp.pi * k / 4 for k in (1, 3, 5, 7)]
_FUNCS = {"sin": (sp.sin, math.sin), "cos": (sp.cos, math.cos), "tan": (sp.tan, math.tan)}
# the exact values each function takes at the standard angles (tan where it is defined)
_VALUES = {fn: sorted({sp.nsimplify(f(a)) for a in _ANGLES if not (fn == "tan" and sp.cos(a) == 0)}, key=float)
           for fn, (f, _) in _FUNCS.items()}


@family("trig_equation", "数学IIB", "trigonometric equations on [0, 2π)")
def trig_equation(rng: random.Random, difficulty: int) -> Draft:
    fn = rng.choice(["sin", "cos"] if difficulty == 1 else ["sin", "cos", "tan"])
    c = rng.choice(_VALUES[fn])
    p = 1 if difficulty == 1 else rng.randint(1, 4)
    q = 0 if difficulty == 1 else rng.randint(-9, 9)
    rhs = sp.nsimplify(p * c + q)
    fnum = _FUNCS[fn][1]
    sols = [a for a in _ANGLES if abs(fnum(float(a)) - float(c)) < 1e-12 and not (fn == "tan" and sp.cos(a) == 0)]
    sols.sort(key=float)
    answer = ", ".join(tex(s) for s in sols)
    lhs = f"{'' if p == 1 else p}\\{fn} \\theta" + (f" {'+' if q > 0 else '-'} {abs(q)}" if q else "")

    def check(v) -> bool:
        got = [float(sp.N(g)) for g in elements(v)]
        # second way: a scan of [0, 2π) in steps of π/12 finds exactly these solutions of p f(θ) + q = rhs
        scan = [k * math.pi / 12 for k in range(24)]
        expected = [t for t in scan if abs(p * fnum(t) + q - float(rhs)) < 1e-9
                    and not (fn == "tan" and abs(math.cos(t)) < 1e-12)]
        return len(got) == len(expected) and all(any(abs(g - e) < 1e-9 for g in got) for e in expected)

    step = f"$\\{fn} \\theta = {tex(c)}$"
    return Draft(
        text={"ja": f"$0 \\le \\theta < 2\\pi$ のとき、方程式 ${lhs} = {tex(rhs)}$ を解きなさい。"
                    "解が複数あるときはカンマで区切って答えなさい。",
              "en": f"Solve ${lhs} = {tex(rhs)}$ for $0 \\le \\theta < 2\\pi$. Separate several solutions "
                    "with commas."},
        answer=answer,
        solution={"ja": f"{step}\n単位円より $\\theta = {answer}$",
                  "en": f"{step}\nFrom the unit circle, $\\theta = {answer}$"},
        params={"fn": fn, "c": str(c), "p": p, "q": q}, check=check)


def _poly(rng: random.Random, degree: int) -> sp.Expr:
    return sum(rng.randint(-5, 5) * X ** k for k in range(degree)) + nz(rng, -4, 4) * X ** degree


@family("derivative_value", "数学IIB", "derivative of a polynomial at a point")
def derivative_value(rng: random.Random, difficulty: int) -> Draft:
    f = _poly(rng, difficulty + 1)
    a = rng.randint(-4, 4)
    df = sp.diff(f, X)
    value = df.subs(X, a)

    def check(v) -> bool:
        n = _num(v)
        if n is None:
            return False
        h = sp.Rational(1, 10 ** 6)  # second way: a symmetric difference quotient, exact rational arithmetic
        approx = (f.subs(X, a + h) - f.subs(X, a - h)) / (2 * h)
        return abs(float(approx) - n) < 1e-6

    return Draft(
        text={"ja": f"$f(x) = {tex(f)}$ のとき、$f'({a})$ を求めなさい。",
              "en": f"Let $f(x) = {tex(f)}$. Find $f'({a})$."},
        answer=str(value),
        solution={"ja": f"$f'(x) = {tex(df)}$\n$f'({a}) = {value}$", "en": f"$f'(x) = {tex(df)}$\n$f'({a}) = {value}$"},
        params={"f": str(f), "a": a}, check=check)


@family("tangent_line", "数学IIB", "tangent line to a polynomial curve")
def tangent_line(rng: random.Random, difficulty: int) -> Draft:
    f = _poly(rng, 2 if difficulty == 1 else 3)
    a = rng.randint(-3, 3)
    slope, fa = sp.diff(f, X).subs(X, a), f.subs(X, a)
    line = sp.expand(slope * (X - a) + fa)
    answer = f"y = {tex(line)}"

    def check(v) -> bool:
        if not isinstance(v, sp.Equality) or str(v.lhs) != "y":
            return False
        g = by_name(v.rhs, x=X)
        # second way: the line meets the curve at x = a with multiplicity at least two
        return sp.rem(sp.expand(f - g), (X - a) ** 2, X) == 0

    return Draft(
        text={"ja": f"曲線 $y = {tex(f)}$ 上の点 $\\left({a}, {fa}\\right)$ における接線の方程式を求めなさい。",
              "en": f"Find the tangent line to $y = {tex(f)}$ at the point $\\left({a}, {fa}\\right)$."},
        answer=answer,
        solution={"ja": f"$y' = {tex(sp.diff(f, X))}$ より傾きは ${slope}$\n$y - ({fa}) = {slope}(x - ({a}))$\n${answer}$",
                  "en": f"$y' = {tex(sp.diff(f, X))}$, so the slope is ${slope}$\n$y - ({fa}) = {slope}(x - ({a}))$\n"
                        f"${answer}$"},
        params={"f": str(f), "a": a}, check=check)


@family("definite_integral", "数学IIB", "definite integrals of polynomials")
def definite_integral(rng: random.Random, difficulty: int) -> Draft:
    f = _poly(rng, min(difficulty + 1, 3))
    lo = rng.randint(-3, 2)
    hi = lo + rng.randint(1, 3)
    F = sp.integrate(f, X)
    value = F.subs(X, hi) - F.subs(X, lo)

    def check(v) -> bool:
        n = number(v)
        if n is None:
            return False
        # second way: Simpson's rule, exact for polynomials of degree three or less
        m = sp.Rational(lo + hi, 2)
        simpson = sp.Rational(hi - lo, 6) * (f.subs(X, lo) + 4 * f.subs(X, m) + f.subs(X, hi))
        return sp.simplify(n - simpson) == 0

    return Draft(
        text={"ja": f"定積分 $\\int_{{{lo}}}^{{{hi}}} \\left({tex(f)}\\right) dx$ を求めなさい。",
              "en": f"Evaluate $\\int_{{{lo}}}^{{{hi}}} \\left({tex(f)}\\right) dx$."},
        answer=tex(value),
        solution={"ja": f"原始関数は $F(x) = {tex(F)}$\n$F({hi}) - F({lo}) = {tex(value)}$",
                  "en": f"An antiderivative is $F(x) = {tex(F)}$\n$F({hi}) - F({lo}) = {tex(value)}$"},
        params={"f": str(f), "lo": lo, "hi": hi}, check=check)


def number(v):
    from llmjobs.jobs.synth.sympy.families._util import number as _n

    return _n(v)
