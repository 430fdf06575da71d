"""Small helpers the family modules share: drawing numbers, writing them as LaTeX, reading parsed answers."""

from __future__ import annotations

import math
import random
from fractions import Fraction
from typing import Any

import sympy as sp

X, Y = sp.symbols("x y")


def nz(rng: random.Random, lo: int, hi: int) -> int:
    """A nonzero integer in [lo, hi]."""
    while True:
        v = rng.randint(lo, hi)
        if v != 0:
            return v


def tex(value: Any) -> str:
    """LaTeX of a number or expression; rationals as \\frac, polynomials in descending powers."""
    if isinstance(value, Fraction):
        value = sp.Rational(value.numerator, value.denominator)
    if isinstance(value, int):
        return str(value)
    return sp.latex(value, order="lex" if isinstance(value, sp.Expr) and value.free_symbols else None,
                    ln_notation=True)


def paren(v: Any) -> str:
    """A number written so it can follow an operator: negative ones in parentheses."""
    s = tex(v)
    return f"\\left({s}\\right)" if s.startswith("-") else s


def signed_term(coef: int, var: str = "", first: bool = False) -> str:
    """``coef`` times ``var`` as a term of a sum: '3x', '- x', '+ 5' ..."""
    if coef == 0:
        return ""
    mag = abs(coef)
    body = (var if mag == 1 and var else f"{mag}{var}")
    if first:
        return f"-{body}" if coef < 0 else body
    return f"- {body}" if coef < 0 else f"+ {body}"


def linear_tex(a: int, b: int, var: str = "x") -> str:
    """``a var + b`` in LaTeX (a or b may be 0)."""
    parts = [signed_term(a, var, first=True)] if a else []
    if b or not parts:
        parts.append(signed_term(b, "", first=not parts) if b else "0")
    return " ".join(parts)


def frac(v: Fraction) -> str:
    return tex(v)


def number(value: Any) -> sp.Expr | None:
    """The number a parsed answer stands for: ``3``, ``x = 3`` and ``\\{3\\}`` all give 3; else None."""
    if isinstance(value, sp.Equality):
        value = value.rhs
    if isinstance(value, sp.FiniteSet) and len(value) == 1:
        value = next(iter(value))
    if isinstance(value, sp.Equality):
        value = value.rhs
    if isinstance(value, (int, float)):
        return sp.nsimplify(value)
    if isinstance(value, sp.Expr) and not value.free_symbols:
        return value
    return None


def close(a: Any, b: Any, tol: float = 1e-9) -> bool:
    try:
        fa, fb = complex(sp.N(a, 30)), complex(b if isinstance(b, (int, float, complex)) else sp.N(b, 30))
    except (TypeError, ValueError):
        return False
    return abs(fa - fb) <= tol * max(1.0, abs(fb))


def is_number(value: Any, expected: Any, tol: float = 1e-9) -> bool:
    """The parsed answer is a number equal to ``expected`` (checked numerically)."""
    n = number(value)
    return n is not None and close(n, expected, tol)


def by_name(expr: Any, **symbols: sp.Symbol) -> Any:
    """Replace the parser's symbols by ours, matched by name (the parser may give them assumptions)."""
    if not hasattr(expr, "free_symbols"):
        return expr
    return expr.subs({s: symbols[s.name] for s in expr.free_symbols if s.name in symbols})


def elements(value: Any) -> list[Any]:
    """A parsed list answer ('2, 3' is a set) as a list of numbers; a single value as a one-item list."""
    if isinstance(value, sp.Interval):  # math-verify reads "(a, b)" with a < b as an open interval
        items = [value.start, value.end]
    elif isinstance(value, (sp.FiniteSet, tuple, list, sp.Tuple)):
        items = list(value)
    else:
        items = [value]
    return [i.rhs if isinstance(i, sp.Equality) else i for i in items]


def polynomial_equal(value: Any, expected: sp.Expr, rng_seed: int = 7, points: int = 4) -> bool:
    """A parsed expression in x (and y) equals ``expected`` at a few random rational points."""
    if isinstance(value, sp.Equality):
        value = value.rhs
    if not isinstance(value, sp.Expr):
        return False
    v = by_name(value, x=X, y=Y)
    if v.free_symbols - {X, Y}:
        return False
    r = random.Random(rng_seed)
    for _ in range(points):
        at = {X: sp.Rational(r.randint(-50, 50), r.randint(1, 9)), Y: sp.Rational(r.randint(-50, 50), 7)}
        if sp.simplify(v.subs(at) - expected.subs(at)) != 0:
            return False
    return True


def reduce(n: int, d: int) -> Fraction:
    return Fraction(n, d)


def sqrt_simplify(n: int) -> tuple[int, int]:
    """sqrt(n) = a * sqrt(b) with b square-free."""
    a, b = 1, n
    k = 2
    while k * k <= b:
        while b % (k * k) == 0:
            b //= k * k
            a *= k
        k += 1
    return a, b


def degrees(expr_deg: int) -> str:
    return f"{expr_deg}^\\circ"


def isqrt_exact(n: int) -> int | None:
    r = math.isqrt(n)
    return r if r * r == n else None
