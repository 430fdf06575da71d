"""数学IA: quadratic functions, inequalities, counting, probability, integers, trigonometric ratios."""

from __future__ import annotations

import itertools
import math
import random
from fractions import Fraction

import sympy as sp

from llmjobs.jobs.synth.sympy.families._util import X, by_name, elements, is_number, linear_tex, nz, tex
from llmjobs.jobs.synth.sympy.registry import Draft, family


@family("quadratic_vertex", "数学IA", "vertex of a parabola")
def quadratic_vertex(rng: random.Random, difficulty: int) -> Draft:
    a = nz(rng, -3, 3) if difficulty > 1 else 1
    p = sp.Rational(rng.randint(-6, 6), 1 if difficulty < 3 else rng.choice([1, 2]))
    q = rng.randint(-9, 9)
    f = sp.expand(a * (X - p) ** 2 + q)
    answer = f"\\left({tex(p)}, {tex(q)}\\right)"

    def check(v) -> bool:
        items = [by_name(i, x=X) for i in elements(v)]
        if len(items) != 2:
            return False
        vx, vy = items
        return sp.diff(f, X).subs(X, vx) == 0 and sp.simplify(f.subs(X, vx) - vy) == 0

    step = f"$y = {tex(a)}\\left(x - {tex(p)}\\right)^{{2}} + {q}$".replace("- -", "+ ").replace("+ -", "- ")
    return Draft(
        text={"ja": f"放物線 $y = {tex(f)}$ の頂点の座標を求めなさい。",
              "en": f"Find the vertex of the parabola $y = {tex(f)}$ as a point $(p, q)$."},
        answer=answer,
        solution={"ja": f"平方完成する。\n{step}\n頂点は ${answer}$", "en": f"Complete the square.\n{step}\n"
                  f"The vertex is ${answer}$."},
        params={"f": str(f)},
        check=check,  # the derivative vanishes at the vertex and the point lies on the parabola
    )


@family("quadratic_extremum", "数学IA", "maximum or minimum of a quadratic on an interval")
def quadratic_extremum(rng: random.Random, difficulty: int) -> Draft:
    a = nz(rng, -3, 3)
    p, q = rng.randint(-5, 5), rng.randint(-9, 9)
    lo = rng.randint(-6, 4)
    hi = lo + rng.randint(1, 6)
    f = sp.expand(a * (X - p) ** 2 + q)
    want = rng.choice(["max", "min"])
    candidates = [lo, hi] + ([p] if lo <= p <= hi else [])
    values = [f.subs(X, c) for c in candidates]
    value = max(values) if want == "max" else min(values)
    ja, en = ("最大値", "maximum") if want == "max" else ("最小値", "minimum")
    # second way: the extremum over a fine grid of the interval (exact at grid points including the vertex)
    grid = [Fraction(lo) + Fraction(hi - lo) * k / 600 for k in range(601)]
    fx = [a * (g - p) ** 2 + q for g in grid]
    second = max(fx) if want == "max" else min(fx)
    return Draft(
        text={"ja": f"関数 $y = {tex(f)}$ $({lo} \\le x \\le {hi})$ の{ja}を求めなさい。",
              "en": f"Find the {en} of $y = {tex(f)}$ on ${lo} \\le x \\le {hi}$."},
        answer=tex(value),
        solution={"ja": f"$y = {tex(a * (X - p) ** 2 + q)}$ と変形し、軸 $x = {p}$ と区間の位置関係を調べる。\n"
                        f"候補: " + ", ".join(f"$f({c}) = {tex(v)}$" for c, v in zip(candidates, values))
                        + f"\n{ja}は ${tex(value)}$",
                  "en": f"Write $y = {tex(a * (X - p) ** 2 + q)}$ and compare the axis $x = {p}$ with the "
                        "interval.\nCandidates: " + ", ".join(f"$f({c}) = {tex(v)}$"
                                                           for c, v in zip(candidates, values))
                        + f"\nThe {en} is ${tex(value)}$."},
        params={"f": str(f), "lo": lo, "hi": hi, "want": want},
        check=lambda v: is_number(v, float(second)),
    )


def _relation_check(v, truth, probes) -> bool:
    """The parsed inequality holds exactly where the original one does, at every probe point."""
    if not isinstance(v, (sp.Rel, sp.And, sp.Or)):
        return False
    v = by_name(v, x=X)
    if v.free_symbols != {X}:
        return False
    return all(bool(v.subs(X, t)) == truth(t) for t in probes)


@family("linear_inequality", "数学IA", "linear inequalities")
def linear_inequality(rng: random.Random, difficulty: int) -> Draft:
    a, c = nz(rng, -7, 7), nz(rng, -7, 7) if difficulty > 1 else 0
    while a == c:
        c = nz(rng, -7, 7)
    b, d = rng.randint(-15, 15), rng.randint(-15, 15)
    rel = rng.choice(["<", ">", "\\le", "\\ge"])
    ops = {"<": lambda u, w: u < w, ">": lambda u, w: u > w, "\\le": lambda u, w: u <= w,
           "\\ge": lambda u, w: u >= w}
    flip = {"<": ">", ">": "<", "\\le": "\\ge", "\\ge": "\\le"}
    bound = Fraction(d - b, a - c)
    out_rel = rel if a - c > 0 else flip[rel]
    answer = f"x {out_rel} {tex(bound)}"
    steps = [f"${linear_tex(a - c, 0)} {rel} {d - b}$"]
    if a - c < 0:
        steps.append("両辺を負の数で割るので不等号の向きが変わる。 / Dividing by a negative number flips the sign.")
    steps.append(f"${answer}$")

    def truth(t):
        return ops[rel](a * t + b, c * t + d)

    probes = [bound + Fraction(k, 3) for k in range(-6, 7)]
    return Draft(
        text={"ja": f"不等式 ${linear_tex(a, b)} {rel} {linear_tex(c, d)}$ を解きなさい。",
              "en": f"Solve the inequality ${linear_tex(a, b)} {rel} {linear_tex(c, d)}$."},
        answer=answer,
        solution={"ja": "\n".join(s.split(" / ")[0] for s in steps),
                  "en": "\n".join(s.split(" / ")[-1] for s in steps)},
        params={"a": a, "b": b, "c": c, "d": d, "rel": rel},
        check=lambda v: _relation_check(v, truth, [sp.Rational(p.numerator, p.denominator) for p in probes]),
    )


@family("quadratic_inequality", "数学IA", "quadratic inequalities")
def quadratic_inequality(rng: random.Random, difficulty: int) -> Draft:
    r1 = rng.randint(-8, 7)
    r2 = r1 + rng.randint(1, 8)
    a = 1 if difficulty == 1 else rng.choice([1, 2, 3])
    f = sp.expand(a * (X - r1) * (X - r2))
    inside = rng.random() < 0.5
    rel = rng.choice(["<", "\\le"]) if inside else rng.choice([">", "\\ge"])
    strict = rel in ("<", ">")
    le = "<" if strict else "\\le"
    if inside:
        answer = f"{r1} {le} x {le} {r2}"
    else:
        answer = f"x {le} {r1}, {r2} {le} x"  # math-verify reads the comma as "either"
    ops = {"<": lambda u: u < 0, ">": lambda u: u > 0, "\\le": lambda u: u <= 0, "\\ge": lambda u: u >= 0}

    def truth(t):
        return ops[rel](a * (t - r1) * (t - r2))

    probes = [sp.Rational(k, 2) + r1 for k in range(-4, 2 * (r2 - r1) + 5)]

    def check(v) -> bool:
        if isinstance(v, sp.FiniteSet):  # "x < a, b < x": either relation holds
            parts = [by_name(p, x=X) for p in v]
            if len(parts) != 2 or not all(isinstance(p, sp.Rel) for p in parts):
                return False
            return all(any(bool(p.subs(X, t)) for p in parts) == truth(t) for t in probes)
        return _relation_check(v, truth, probes)

    return Draft(
        text={"ja": f"二次不等式 ${tex(f)} {rel} 0$ を解きなさい。",
              "en": f"Solve the quadratic inequality ${tex(f)} {rel} 0$."},
        answer=answer,
        solution={"ja": f"${tex(sp.factor(f))} {rel} 0$\n解は ${answer}$",
                  "en": f"${tex(sp.factor(f))} {rel} 0$\nSo ${answer}$."},
        params={"f": str(f), "rel": rel},
        check=check,  # the answer holds exactly where the quadratic has the asked sign, at probe points
    )


@family("counting", "数学IA", "permutations and combinations")
def counting(rng: random.Random, difficulty: int) -> Draft:
    kind = rng.choice(["perm", "comb", "circle", "committee"] if difficulty > 1 else ["perm", "comb"])
    n = rng.randint(4, 8 if difficulty < 3 else 9)
    r = rng.randint(2, min(n - 1, 4 if difficulty == 1 else 5))
    if kind == "perm":
        value = math.perm(n, r)
        ja = f"{n}人の中から{r}人を選んで1列に並べる並べ方は何通りあるか。"
        en = f"In how many ways can {r} of {n} people be chosen and arranged in a row?"
        step = f"${{}}_{{{n}}}\\mathrm{{P}}_{{{r}}} = {value}$"
        second = sum(1 for _ in itertools.permutations(range(n), r))
    elif kind == "comb":
        value = math.comb(n, r)
        ja = f"{n}人の中から{r}人の委員を選ぶ選び方は何通りあるか。"
        en = f"In how many ways can a committee of {r} be chosen from {n} people?"
        step = f"${{}}_{{{n}}}\\mathrm{{C}}_{{{r}}} = {value}$"
        second = sum(1 for _ in itertools.combinations(range(n), r))
    elif kind == "committee":
        men, women = rng.randint(3, 12), rng.randint(3, 12)
        k, r = rng.randint(1, min(men, 4)), rng.randint(1, min(women, 4))
        value = math.comb(men, k) * math.comb(women, r)
        ja = f"男子{men}人、女子{women}人の中から男子{k}人、女子{r}人を選ぶ選び方は何通りあるか。"
        en = f"From {men} boys and {women} girls, in how many ways can {k} boys and {r} girls be chosen?"
        step = f"${{}}_{{{men}}}\\mathrm{{C}}_{{{k}}} \\times {{}}_{{{women}}}\\mathrm{{C}}_{{{r}}} = {value}$"
        second = sum(1 for _ in itertools.combinations(range(men), k)) * \
            sum(1 for _ in itertools.combinations(range(women), r))
        n = men * 100 + women
        r = k * 100 + r
    else:
        n = rng.randint(4, 8)
        value = math.factorial(n - 1)
        ja = f"{n}人が円形のテーブルのまわりに座る座り方は何通りあるか。"
        en = f"In how many ways can {n} people sit around a round table (rotations count as the same)?"
        step = f"$({n} - 1)! = {value}$"
        # second way: arrangements counted up to rotation by fixing the smallest label first
        second = sum(1 for p in itertools.permutations(range(n)) if p[0] == 0)
        r = 0
    return Draft(text={"ja": ja, "en": en}, answer=str(value), solution={"ja": step, "en": step},
                 params={"kind": kind, "n": n, "r": r}, check=lambda v: is_number(v, second))


@family("probability", "数学IA", "probability with dice and bags of balls")
def probability(rng: random.Random, difficulty: int) -> Draft:
    if rng.random() < 0.5:
        target = rng.randint(3, 11)
        kind = rng.choice(["eq", "ge"] if difficulty > 1 else ["eq"])
        good = [(i, j) for i in range(1, 7) for j in range(1, 7)
                if (i + j == target if kind == "eq" else i + j >= target)]
        value = sp.Rational(len(good), 36)
        cond_ja = f"和が{target}" if kind == "eq" else f"和が{target}以上"
        cond_en = f"equal to {target}" if kind == "eq" else f"at least {target}"
        ja = f"2個のさいころを同時に投げるとき、出る目の{cond_ja}になる確率を求めなさい。"
        en = f"Two fair dice are thrown. Find the probability that the sum is {cond_en}."
        step = f"全部で $36$ 通り、条件を満たすのは ${len(good)}$ 通り。\n$\\frac{{{len(good)}}}{{36}} = {tex(value)}$"
        step_en = f"There are $36$ outcomes and ${len(good)}$ favourable ones.\n" \
                  f"$\\frac{{{len(good)}}}{{36}} = {tex(value)}$"
        # second way: the distribution of the sum by convolution
        dist = [0] * 13
        for s in range(2, 13):
            dist[s] = 6 - abs(s - 7)
        second = Fraction(dist[target] if kind == "eq" else sum(dist[target:]), 36)
        params = {"dice": True, "target": target, "kind": kind}
    else:
        red, white = rng.randint(2, 15), rng.randint(1, 15)
        k = 2 if difficulty < 3 else rng.choice([2, 3, 4])
        k = min(k, red)
        j = k if difficulty == 1 else rng.randint(max(1, k - white), k)  # exactly j red balls
        value = sp.Rational(math.comb(red, j) * math.comb(white, k - j), math.comb(red + white, k))
        ja = f"赤玉{red}個、白玉{white}個が入った袋から同時に{k}個取り出すとき、赤玉がちょうど{j}個である確率を求めなさい。"
        en = f"A bag holds {red} red and {white} white balls. {k} balls are drawn at once. Find the " \
             f"probability that exactly {j} of them are red."
        step = f"$\\frac{{{{}}_{{{red}}}\\mathrm{{C}}_{{{j}}} \\times {{}}_{{{white}}}\\mathrm{{C}}_{{{k - j}}}}}" \
               f"{{{{}}_{{{red + white}}}\\mathrm{{C}}_{{{k}}}}} = {tex(value)}$"
        step_en = step
        # second way: enumerate labelled draws
        balls = ["r"] * red + ["w"] * white
        draws = list(itertools.combinations(range(red + white), k))
        second = Fraction(sum(sum(balls[i] == "r" for i in d) == j for d in draws), len(draws))
        params = {"dice": False, "red": red, "white": white, "k": k, "j": j}
    return Draft(text={"ja": ja, "en": en}, answer=tex(value), solution={"ja": step, "en": step_en},
                 params=params, check=lambda v: is_number(v, float(second)))


@family("gcd_lcm", "数学IA", "greatest common divisor and least common multiple")
def gcd_lcm(rng: random.Random, difficulty: int) -> Draft:
    g = rng.randint(2, 12 if difficulty < 3 else 30)
    a, b = g * rng.randint(2, 15), g * rng.randint(2, 15)
    while a == b:
        b += g
    want = rng.choice(["gcd", "lcm"])
    value = math.gcd(a, b) if want == "gcd" else math.lcm(a, b)
    # second way: brute force over divisors / multiples
    second = max(d for d in range(1, min(a, b) + 1) if a % d == 0 and b % d == 0) if want == "gcd" else \
        next(m for m in range(max(a, b), a * b + 1, max(a, b)) if m % min(a, b) == 0)
    fa, fb = sp.factorint(a), sp.factorint(b)

    def fact(f):
        return " \\times ".join(f"{p}^{{{e}}}" if e > 1 else str(p) for p, e in sorted(f.items()))

    ja = ("最大公約数", "greatest common divisor") if want == "gcd" else ("最小公倍数", "least common multiple")
    step = f"${a} = {fact(fa)}$, ${b} = {fact(fb)}$\n${value}$"
    return Draft(text={"ja": f"${a}$ と ${b}$ の{ja[0]}を求めなさい。", "en": f"Find the {ja[1]} of ${a}$ and ${b}$."},
                 answer=str(value), solution={"ja": "素因数分解する。\n" + step, "en": "Factor into primes.\n" + step},
                 params={"a": min(a, b), "b": max(a, b), "want": want}, check=lambda v: is_number(v, second))


_TRIG = {0: (0, 1), 30: (sp.Rational(1, 2), sp.sqrt(3) / 2), 45: (sp.sqrt(2) / 2, sp.sqrt(2) / 2),
         60: (sp.sqrt(3) / 2, sp.Rational(1, 2)), 90: (1, 0), 120: (sp.sqrt(3) / 2, -sp.Rational(1, 2)),
         135: (sp.sqrt(2) / 2, -sp.sqrt(2) / 2), 150: (sp.Rational(1, 2), -sp.sqrt(3) / 2), 180: (0, -1)}


@family("trig_ratios", "数学IA", "trigonometric ratios of standard angles")
def trig_ratios(rng: random.Random, difficulty: int) -> Draft:
    angles = [30, 45, 60] if difficulty == 1 else list(_TRIG)
    t1, t2 = rng.choice(angles), rng.choice(angles)
    f1, f2 = rng.choice(["sin", "cos"]), rng.choice(["sin", "cos", "tan"])
    if f2 == "tan" and t2 in (90,):
        f2 = "sin"
    c1, c2 = nz(rng, 1, 3), nz(rng, -3, 3)

    def val(f, t):
        s, c = _TRIG[t]
        return s if f == "sin" else c if f == "cos" else sp.nsimplify(s / c)

    value = sp.nsimplify(sp.radsimp(sp.sympify(c1 * val(f1, t1) + c2 * val(f2, t2))))
    shown = f"{'' if c1 == 1 else c1}\\{f1} {t1}^\\circ {'+' if c2 > 0 else '-'} " \
            f"{'' if abs(c2) == 1 else abs(c2)}\\{f2} {t2}^\\circ"
    numeric = c1 * getattr(math, f1)(math.radians(t1)) + c2 * getattr(math, f2)(math.radians(t2))
    step = f"$= {'' if c1 == 1 else c1}\\left({tex(val(f1, t1))}\\right) {'+' if c2 > 0 else '-'} " \
           f"{'' if abs(c2) == 1 else abs(c2)}\\left({tex(val(f2, t2))}\\right) = {tex(value)}$"
    return Draft(text={"ja": f"${shown}$ の値を求めなさい。", "en": f"Find the exact value of ${shown}$."},
                 answer=tex(value), solution={"ja": f"${shown}$\n{step}", "en": f"${shown}$\n{step}"},
                 params={"shown": shown}, check=lambda v: is_number(v, numeric, 1e-9))


@family("law_of_cosines", "数学IA", "the law of cosines")
def law_of_cosines(rng: random.Random, difficulty: int) -> Draft:
    b, c = rng.randint(1, 15), rng.randint(1, 15)
    angle = rng.choice([60, 120] if difficulty < 3 else [45, 60, 90, 120, 135, 150, 30])
    cos = _TRIG[angle][1]
    sq = sp.nsimplify(b * b + c * c - 2 * b * c * cos)
    value = sp.sqrt(sq)
    value = sp.radsimp(sp.simplify(value))
    numeric = math.sqrt(b * b + c * c - 2 * b * c * math.cos(math.radians(angle)))
    step = f"$a^2 = {b}^2 + {c}^2 - 2 \\cdot {b} \\cdot {c} \\cos {angle}^\\circ = {tex(sq)}$\n$a = {tex(value)}$"
    return Draft(
        text={"ja": f"$\\triangle ABC$ において $b = {b}$, $c = {c}$, $A = {angle}^\\circ$ のとき、$a$ を求めなさい。",
              "en": f"In triangle $ABC$, $b = {b}$, $c = {c}$ and $A = {angle}^\\circ$. Find $a$."},
        answer=tex(value), solution={"ja": "余弦定理より\n" + step, "en": "By the law of cosines,\n" + step},
        params={"b": b, "c": c, "A": angle}, check=lambda v: is_number(v, numeric))
