"""Plain-data views of runs for ``status``, ``status --json``, ``runs`` and the Rich tables.

Views are built with a fixed number of SQL statements whatever the size of the run, in one read-only
transaction: ``run_summary`` (the ``status`` table) asks for aggregates (shard counts by status per step,
attempt counts and times per step) and the latest attempt of only the shards that need attention;
``run_view`` (``status --json``, ``--shards``) reads each table once, as plain rows, not ORM objects.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime
from typing import IO, Any

from sqlalchemy import String, and_, case, func, select, type_coerce

from llmjobs.registry import Attempt, Registry, Run, Shard, Step
from llmjobs.registry.models import as_utc

LIVE_ATTEMPT = ("submitting", "queued", "running")
# shards the status table lists one by one; the others are counted
ATTENTION = ("failed", "cancelled", "running")
ATTEMPT_FIELDS = ("number", "job_id", "state", "reason", "exit_code", "nodes", "submitted_at", "started_at",
                  "ended_at", "stdout", "stderr")
_ATTEMPT_COLS = (Attempt.shard_id, Attempt.number, Attempt.job_id, Attempt.state, Attempt.reason,
                 Attempt.exit_code, Attempt.nodes, Attempt.submitted_at, Attempt.started_at, Attempt.ended_at,
                 Attempt.stdout, Attempt.stderr)
# the same, with times as the driver hands them (text on SQLite): no per-row datetime parsing
_RAW_ATTEMPT_COLS = tuple(type_coerce(c, String) if c.key.endswith("_at") else c for c in _ATTEMPT_COLS)


def _iso(dt: datetime | str | None) -> str | None:
    """ISO 8601 in UTC. SQLite's stored text ("2026-01-02 03:04:05.678901", always UTC here) is rewritten
    as text: parsing 300k datetimes was most of the time `status --json` of a big run took."""
    if dt is None:
        return None
    if isinstance(dt, str):
        return dt.replace(" ", "T", 1) + ("" if dt.endswith("+00:00") else "+00:00")
    return as_utc(dt).isoformat()


_TIMES = {7, 8, 9}  # submitted_at, started_at, ended_at in _ATTEMPT_COLS


def _attempt(row) -> dict[str, Any]:
    return {k: (_iso(v) if i in _TIMES else v) for i, (k, v) in enumerate(zip(ATTEMPT_FIELDS, row[1:]), 1)}


def _run_head(run: Run) -> dict[str, Any]:
    return {"id": run.id, "name": run.name, "status": run.status, "backend": run.backend,
            "run_dir": run.run_dir, "recipe": run.recipe_path, "version": run.version,
            "created_at": _iso(run.created_at)}


FINISHED = ("succeeded", "failed", "cancelled")


def _steps(s, run_id: str) -> list:
    return s.execute(select(Step.id, Step.name, Step.kind, Step.status, Step.after, Step.output_dir,
                            Step.num_shards, Step.attempts_count, Step.first_started_at, Step.last_ended_at)
                     .where(Step.run_id == run_id).order_by(Step.position)).all()


def _step_stats(s, steps: list) -> tuple[dict, dict]:
    """Shard counts by status per step (from an index), and per step: attempts, first start, last end, any
    live attempt: stored for finished steps, an aggregate over the attempts of the others."""
    step_ids = [r[0] for r in steps]
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    for step_id, status, n in s.execute(select(Shard.step_id, Shard.status, func.count())
                                        .where(Shard.step_id.in_(step_ids))
                                        .group_by(Shard.step_id, Shard.status)):
        counts[step_id][status] = n
    stats = {r[0]: (r[7], r[8], r[9], 0) for r in steps if r[3] in FINISHED and r[7] is not None}
    others = [i for i in step_ids if i not in stats]
    if others:
        live = func.max(case((Attempt.state.in_(LIVE_ATTEMPT), 1), else_=0))
        stats.update({row[0]: tuple(row[1:]) for row in s.execute(
            select(Shard.step_id, func.count(Attempt.id), func.min(Attempt.started_at),
                   func.max(Attempt.ended_at), live).join(Attempt, Attempt.shard_id == Shard.id)
            .where(Shard.step_id.in_(others)).group_by(Shard.step_id))})
    return counts, stats


def _elapsed(first: datetime | None, last: datetime | None, live: bool, now: datetime | None = None) -> float | None:
    if first is None:
        return None
    end = (now or datetime.now(UTC)) if live or last is None else as_utc(last)
    return max(0.0, (end - as_utc(first)).total_seconds())


def _step_head(row, counts: dict, stats: dict) -> dict[str, Any]:
    step_id, name, kind, status, after, output, num_shards = row[:7]
    n_attempts, first, last, live = stats.get(step_id, (0, None, None, 0))
    c = counts.get(step_id, {})
    return {"name": name, "kind": kind, "status": status, "after": after, "output": output,
            "shards_done": c.get("succeeded", 0), "num_shards": num_shards,
            "elapsed_s": _elapsed(first, last, bool(live)), "counts": dict(sorted(c.items())),
            "attempts": n_attempts}


def run_view(reg: Registry, run_ref: str) -> dict[str, Any]:
    """Everything about a run (``status --json``): each table read once, whatever the number of shards."""
    with reg.read() as s:
        run = reg.resolve_run(s, run_ref)
        view = _run_head(run)
        steps = _steps(s, run.id)
        ids = [r[0] for r in steps]
        counts, stats = _step_stats(s, steps)
        shards: dict[int, list[dict]] = defaultdict(list)
        by_id: dict[int, dict] = {}
        for sid, step_id, index, status in s.execute(
                select(Shard.id, Shard.step_id, Shard.index, Shard.status).where(Shard.step_id.in_(ids))
                .order_by(Shard.step_id, Shard.index)):
            by_id[sid] = {"index": index, "status": status, "attempts": []}
            shards[step_id].append(by_id[sid])
        conn = s.connection()  # Core rows: no ORM processing per row
        for row in conn.execute(select(*_RAW_ATTEMPT_COLS).join(Shard, Attempt.shard_id == Shard.id)
                                .where(Shard.step_id.in_(ids)).order_by(Attempt.shard_id, Attempt.number)):
            by_id[row[0]]["attempts"].append(_attempt(row))
    view["steps"] = [{**_step_head(r, counts, stats), "shards": shards[r[0]]} for r in steps]
    return view


def run_summary(reg: Registry, run_ref: str, limit: int = 20) -> dict[str, Any]:
    """The ``status`` table's data: per step counts and times, and up to ``limit`` shards per step that
    need attention (failed, cancelled, running) with their latest attempt; four statements in all."""
    with reg.read() as s:
        run = reg.resolve_run(s, run_ref)
        view = _run_head(run)
        steps = _steps(s, run.id)
        ids = [r[0] for r in steps]
        counts, stats = _step_stats(s, steps)
        # the latest attempt of each shard that needs attention, ranked within its step
        latest = (select(Attempt.shard_id, func.max(Attempt.number).label("n"))
                  .join(Shard, Attempt.shard_id == Shard.id)
                  .where(Shard.step_id.in_(ids), Shard.status.in_(ATTENTION))
                  .group_by(Attempt.shard_id).subquery())
        rank = func.row_number().over(partition_by=Shard.step_id, order_by=Shard.index).label("rank")
        ranked = (select(Shard.step_id, Shard.index, Shard.status, rank, *_ATTEMPT_COLS)
                  .join(latest, latest.c.shard_id == Shard.id)
                  .join(Attempt, and_(Attempt.shard_id == latest.c.shard_id, Attempt.number == latest.c.n))
                  .subquery())
        attention: dict[int, list[dict]] = defaultdict(list)
        for row in s.execute(select(ranked).where(ranked.c.rank <= limit)
                             .order_by(ranked.c.step_id, ranked.c.index)):
            attention[row[0]].append({"index": row[1], "status": row[2], "attempt": _attempt(row[4:])})
    view["steps"] = []
    for r in steps:
        head = _step_head(r, counts, stats)
        listed = attention.get(r[0], [])
        head["attention"] = listed
        head["attention_total"] = sum(head["counts"].get(x, 0) for x in ATTENTION)
        view["steps"].append(head)
    return view


def runs_view(reg: Registry, limit: int = 50) -> list[dict[str, Any]]:
    with reg.read() as s:
        return [_run_head(r) for r in s.execute(
            select(Run.id, Run.name, Run.status, Run.backend, Run.run_dir, Run.recipe_path, Run.version,
                   Run.created_at).order_by(Run.created_at.desc()).limit(limit))]


def write_json(view: dict[str, Any], out: IO[str]) -> None:
    """``json.dumps(view, indent=2)`` in layout, except that each shard is one compact line: with tens of
    thousands of shards, Python's indenting encoder (no C version) took longer than everything else."""
    head = {k: v for k, v in view.items() if k != "steps"}
    out.write(json.dumps(head, indent=2)[:-2] + (",\n" if head else "") + '  "steps": [')
    for i, st in enumerate(view.get("steps", [])):
        step = {k: v for k, v in st.items() if k != "shards"}
        text = json.dumps(step, indent=2).replace("\n", "\n    ")
        out.write(("," if i else "") + "\n    " + text[:-2].rstrip())
        if "shards" in st:
            out.write(',\n      "shards": [')
            out.write(",".join("\n        " + json.dumps(sh) for sh in st["shards"]))
            out.write("\n      ]")
        out.write("\n    }")
    out.write("\n  ]\n}\n")


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"
