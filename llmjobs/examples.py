"""Small functions the example recipes call through the ``python`` kind."""

from __future__ import annotations

import glob

from llmjobs.jobs.context import StepContext


def sum_files(ctx: StepContext, pattern: str, out: str = "total.txt") -> dict:
    """Sum the integers of every file matching ``pattern``; write the total to ``out`` in the step output."""
    files = sorted(glob.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no file matches {pattern}")
    total = 0
    for path in files:
        with open(path) as f:
            total += sum(int(line) for line in f if line.strip())
    (ctx.output_dir / out).write_text(f"{total}\n")
    return {"files": len(files), "total": total}
