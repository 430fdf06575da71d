"""The registry of problem families: built-in ones by curriculum area, plus entry points.

A family is a function ``fn(rng, difficulty) -> Draft``: it draws its parameters from ``rng`` (a
``random.Random``), computes the exact answer with SymPy (or exact rationals), and writes the statement and a
worked solution in every language it speaks. ``Draft.check`` is the family's second, independent way to
confirm the answer: it receives the answer *as math-verify parsed it from the LaTeX* (what a grader sees) and
returns whether it is right, by substitution, enumeration or numeric evaluation. A draft whose check fails is
dropped by the generator.

Other packages add families through the entry point group ``llmjobs.sympy_families``; each entry point
resolves to a ``Family`` or an iterable of them.
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

CATEGORIES = ("中1", "中2", "中3", "数学IA", "数学IIB", "数学IIIC")
LANGUAGES = ("ja", "en")
DIFFICULTIES = (1, 2, 3)
ENTRY_POINT_GROUP = "llmjobs.sympy_families"

# the modules holding the built-in families, one per curriculum area
_BUILTIN_MODULES = [f"llmjobs.jobs.synth.sympy.families.{m}"
                    for m in ("chu1", "chu2", "chu3", "math_ia", "math_iib", "math_iiic")]


@dataclass
class Draft:
    """One generated problem in every language, before the generator's checks."""

    text: dict[str, str]  # language -> statement (inline LaTeX in $...$)
    answer: str  # the exact answer as LaTeX (no $), read by math-verify
    solution: dict[str, str]  # language -> worked solution, one step per line, ending in the answer
    params: dict[str, Any]  # JSON-serialisable parameters; with the family they identify the problem
    check: Callable[[Any], bool]  # second way: gets the answer as math-verify parsed it
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Family:
    name: str
    category: str
    topic: str  # a few English words, shown in the families table
    fn: Callable[[random.Random, int], Draft]

    def draft(self, rng: random.Random, difficulty: int) -> Draft:
        return self.fn(rng, difficulty)

    def generate(self, rng: random.Random, difficulty: int, language: str) -> dict[str, Any]:
        """One problem in one language: the statement, answer, category, family, parameters and solution."""
        d = self.fn(rng, difficulty)
        return {"problem": d.text[language], "answer": d.answer, "solution": d.solution[language],
                "category": self.category, "family": self.name, "difficulty": difficulty,
                "language": language, "params": d.params}


_DECLARED: list[Family] = []


def family(name: str, category: str, topic: str) -> Callable[[Callable[[random.Random, int], Draft]], Family]:
    """Decorator for a built-in family function."""
    if category not in CATEGORIES:
        raise ValueError(f"family {name}: category {category!r} is not one of {CATEGORIES}")

    def wrap(fn: Callable[[random.Random, int], Draft]) -> Family:
        fam = Family(name, category, topic, fn)
        _DECLARED.append(fam)
        return fam

    return wrap


_FAMILIES: dict[str, Family] | None = None


def families() -> dict[str, Family]:
    """Every known family by name, built-in first, then entry points (which may replace a built-in)."""
    global _FAMILIES
    if _FAMILIES is None:
        for module in _BUILTIN_MODULES:
            importlib.import_module(module)
        table = {f.name: f for f in _DECLARED}
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            loaded = ep.load()
            for fam in [loaded] if isinstance(loaded, Family) else list(loaded):
                if not isinstance(fam, Family):
                    raise TypeError(f"entry point {ep.name} ({ENTRY_POINT_GROUP}) gave {fam!r}, not a Family")
                if fam.category not in CATEGORIES:
                    raise ValueError(f"entry point {ep.name}: family {fam.name} has category {fam.category!r}; "
                                     f"known: {', '.join(CATEGORIES)}")
                table[fam.name] = fam
        _FAMILIES = table
    return _FAMILIES


def register(fam: Family) -> None:
    families()[fam.name] = fam


def select(names: Iterable[str], exclude: Iterable[str] = ()) -> list[Family]:
    """Families named by name, by category, or ``all``; ``ValueError`` lists the known ones otherwise."""
    table = families()

    def expand(items: Iterable[str], role: str) -> list[str]:
        out: list[str] = []
        for item in items:
            if item == "all":
                out += list(table)
            elif item in CATEGORIES:
                out += [n for n, f in table.items() if f.category == item]
            elif item in table:
                out.append(item)
            else:
                raise ValueError(f"unknown family or category {item!r}; categories: "
                                 f"{', '.join(CATEGORIES)}; families: {', '.join(sorted(table))}")
        return out

    drop = set(expand(exclude, "exclude"))
    chosen = [n for n in dict.fromkeys(expand(names, "families")) if n not in drop]
    if not chosen:
        raise ValueError("families: the selection is empty after 'exclude'")
    return [table[n] for n in chosen]
