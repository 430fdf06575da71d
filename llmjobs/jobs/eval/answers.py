"""Find the final answer in a model output, and clean an answer string before grading.

Rules (in order): NFKC-normalise (full-width digits and colons become ASCII); split at the last ``</think>``;
in the text after it take the last brace-matched ``\\boxed{...}`` (or ``\\fbox{...}``), else the last
``最終的な回答：`` / ``答え：`` / "final answer" line, else no answer. An output that opens ``<think>`` and never
closes it is a reasoning failure (``closed=False``); by default it has no answer, or, with
``grade_unclosed=True``, the same rules run over its reasoning text.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

Source = Literal["boxed", "line"]


@dataclass(frozen=True)
class Extraction:
    answer: str | None
    closed: bool
    source: Source | None


_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
_MATH_SPAN = re.compile(r"\$\$?([^$]+)\$\$?")
_BOX_BARE = re.compile(r"\\boxed\s+([^\s$]+)")  # "\boxed 5"
# After NFKC the full-width colon "：" is ":".
_LINE = re.compile(
    r"(?:最終的な(?:回答|答え)|答え)\s*(?::|は)|final\s+answer\s*(?:is\s*)?:?",
    re.IGNORECASE,
)


def last_boxed(text: str) -> str | None:
    """Contents of the last complete ``\\boxed{...}``/``\\fbox{...}`` (braces matched, ``\\{`` skipped)."""
    found: str | None = None
    found_at = -1
    for m in _BOX.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            c = text[i]
            if c == "\\":
                i += 2
                continue
            depth += c == "{"
            depth -= c == "}"
            i += 1
        if depth == 0:
            found, found_at = text[m.end() : i - 1], m.start()
    for m in _BOX_BARE.finditer(text):
        if m.start() > found_at:
            found, found_at = m.group(1), m.start()
    return None if found is None else found.strip()


def answer_line(text: str) -> str | None:
    """What follows the last answer marker on its line (or on the next non-empty line)."""
    matches = list(_LINE.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end() :]
    for line in rest.split("\n"):
        line = line.strip().strip("*").strip()
        if line:
            # "The final answer is $5$. I hope it is correct.": the math, not the sentence around it
            math = _MATH_SPAN.search(line)
            return math.group(1).strip() if math else line
    return None


def _final_answer(text: str) -> tuple[str | None, Source | None]:
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed, "boxed"
    line = answer_line(text)
    if line is not None:
        return line, "line"
    return None, None


def extract_answer(text: str, *, grade_unclosed: bool = False, expect_think: bool = False) -> Extraction:
    """``expect_think``: the prompt already opened ``<think>`` (some chat templates do), so an output without
    ``</think>`` is unclosed even if it never writes ``<think>`` itself."""
    text = unicodedata.normalize("NFKC", text or "")
    _, sep, tail = text.rpartition("</think>")
    if sep:
        answer, source = _final_answer(tail)
        return Extraction(answer, True, source)
    if "<think>" in text or expect_think:
        if not grade_unclosed:
            return Extraction(None, False, None)
        answer, source = _final_answer(text)
        return Extraction(answer, False, source)
    answer, source = _final_answer(text)
    return Extraction(answer, True, source)


_THOUSANDS = re.compile(r"(?<![\d.])(\d{1,3}(?:,\d{3})+)(?![\d,])")
_CJK = r"\u3005\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff66-\uff9f"
_LEAD_CJK = re.compile(rf"^[{_CJK}\s]+")
_TRAIL_CJK = re.compile(rf"[{_CJK}\s]+$")
_JA_FRACTION = re.compile(r"(\d+)\s*分の\s*(\d+)")  # "3分の2" is 2/3


def clean_answer(answer: str) -> str:
    """Normalise an answer (gold or predicted) into something math-verify parses inside ``$...$``:
    NFKC, no ``$`` or markdown emphasis, no thousands separators (``1,000``), Japanese fractions
    (``3分の2``) as ``\\frac``, and words or units in Japanese before or after the math stripped
    (``42円``, ``約42個``, ``42です``). An answer that is only Japanese text is left as it is."""
    s = unicodedata.normalize("NFKC", answer).strip()
    s = s.replace("\\$", "").replace("$", "").replace("**", "").strip()
    s = s.rstrip("。．.、,").strip().replace("\u2212", "-")  # NFKC keeps the minus sign U+2212
    s = _JA_FRACTION.sub(lambda m: f"\\frac{{{m.group(2)}}}{{{m.group(1)}}}", s)
    s = _THOUSANDS.sub(lambda m: m.group(1).replace(",", ""), s)
    stripped = _TRAIL_CJK.sub("", _LEAD_CJK.sub("", s))
    # Only words at the ends go ("3時間20分" keeps its words: stripping them would change the answer).
    if stripped and stripped != s and not re.search(rf"[{_CJK}]", stripped):
        s = stripped.lstrip(":").rstrip("。．.、,").strip()
    return s
