"""Reading a ``data.prepare`` source: files or a directory of JSONL shards, and the field mapping."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmjobs.jobs.data.params import Source


def read_rows(path: str | Path, columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Rows of a JSONL/JSON/TSV file, or of every ``*.jsonl`` in a directory (sorted by name)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: not found")
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))
        if not files:
            raise ValueError(f"{path}: a directory without *.jsonl files")
        for f in files:
            yield from read_rows(f)
        return
    from llmjobs.errors import UserError
    from llmjobs.jobs.eval.data import _read_rows

    try:
        yield from _read_rows(path, tuple(columns) if columns else None, None if columns is None else False)
    except UserError as e:
        raise ValueError(str(e)) from None


def _roles(src: Source) -> dict[str, str]:
    f = src.fields
    return {role: name for role, name in (("prompt", f.prompt), ("reasoning", f.reasoning), ("answer", f.answer),
                                          ("response", f.response), ("messages", f.messages),
                                          ("language", f.language)) if name}


def check_fields(src: Source) -> None:
    """The first row has every mapped field, and the mapping yields something to train on."""
    f = src.fields
    if f.messages is None and f.prompt is None:
        raise ValueError(f"source {src.label}: set fields.prompt (or fields.messages)")
    if f.messages is None and not (f.reasoning or f.answer or f.response):
        raise ValueError(f"source {src.label}: no reply to train on: set fields.response, fields.reasoning or "
                         "fields.answer")
    try:
        first = next(iter(itertools.islice(read_rows(src.path, src.columns), 1)), None)
    except ValueError as e:
        raise ValueError(f"source {src.label}: {e}") from None
    if first is None:
        raise ValueError(f"source {src.label}: {src.path} has no rows")
    roles = _roles(src) if f.messages is None else {"messages": f.messages}
    for role, name in roles.items():
        if name not in first:
            raise ValueError(f"source {src.label} ({src.path}): no field '{name}' (fields.{role}); fields present: "
                             f"{', '.join(map(str, first))}. Set fields.{role} to one of them.")


def map_row(src: Source, row: dict[str, Any], index: int) -> dict[str, Any]:
    """A row as {prompt, reasoning, answer, response, messages, language, id}; missing fields raise."""
    out: dict[str, Any] = {"language": src.language, "id": str(row.get("id", index))}
    roles = _roles(src) if src.fields.messages is None else {"messages": src.fields.messages}
    for role, name in roles.items():
        if name not in row:
            raise ValueError(f"source {src.label} row {index}: no field '{name}' (fields.{role})")
        value = row[name]
        out[role] = value if role == "messages" else ("" if value is None else str(value))
    if src.fields.messages is not None:
        msgs = out["messages"]
        if not (isinstance(msgs, list) and all(isinstance(m, dict) and "role" in m and "content" in m
                                                for m in msgs)):
            raise ValueError(f"source {src.label} row {index}: field '{src.fields.messages}' is not a list of "
                             "{role, content} turns")
        out["messages"] = [{"role": str(m["role"]), "content": str(m["content"])} for m in msgs]
    return out
