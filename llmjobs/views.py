"""Plain-data views of runs for ``status --json``, ``runs --json`` and the Rich tables."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from llmjobs.registry import Attempt, Run, Step
from llmjobs.registry.models import as_utc


def _iso(dt: datetime | None) -> str | None:
    dt = as_utc(dt)
    return None if dt is None else dt.isoformat()


def attempt_view(a: Attempt) -> dict[str, Any]:
    return {"number": a.number, "job_id": a.job_id, "state": a.state, "reason": a.reason,
            "exit_code": a.exit_code, "nodes": a.nodes, "submitted_at": _iso(a.submitted_at),
            "started_at": _iso(a.started_at), "ended_at": _iso(a.ended_at), "stdout": a.stdout,
            "stderr": a.stderr}


def step_elapsed(step: Step, now: datetime | None = None) -> float | None:
    starts = [as_utc(a.started_at) for sh in step.shards for a in sh.attempts if a.started_at]
    if not starts:
        return None
    ends = [as_utc(a.ended_at) for sh in step.shards for a in sh.attempts if a.ended_at]
    live = any(a.state in ("queued", "running", "submitting") for sh in step.shards for a in sh.attempts)
    end = (now or datetime.now(UTC)) if live or not ends else max(ends)
    return max(0.0, (end - min(starts)).total_seconds())


def step_view(step: Step) -> dict[str, Any]:
    return {
        "name": step.name, "kind": step.kind, "status": step.status, "after": step.after,
        "output": step.output_dir, "shards_done": sum(sh.status == "succeeded" for sh in step.shards),
        "num_shards": step.num_shards, "elapsed_s": step_elapsed(step),
        "shards": [{"index": sh.index, "status": sh.status, "attempts": [attempt_view(a) for a in sh.attempts]}
                   for sh in step.shards],
    }


def run_view(run: Run, steps: bool = True) -> dict[str, Any]:
    view: dict[str, Any] = {"id": run.id, "name": run.name, "status": run.status, "backend": run.backend,
                            "run_dir": run.run_dir, "recipe": run.recipe_path, "version": run.version,
                            "created_at": _iso(run.created_at)}
    if steps:
        view["steps"] = [step_view(st) for st in run.steps]
    return view


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"
