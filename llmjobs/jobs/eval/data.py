"""Evaluation problems from JSONL, JSON, TSV or a ``datasets`` directory, with a field mapping and presets."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from llmjobs.errors import UserError


class FieldMap(BaseModel):
    """Which field of a row holds what. ``id=None`` means: the ``id`` field if rows have one, else the row index."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    problem: str | None = "problem"
    answer: str | None = "answer"
    category: str | None = None


@dataclass
class Problem:
    id: str
    problem: str
    answer: str
    category: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?:\D|$))")


def _plain_number(answer: str) -> str:
    """Gold numbers of word-problem sets are written ``1,000``; store ``1000``."""
    return _THOUSANDS.sub("", answer.strip())


def _gsm8k_gold(answer: str) -> str:
    # The solution text ends in "#### N"; N is the gold.
    _, sep, tail = answer.rpartition("####")
    if not sep:
        raise ValueError("no '#### N' line in the answer")
    return _plain_number(tail)


@dataclass(frozen=True)
class Preset:
    fields: FieldMap
    columns: tuple[str, ...] | None = None  # names for a headerless TSV
    gold: Callable[[str], str] | None = None  # turns the answer field into the gold answer
    doc: str = ""


PRESETS: dict[str, Preset] = {
    "mgsm_ja": Preset(
        FieldMap(problem="question", answer="answer"),
        columns=("question", "answer"),
        gold=_plain_number,
        doc="MGSM Japanese TSV without header: question<TAB>answer; ids are row indices; '2,125' -> '2125'",
    ),
    "math500": Preset(
        FieldMap(id="unique_id", problem="problem", answer="answer", category="subject"),
        doc="MATH-500 JSONL: id=unique_id, problem, answer, category=subject (solution and level kept in extra)",
    ),
    "gsm8k": Preset(
        FieldMap(problem="question", answer="answer"),
        gold=_gsm8k_gold,
        doc="GSM8K JSONL: question, answer whose final '#### N' is the gold; ids are row indices",
    ),
}


def _read_rows(path: Path, columns: tuple[str, ...] | None, header: bool | None) -> Iterable[dict[str, Any]]:
    suffix = path.suffix.lower()
    if path.is_dir():
        yield from _read_datasets(path)
    elif suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
                if not isinstance(row, dict):
                    raise UserError(f"{path}:{lineno}: each line must be a JSON object")
                yield row
    elif suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise UserError(f"{path}: expected a JSON list of objects (or {{\"data\": [...]}})")
        yield from data
    elif suffix in (".tsv", ".tab"):
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            if header is None:
                header = columns is None
            names: list[str] | None = None if header else list(columns or ())
            for lineno, cells in enumerate(reader, 1):
                if not cells or cells == [""]:
                    continue
                if names is None:
                    names = cells
                    continue
                if not names:  # headerless without column names: "0", "1", ...
                    names = [str(i) for i in range(len(cells))]
                if len(cells) != len(names):
                    raise UserError(
                        f"{path}:{lineno}: {len(cells)} tab-separated columns, expected {len(names)} "
                        f"({', '.join(names)})"
                    )
                yield dict(zip(names, cells))
    else:
        raise UserError(
            f"{path}: unknown data format '{suffix}'; use .jsonl, .json, .tsv or a directory saved by "
            "datasets' save_to_disk"
        )


def _read_datasets(path: Path) -> Iterable[dict[str, Any]]:
    try:
        import datasets
    except ImportError:
        raise UserError(f"{path}: reading a datasets directory needs the 'eval' extra (pip install 'llmjobs[eval]')")
    try:
        ds = datasets.load_from_disk(str(path))
    except FileNotFoundError as e:
        raise UserError(f"{path}: not a directory written by datasets' save_to_disk ({e})") from None
    if isinstance(ds, datasets.DatasetDict):
        splits = list(ds.keys())
        split = "test" if "test" in ds else (splits[0] if len(splits) == 1 else None)
        if split is None:
            raise UserError(f"{path}: has splits {splits} and none is named 'test'; point at one split's directory")
        ds = ds[split]
    yield from ds


def _field(row: dict[str, Any], where: str, name: str | None, role: str, *, required: bool = True) -> Any:
    if name is None:
        return None
    if name not in row:
        raise UserError(
            f"{where}: no field '{name}' (the {role} field); fields present: {', '.join(map(str, row))}. "
            f"Set the field mapping (e.g. fields.{role}) or a preset ({', '.join(sorted(PRESETS))})."
        )
    value = row[name]
    if value is None and required:
        raise UserError(f"{where}: field '{name}' (the {role} field) is empty")
    return value


def load_problems(
    path: str | Path,
    fields: FieldMap | None = None,
    preset: str | None = None,
    limit: int | None = None,
    *,
    header: bool | None = None,
) -> list[Problem]:
    """Load problems. ``fields`` overrides the preset's mapping; ``header`` only matters for TSV
    (default: a header line, unless the preset names the columns)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: data file not found")
    spec: Preset | None = None
    if preset is not None:
        if preset not in PRESETS:
            raise UserError(f"unknown data preset '{preset}'; known: {', '.join(sorted(PRESETS))}")
        spec = PRESETS[preset]
    fmap = fields or (spec.fields if spec else FieldMap())
    gold = spec.gold if spec else None

    problems: list[Problem] = []
    seen: set[str] = set()
    for index, row in enumerate(_read_rows(path, spec.columns if spec else None, header)):
        if limit is not None and len(problems) >= limit:
            break
        where = f"{path} row {index}"

        if fmap.id is not None:
            pid = str(_field(row, where, fmap.id, "id"))
        elif "id" in row and row["id"] is not None:
            pid = str(row["id"])
        else:
            pid = str(index)
        if pid in seen:
            raise UserError(f"{where}: duplicate id '{pid}'; ids must be unique (set fields.id)")
        seen.add(pid)

        text = _field(row, where, fmap.problem, "problem")
        answer = _field(row, where, fmap.answer, "answer")
        answer = "" if answer is None else str(answer)
        if gold is not None:
            try:
                answer = gold(answer)
            except ValueError as e:
                raise UserError(f"{where}: answer field '{fmap.answer}': {e}") from None
        category = _field(row, where, fmap.category, "category", required=False)
        used = {fmap.id, fmap.problem, fmap.answer, fmap.category}
        extra = {k: v for k, v in row.items() if k not in used}
        problems.append(
            Problem(
                id=pid,
                problem="" if text is None else str(text),
                answer=answer,
                category=None if category is None else str(category),
                extra=extra,
            )
        )
    if not problems:
        raise UserError(f"{path}: no problems found")
    return problems


def check_data(path: str | Path, fields: FieldMap | None = None, preset: str | None = None) -> None:
    """The submit-time check, on the login node: the file exists, its format is known, and its first rows have
    the mapped fields. A ``datasets`` directory is only checked for the files ``save_to_disk`` writes (reading
    it needs ``datasets``, which the CLI does not import)."""
    path = Path(path)
    if preset is not None and preset not in PRESETS:
        raise UserError(f"unknown data preset '{preset}'; known: {', '.join(sorted(PRESETS))}")
    if path.is_dir():
        if not any((path / name).exists() for name in ("dataset_info.json", "dataset_dict.json", "state.json")):
            raise UserError(f"{path}: a directory, but not one written by datasets' save_to_disk "
                            "(no dataset_info.json or dataset_dict.json)")
        return
    try:
        load_problems(path, fields=fields, preset=preset, limit=1)
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read the data file: {e.strerror or e}") from None
