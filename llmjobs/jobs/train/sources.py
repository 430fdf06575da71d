"""Reading training records from JSONL / JSON files and ``datasets`` directories, and the format of a record.

Light: only ``json`` at import; ``datasets`` is imported for a ``save_to_disk`` directory only. Submit-time
checks read the first records of a file (or the feature list of a dataset directory) and never the whole.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FORMATS = ("messages", "prompt_completion", "text")


def record_format(columns: set[str] | dict[str, Any], fields: dict[str, str]) -> str | None:
    """Which format a record (or a column set) is in, or None when it has no usable column."""
    if fields["messages"] in columns:
        return "messages"
    if fields["prompt"] in columns and fields["completion"] in columns:
        return "prompt_completion"
    if fields["text"] in columns:
        return "text"
    return None


def dataset_columns(path: Path) -> set[str] | None:
    """The column names of a ``datasets.save_to_disk`` directory, read from its JSON metadata."""
    for info in (path / "dataset_info.json", *sorted(path.glob("*/dataset_info.json"))):
        try:
            features = json.loads(info.read_text()).get("features") or {}
        except (OSError, ValueError):
            continue
        return set(features)
    return None


def peek(path: Path, n: int = 1) -> list[dict[str, Any]]:
    """The first ``n`` records of a JSONL or JSON file (raises ValueError with the line on bad JSON)."""
    return list(itertools.islice(_file_records(path), n))


def iter_records(path: Path) -> Iterator[dict[str, Any]]:
    """Every record of a JSONL / JSON file or a ``datasets`` directory (a DatasetDict: its ``train`` split)."""
    if not path.is_dir():
        yield from _file_records(path)
        return
    from datasets import DatasetDict, load_from_disk

    ds = load_from_disk(str(path))
    if isinstance(ds, DatasetDict):
        ds = ds["train"] if "train" in ds else next(iter(ds.values()))
    yield from ds


def _file_records(path: Path) -> Iterator[dict[str, Any]]:
    """The object records of a JSON file (a list, or ``{"data": [...]}``) or of a JSONL file, lazily for JSONL."""
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = data if isinstance(data, list) else data.get("data", [])
        yield from (r for r in rows if isinstance(r, dict))
        return
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e})") from None
            if isinstance(row, dict):
                yield row
