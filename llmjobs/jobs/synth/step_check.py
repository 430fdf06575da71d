"""The process check of synth.distill (``check_steps``): which equalities a sample's displayed steps assert.

Chain-of-equalities solutions (synth.sympy's arithmetic, fraction, linear-expression and linear-equation
families) show their work as display lines, one ``$...$`` alone on a line, each a rewrite of the previous one::

    $\\left(-8\\right) - 8$        $5x + 3 = 38$
    $= -8 - 8$                    $5x = 38 - 3$
    $= -16$                       $x = 7$

A sample can reach the right final answer through a wrong line; grading only the answer keeps it. This module
turns a reasoning text into the ``(gold, answer)`` pairs that must all grade equal for its steps to hold:

- a line without ``=`` (after a leading ``= `` is removed) must equal the label: ``(label, line)``;
- an equation ``L = R`` must hold once the unknown is replaced by the label: ``(R', L')``; a chain
  ``A = B = C`` gives one pair per adjacent ``=``.

No grader here (pure text work): synth.distill grades the pairs in the grader pool it already holds. An empty
list means no checkable line; the caller decides what that means (synth.distill drops such samples).
"""

from __future__ import annotations

import itertools
import re

# A display line: "$...$" (or "$$...$$") alone on its line, with no other "$" inside.
_DISPLAY = re.compile(r"^\$\$([^$]+)\$\$$|^\$([^$]+)\$$")
_LEADING_EQ = re.compile(r"^=\s*")
# Letters that are not the unknown even when they spell it: command names (\times, \frac, \left) and the
# text arguments of commands that typeset words.
_COMMAND_END = re.compile(r"\\[A-Za-z]+$")
_PROTECTED = r"\\(?:text|mathrm|textbf|textit|mbox|operatorname)\s*\{[^{}]*\}|\\[A-Za-z]+|\\."


def display_lines(reasoning: str) -> list[str]:
    """The contents of the display lines, a leading ``= `` removed, in order."""
    out = []
    for line in reasoning.splitlines():
        m = _DISPLAY.match(line.strip())
        if m:
            body = _LEADING_EQ.sub("", (m.group(1) or m.group(2)).strip()).strip()
            out.append(body)
    return out


def label_value(label: str, unknown: str = "x") -> str:
    """The label as a value: without ``$`` and without an ``x =`` in front (a majority label is a sample's own
    answer, which may read ``x = 7``)."""
    s = label.replace("$", "").strip()
    m = re.match(rf"^{re.escape(unknown)}\s*=\s*(.+)$", s)
    return m.group(1).strip() if m else s


def substitute(expr: str, unknown: str, value: str) -> str:
    """``expr`` with every free occurrence of ``unknown`` replaced by ``(value)``. A product is written out
    with ``\\cdot`` (``5x`` -> ``5 \\cdot (7)``): math-verify reads ``5(7)`` as 12, not 35."""
    pattern = re.compile(rf"({_PROTECTED})|{re.escape(unknown)}")
    out: list[str] = []
    pos = 0
    for m in pattern.finditer(expr):
        if m.group(1):
            continue
        out.append(expr[pos:m.start()])
        before = "".join(out).rstrip()
        after = expr[m.end():].lstrip()
        piece = f"({value})"
        # a product only after an operand: a digit or letter that ends no command name, a closing bracket
        if before and (before[-1] in ")]}" or (before[-1].isalnum() and not _COMMAND_END.search(before))):
            piece = " \\cdot " + piece
        if after and (after[0].isalnum() or after[0] == "(" or after.startswith("\\left")):
            piece = piece + " \\cdot "
        out.append(piece)
        pos = m.end()
    out.append(expr[pos:])
    return "".join(out)


def step_pairs(reasoning: str, label: str, unknown: str = "x") -> list[tuple[str, str]]:
    """The ``(gold, answer)`` pairs that must all grade equal for the displayed steps of ``reasoning`` to
    hold at ``label``; ``[]`` when there is no display line."""
    value = label_value(label, unknown)
    pairs: list[tuple[str, str]] = []
    for line in display_lines(reasoning):
        sides = [s.strip() for s in line.split("=")]
        if len(sides) == 1:
            pairs.append((value, sides[0]))
            continue
        sides = [substitute(s, unknown, value) for s in sides]
        pairs.extend((right, left) for left, right in itertools.pairwise(sides))
    return pairs
