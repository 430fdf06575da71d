"""PBS job identifiers: ``13.pbs1``, array parents ``14[].pbs1`` and subjobs ``14[3].pbs1``."""

from __future__ import annotations

import re
from dataclasses import dataclass

_ID = re.compile(r"^(\d+)(?:\[(\d*)\])?(?:\.(.+))?$")


@dataclass(frozen=True)
class JobRef:
    number: int
    index: str | None  # None: plain id; "": array parent "[]"; "3": subjob
    server: str | None

    def canonical(self, default_server: str) -> str:
        bracket = "" if self.index is None else f"[{self.index}]"
        return f"{self.number}{bracket}.{self.server or default_server}"


def parse(text: str) -> JobRef | None:
    """A job id as qstat/qdel read it, or None when the text is not a job id at all."""
    match = _ID.match(text.strip())
    if not match:
        return None
    number, index, server = match.groups()
    bracket = text.find("[") >= 0
    return JobRef(int(number), (index or "") if bracket else None, server)


def format_ranges(indices: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``0-2,5``; an empty list is ``-`` as PBS prints it."""
    if not indices:
        return "-"
    parts, start, prev = [], indices[0], indices[0]
    for value in indices[1:] + [None]:
        if value is not None and value == prev + 1:
            prev = value
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if value is not None:
            start = prev = value
    return ",".join(parts)
