"""中1: signed numbers, fractions, letters in expressions, linear equations, proportion."""

from __future__ import annotations

import random
from fractions import Fraction

import sympy as sp

from llmjobs.jobs.synth.sympy.families._util import (
    X,
    by_name,
    close,
    is_number,
    linear_tex,
    number,
    nz,
    paren,
    polynomial_equal,
    tex,
)
from llmjobs.jobs.synth.sympy.registry import Draft, family

_OPS = {"+": "+", "-": "-", "*": "\\times", "/": "\\div"}


def _term(rng: random.Random, difficulty: int) -> tuple[str, int, int]:
    """One term of a sum: a number, or a product/exact quotient of two signed numbers."""
    hi = (9, 12, 20)[difficulty - 1]
    kind = rng.choice(["n", "n", "*", "/"] if difficulty > 1 else ["n"])
    if kind == "n":
        return "n", nz(rng, -hi, hi), 0
    if kind == "*":
        return "*", nz(rng, -hi, hi), nz(rng, -9, 9)
    q, b = nz(rng, -hi, hi), nz(rng, -9, 9)
    return "/", q * b, b


def _term_value(t: tuple[str, int, int]) -> Fraction:
    kind, a, b = t
    return Fraction(a) if kind == "n" else Fraction(a * b) if kind == "*" else Fraction(a, b)


def _term_tex(t: tuple[str, int, int]) -> str:
    kind, a, b = t
    return paren(a) if kind == "n" else f"{paren(a)} {_OPS[kind]} {paren(b)}"


@family("integer_arithmetic", "中1", "signed integers: the four operations, order of operations")
def integer_arithmetic(rng: random.Random, difficulty: int) -> Draft:
    n = rng.randint(2, 3) if difficulty < 3 else rng.randint(3, 4)
    terms = [_term(rng, difficulty) for _ in range(n)]
    signs = ["+"] + [rng.choice("+-") for _ in range(n - 1)]
    expr = _term_tex(terms[0]) + "".join(f" {s} {_term_tex(t)}" for s, t in zip(signs[1:], terms[1:]))
    values = [_term_value(t) for t in terms]
    total = sum(v if s == "+" else -v for s, v in zip(signs, values))
    steps = [f"${expr}$"]
    if any(t[0] != "n" for t in terms):
        steps.append("$= " + paren(values[0]) + "".join(f" {s} {paren(v)}" for s, v in zip(signs[1:], values[1:]))
                     + "$")
    # then left to right, one addition at a time: what a learner writes (and a small model can learn)
    signed = [v if s == "+" else -v for s, v in zip(signs, values)]
    for i in range(len(signed) - 1):
        head = sum(signed[:i + 1])
        line = "$= " + tex(head) + "".join(f" {'+' if v >= 0 else '-'} {tex(abs(v))}" for v in signed[i + 1:]) + "$"
        if line.removeprefix("$= ") != steps[-1].removeprefix("$= ").removeprefix("$"):  # no line twice
            steps.append(line)
    steps.append(f"$= {tex(total)}$")
    # second way: SymPy evaluates the same expression from a plain-text rendering
    plain = "".join(f" {s} " + (f"({a})" if k == "n" else f"(({a}){k}({b}))") for s, (k, a, b) in zip(signs, terms))
    expected = sp.sympify(plain, rational=True)
    return Draft(
        text={"ja": f"次の計算をしなさい。\n${expr}$", "en": f"Compute ${expr}$."},
        answer=tex(total),
        solution={"ja": "乗法・除法を先に計算し、次に加法・減法を計算する。\n" + "\n".join(steps),
                  "en": "Do multiplication and division first, then addition and subtraction.\n" + "\n".join(steps)},
        params={"terms": [list(t) for t in terms], "signs": signs},
        check=lambda v: is_number(v, expected),
    )


def _frac_tex(f: Fraction) -> str:
    return tex(f)


@family("fraction_arithmetic", "中1", "fractions: add, subtract, multiply, divide")
def fraction_arithmetic(rng: random.Random, difficulty: int) -> Draft:
    hi = (6, 10, 12)[difficulty - 1]

    def draw() -> Fraction:
        while True:
            f = Fraction(nz(rng, -hi if difficulty > 1 else 1, hi), rng.randint(2, hi))
            if f.denominator != 1:
                return f

    a, b = draw(), draw()
    op = rng.choice("+-" if difficulty == 1 else "+-*/")
    expr = f"{_frac_tex(a)} {_OPS[op]} {paren(b)}"
    ja = {"+": "通分して分子を足す", "-": "通分して分子を引く", "*": "分子どうし、分母どうしを掛ける",
          "/": "割る数の逆数を掛ける"}[op]
    en = {"+": "Use a common denominator and add the numerators", "-": "Use a common denominator and "
          "subtract the numerators", "*": "Multiply numerators and denominators",
          "/": "Multiply by the reciprocal of the divisor"}[op]
    steps = [f"${expr}$"]
    if op in "+-":
        lcm = a.denominator * b.denominator // sp.igcd(a.denominator, b.denominator)
        na, nb = a.numerator * (lcm // a.denominator), b.numerator * (lcm // b.denominator)
        total = a + b if op == "+" else a - b
        num = na + nb if op == "+" else na - nb
        second = f"\\frac{{{nb}}}{{{lcm}}}" if nb >= 0 else f"\\left(-\\frac{{{-nb}}}{{{lcm}}}\\right)"
        steps.append(f"$= \\frac{{{na}}}{{{lcm}}} {op} {second}$")
        if Fraction(num, lcm) != total or lcm != total.denominator:
            steps.append(f"$= \\frac{{{num}}}{{{lcm}}}$")
    elif op == "*":
        total = a * b
        steps.append(f"$= \\frac{{{a.numerator} \\times {paren(b.numerator)}}}{{{a.denominator} \\times "
                     f"{b.denominator}}}$")
    else:
        total = a / b
        inv = 1 / b
        steps.append(f"$= {_frac_tex(a)} \\times {paren(inv)}$")
        steps.append(f"$= \\frac{{{a.numerator} \\times {paren(inv.numerator)}}}{{{a.denominator} \\times "
                     f"{inv.denominator}}}$")
    if steps[-1] != f"$= {tex(total)}$":
        steps.append(f"$= {tex(total)}$")
    af, bf = a.numerator / a.denominator, b.numerator / b.denominator
    expected = {"+": af + bf, "-": af - bf, "*": af * bf, "/": af / bf}[op]
    return Draft(
        text={"ja": f"次の計算をしなさい。\n${expr}$", "en": f"Compute ${expr}$ and simplify."},
        answer=tex(total),
        solution={"ja": f"{ja}。\n" + "\n".join(steps), "en": f"{en}.\n" + "\n".join(steps)},
        params={"a": str(a), "b": str(b), "op": op},
        check=lambda v: is_number(v, expected),  # floating-point evaluation of the original expression
    )


@family("linear_equation", "中1", "linear equations in one unknown")
def linear_equation(rng: random.Random, difficulty: int) -> Draft:
    hi = (6, 9, 12)[difficulty - 1]
    a = nz(rng, -hi, hi)
    c = 0 if difficulty == 1 else nz(rng, -hi, hi)
    while c == a:
        c = nz(rng, -hi, hi)
    p = nz(rng, -9, 9) if difficulty == 3 else 0
    if difficulty == 3 and rng.random() < 0.5:
        sol = Fraction(nz(rng, -12, 12), rng.randint(2, 5))
    else:
        sol = Fraction(rng.randint(-10, 10))
    b = rng.randint(-20, 20)
    # a(x + p) + b = c x + d  with x = sol
    d = (a - c) * sol + a * p + b
    if d.denominator != 1:  # keep the statement in integers: scale both sides
        a, b, c, d = a * d.denominator, b * d.denominator, c * d.denominator, d * d.denominator
        d = Fraction(d)
    d = int(d)
    if p:
        lhs = f"{'' if a == 1 else '-' if a == -1 else a}\\left({linear_tex(1, p)}\\right)" + (
            f" {'+' if b > 0 else '-'} {abs(b)}" if b else "")
    else:
        lhs = linear_tex(a, b)
    rhs = linear_tex(c, d)
    steps = [f"${lhs} = {rhs}$"]
    if p:
        steps.append(f"${linear_tex(a, a * p + b)} = {rhs}$")
    b2 = a * p + b
    if c:
        steps.append(f"${linear_tex(a, 0)} {'-' if c > 0 else '+'} {linear_tex(abs(c), 0)} = {d} "
                     f"{'-' if b2 >= 0 else '+'} {abs(b2)}$")
    elif b2:
        steps.append(f"${linear_tex(a, 0)} = {d} {'-' if b2 > 0 else '+'} {abs(b2)}$")
    steps.append(f"${linear_tex(a - c, 0)} = {d - b2}$")
    steps.append(f"$x = {tex(sol)}$")
    eq_l = a * (X + p) + b
    eq_r = c * X + d

    def check(v) -> bool:
        v = by_name(v, x=X)
        n = v.rhs if isinstance(v, sp.Equality) else v
        return isinstance(n, sp.Expr) and not n.free_symbols and sp.simplify((eq_l - eq_r).subs(X, n)) == 0

    return Draft(
        text={"ja": f"方程式 ${lhs} = {rhs}$ を解きなさい。",
              "en": f"Solve the equation ${lhs} = {rhs}$ for $x$."},
        answer=tex(sol),
        solution={"ja": "$x$ の項を左辺に、数の項を右辺に移項する。\n" + "\n".join(steps),
                  "en": "Move the $x$ terms to the left and the numbers to the right.\n" + "\n".join(steps)},
        params={"a": a, "p": p, "b": b, "c": c, "d": d},
        check=check,  # substitution into the equation
    )


@family("proportion", "中1", "direct and inverse proportion")
def proportion(rng: random.Random, difficulty: int) -> Draft:
    inverse = difficulty >= 2 and rng.random() < 0.5
    k = Fraction(nz(rng, -12, 12), 1 if difficulty == 1 else rng.choice([1, 1, 2, 3]))
    x1 = nz(rng, -6, 6)
    x2 = nz(rng, -10, 10)
    while x2 == x1:
        x2 = nz(rng, -10, 10)
    y1 = k / x1 if inverse else k * x1
    y2 = k / x2 if inverse else k * x2
    kind_ja, kind_en = ("反比例", "inversely proportional to") if inverse else ("比例", "directly proportional to")
    form = "y = \\frac{a}{x}" if inverse else "y = ax"
    step_k = f"$a = {paren(x1)} \\times {paren(y1)} = {tex(k)}$" if inverse else \
        f"$a = {tex(y1)} \\div {paren(x1)} = {tex(k)}$"
    step_y = f"$y = {tex(k)} \\div {paren(x2)} = {tex(y2)}$" if inverse else \
        f"$y = {tex(k)} \\times {paren(x2)} = {tex(y2)}$"
    return Draft(
        text={"ja": f"$y$ は $x$ に{kind_ja}し、$x = {x1}$ のとき $y = {tex(y1)}$ である。$x = {x2}$ のときの "
                    "$y$ の値を求めなさい。",
              "en": f"$y$ is {kind_en} $x$, and $y = {tex(y1)}$ when $x = {x1}$. Find $y$ when $x = {x2}$."},
        answer=tex(y2),
        solution={"ja": f"${form}$ とおく。\n{step_k}\n{step_y}", "en": f"Write ${form}$.\n{step_k}\n{step_y}"},
        params={"inverse": inverse, "k": str(k), "x1": x1, "x2": x2},
        check=lambda v: _same_ratio(v, inverse, x1, y1, x2),
    )


def _same_ratio(v, inverse: bool, x1: int, y1: Fraction, x2: int) -> bool:
    """Second way: the point (x2, answer) satisfies the relation the first point fixes."""
    n = number(v)
    if n is None:
        return False
    return close(n * x2, x1 * y1) if inverse else close(n * x1, y1 * x2)


@family("linear_expression", "中1", "simplify linear expressions with brackets")
def linear_expression(rng: random.Random, difficulty: int) -> Draft:
    hi = (5, 7, 9)[difficulty - 1]
    p, q = nz(rng, 1, hi), nz(rng, -hi, hi)
    a, b, c, d = nz(rng, -hi, hi), rng.randint(-hi, hi), nz(rng, -hi, hi), rng.randint(-hi, hi)
    if difficulty == 1:
        q = rng.choice([1, -1])
    result = (p * a + q * c) * X + (p * b + q * d)
    if result == 0 or (p * a + q * c) == 0:
        c += 1 if c != -1 else 2
        result = (p * a + q * c) * X + (p * b + q * d)
    first = f"{'' if p == 1 else p}\\left({linear_tex(a, b)}\\right)"
    second = f"{'+' if q > 0 else '-'} {'' if abs(q) == 1 else abs(q)}\\left({linear_tex(c, d)}\\right)"
    expr = f"{first} {second}"
    expanded = f"{linear_tex(p * a, p * b)} {'+' if q * c > 0 else '-'} {linear_tex(abs(q * c), 0)}" + (
        f" {'+' if q * d > 0 else '-'} {abs(q * d)}" if q * d else "")
    steps = [f"${expr}$", f"$= {expanded}$", f"$= {linear_tex(p * a + q * c, p * b + q * d)}$"]
    expected = p * (a * X + b) + q * (c * X + d)
    return Draft(
        text={"ja": f"次の式を計算しなさい。\n${expr}$", "en": f"Simplify ${expr}$."},
        answer=linear_tex(p * a + q * c, p * b + q * d),
        solution={"ja": "分配法則でかっこをはずし、同類項をまとめる。\n" + "\n".join(steps),
                  "en": "Expand the brackets, then collect like terms.\n" + "\n".join(steps)},
        params={"p": p, "q": q, "a": a, "b": b, "c": c, "d": d},
        check=lambda v: polynomial_equal(v, expected),  # numeric evaluation at random points
    )
