"""Complete checkpoints: written into a temporary directory, then renamed, then marked COMPLETE.

A checkpoint that was being written when the job died is a ``.tmp-*`` directory or lacks ``COMPLETE``: it is
never loaded (and is removed by the next save). Only the newest ``keep`` complete ones stay.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

MARKER = "COMPLETE"
PREFIX = "step-"


def step_dir(root: Path, step: int) -> Path:
    return root / f"{PREFIX}{step:08d}"


def complete(root: Path) -> list[tuple[int, Path]]:
    """(step, dir) of every complete checkpoint, oldest first."""
    out = []
    if not root.is_dir():
        return out
    for d in root.iterdir():
        if not d.is_dir() or not d.name.startswith(PREFIX) or ".tmp" in d.name:
            continue
        try:
            step = int(d.name[len(PREFIX):])
            info = json.loads((d / MARKER).read_text())
        except (ValueError, OSError):
            continue
        if isinstance(info, dict) and info.get("step") == step and _sizes_match(d, info.get("files")):
            out.append((step, d))
    return sorted(out)


def _sizes_match(d: Path, files: Any) -> bool:
    """Every file the marker lists has its recorded size: a file cut short after the fact is caught too."""
    if not isinstance(files, dict) or not files:
        return False
    for rel, size in files.items():
        try:
            if (d / rel).stat().st_size != size:
                return False
        except OSError:
            return False
    return True


def latest(root: Path) -> tuple[int, Path] | None:
    found = complete(root)
    return found[-1] if found else None


def staging(root: Path, step: int, attempt_tag: str) -> Path:
    """The directory every rank writes into before rank 0 publishes it."""
    d = root / f"{PREFIX}{step:08d}.tmp-{attempt_tag}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def publish(root: Path, tmp: Path, step: int, info: dict[str, Any], keep: int) -> Path:
    """Rank 0, after every rank has written: fsync, rename into place, mark complete, drop old ones."""
    files = {}
    for f in tmp.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
            files[str(f.relative_to(tmp))] = f.stat().st_size
    final = step_dir(root, step)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    marker_tmp = final / f".{MARKER}.tmp"
    marker_tmp.write_text(json.dumps({"step": step, "time": time.time(), **info, "files": files}))
    os.replace(marker_tmp, final / MARKER)
    for _, old in complete(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(f"{PREFIX}*.tmp-*"):
        if stale != tmp:
            shutil.rmtree(stale, ignore_errors=True)
    return final
