"""Plain-data views of runs for ``status``, ``status --json``, ``runs`` and the Rich tables.

Views are built with a fixed number of SQL statements whatever the size of the run, in one read-only
transaction: ``run_summary`` (the ``status`` table) asks for aggregates (shard counts by status per step,
attempt counts and times per step) and the latest attempt of only the shards that need attention;
``run_view`` (``status --json``, ``--shards``) reads each table once, as plain rows, not ORM objects.

The statements are plain SQL that SQLite and PostgreSQL both run, executed through a ``Query`` function:
SQLAlchemy's connection for a ``Registry``, or ``sqlite3`` itself for ``llmjobs.fast_status``, which shows a
finished run without importing SQLAlchemy. So this module imports nothing heavy, and both paths run the
same statements and build the same views.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmjobs.registry import Registry

# statement, named parameters -> rows (tuples)
Query = Callable[[str, dict[str, Any]], Sequence[Sequence[Any]]]

LIVE_ATTEMPT = ("submitting", "queued", "running")
# shards the status table lists one by one; the others are counted
ATTENTION = ("failed", "cancelled", "running")
FINISHED = ("succeeded", "failed", "cancelled")
ATTEMPT_FIELDS = ("number", "job_id", "state", "reason", "exit_code", "nodes", "submitted_at", "started_at",
                  "ended_at", "stdout", "stderr")
_TIMES = {"submitted_at", "started_at", "ended_at"}
RUN_FIELDS = ("id", "name", "status", "backend", "run_dir", "recipe_path", "version", "created_at")


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"  # constants of this module only


_RUN_STEPS = "SELECT id FROM steps WHERE run_id = :run"
_ATT = ", ".join(f"a.{c}" for c in ATTEMPT_FIELDS)
SQL = {
    "steps": "SELECT id, name, kind, status, after, output_dir, num_shards, attempts_count, first_started_at, "
             "last_ended_at FROM steps WHERE run_id = :run ORDER BY position",
    "counts": f"SELECT step_id, status, count(*) FROM shards WHERE step_id IN ({_RUN_STEPS}) "
              "GROUP BY step_id, status",
    # per step: attempts, first start, last end, any live attempt (for the steps not finished)
    "stats": "SELECT sh.step_id, count(a.id), min(a.started_at), max(a.ended_at), "
             f"max(CASE WHEN a.state IN {_in(LIVE_ATTEMPT)} THEN 1 ELSE 0 END) "
             "FROM shards sh JOIN attempts a ON a.shard_id = sh.id WHERE sh.step_id IN (SELECT id FROM steps "
             f"WHERE run_id = :run AND (status NOT IN {_in(FINISHED)} OR attempts_count IS NULL)) "
             "GROUP BY sh.step_id",
    "shards": f'SELECT id, step_id, "index", status FROM shards WHERE step_id IN ({_RUN_STEPS}) '
              'ORDER BY step_id, "index"',
    "attempts": f"SELECT a.shard_id, {_ATT} FROM attempts a JOIN shards sh ON a.shard_id = sh.id "
                f"WHERE sh.step_id IN ({_RUN_STEPS}) ORDER BY a.shard_id, a.number",
    # the latest attempt of each shard that needs attention, ranked within its step
    "attention": "WITH latest AS (SELECT a.shard_id, max(a.number) AS n FROM attempts a "
                 f"JOIN shards sh ON a.shard_id = sh.id WHERE sh.step_id IN ({_RUN_STEPS}) "
                 f"AND sh.status IN {_in(ATTENTION)} GROUP BY a.shard_id), "
                 'ranked AS (SELECT sh.step_id, sh."index" AS idx, sh.status, '
                 'row_number() OVER (PARTITION BY sh.step_id ORDER BY sh."index") AS rnk, '
                 f"a.shard_id, {_ATT} FROM shards sh JOIN latest l ON l.shard_id = sh.id "
                 "JOIN attempts a ON a.shard_id = l.shard_id AND a.number = l.n) "
                 "SELECT * FROM ranked WHERE rnk <= :limit ORDER BY step_id, idx",
    "runs": f"SELECT {', '.join(RUN_FIELDS)} FROM runs ORDER BY created_at DESC LIMIT :limit",
}


def sqlalchemy_query(session) -> Query:
    """The ``Query`` of a registry session: plain statements on its connection, rows as tuples."""
    from sqlalchemy import text

    conn = session.connection()
    return lambda sql, params: conn.execute(text(sql), params).all()


def _utc(dt: datetime | str) -> datetime:
    """SQLite hands back text (or naive datetimes); every time the registry stores is UTC."""
    if isinstance(dt, str):
        dt = datetime.fromisoformat(dt)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _iso(dt: datetime | str | None) -> str | None:
    """ISO 8601 in UTC. SQLite's stored text ("2026-01-02 03:04:05.678901", always UTC here) is rewritten
    as text: parsing 300k datetimes was most of the time `status --json` of a big run took."""
    if dt is None:
        return None
    if isinstance(dt, str):
        return dt.replace(" ", "T", 1) + ("" if dt.endswith("+00:00") else "+00:00")
    return _utc(dt).isoformat()


def _attempt(row: Sequence[Any]) -> dict[str, Any]:
    """An attempt from its ATTEMPT_FIELDS values."""
    return {k: (_iso(v) if k in _TIMES else v) for k, v in zip(ATTEMPT_FIELDS, row)}


def run_head(row: Sequence[Any]) -> dict[str, Any]:
    """A run from its RUN_FIELDS values."""
    head = dict(zip(RUN_FIELDS, row))
    head["recipe"] = head.pop("recipe_path")
    head["created_at"] = _iso(head["created_at"])
    return {k: head[k] for k in ("id", "name", "status", "backend", "run_dir", "recipe", "version", "created_at")}


def _orm_head(run) -> dict[str, Any]:
    return run_head([getattr(run, f) for f in RUN_FIELDS])


def _step_stats(q: Query, run_id: str, steps: list) -> tuple[dict, dict]:
    """Shard counts by status per step (from an index), and per step: attempts, first start, last end, any
    live attempt: stored for finished steps, an aggregate over the attempts of the others."""
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    for step_id, status, n in q(SQL["counts"], {"run": run_id}):
        counts[step_id][status] = n
    stats = {r[0]: (r[7], r[8], r[9], 0) for r in steps if r[3] in FINISHED and r[7] is not None}
    if any(r[0] not in stats for r in steps):  # the same condition, in SQL: finished steps are not scanned
        stats.update({row[0]: tuple(row[1:]) for row in q(SQL["stats"], {"run": run_id})})
    return counts, stats


def _elapsed(first, last, live: bool, now: datetime | None = None) -> float | None:
    if first is None:
        return None
    end = (now or datetime.now(UTC)) if live or last is None else _utc(last)
    return max(0.0, (end - _utc(first)).total_seconds())


def _step_head(row, counts: dict, stats: dict) -> dict[str, Any]:
    step_id, name, kind, status, after, output, num_shards = row[:7]
    n_attempts, first, last, live = stats.get(step_id, (0, None, None, 0))
    c = counts.get(step_id, {})
    return {"name": name, "kind": kind, "status": status,
            "after": json.loads(after) if isinstance(after, str) else after, "output": output,
            "shards_done": c.get("succeeded", 0), "num_shards": num_shards,
            "elapsed_s": _elapsed(first, last, bool(live)), "counts": dict(sorted(c.items())),
            "attempts": n_attempts}


def full_view(q: Query, head: dict[str, Any]) -> dict[str, Any]:
    """Everything about the run ``head`` names: each table read once, whatever the number of shards."""
    run = {"run": head["id"]}
    steps = q(SQL["steps"], run)
    counts, stats = _step_stats(q, head["id"], steps)
    shards: dict[int, list[dict]] = defaultdict(list)
    by_id: dict[int, dict] = {}
    for sid, step_id, index, status in q(SQL["shards"], run):
        by_id[sid] = {"index": index, "status": status, "attempts": []}
        shards[step_id].append(by_id[sid])
    for row in q(SQL["attempts"], run):
        by_id[row[0]]["attempts"].append(_attempt(row[1:]))
    return {**head, "steps": [{**_step_head(r, counts, stats), "shards": shards[r[0]]} for r in steps]}


def summary_view(q: Query, head: dict[str, Any], limit: int = 20) -> dict[str, Any]:
    """The ``status`` table's data: per step counts and times, and up to ``limit`` shards per step that
    need attention (failed, cancelled, running) with their latest attempt; four statements at most."""
    run = {"run": head["id"]}
    steps = q(SQL["steps"], run)
    counts, stats = _step_stats(q, head["id"], steps)
    attention: dict[int, list[dict]] = defaultdict(list)
    if limit > 0 and any(counts[r[0]].get(x) for r in steps for x in ATTENTION):
        for row in q(SQL["attention"], {**run, "limit": limit}):
            attention[row[0]].append({"index": row[1], "status": row[2], "attempt": _attempt(row[5:])})
    view = {**head, "steps": []}
    for r in steps:
        step = _step_head(r, counts, stats)
        step["attention"] = attention.get(r[0], [])
        step["attention_total"] = sum(step["counts"].get(x, 0) for x in ATTENTION)
        view["steps"].append(step)
    return view


def run_view(reg: Registry, run_ref: str) -> dict[str, Any]:
    """Everything about a run (``status --json``): each table read once, whatever the number of shards."""
    with reg.read() as s:
        return full_view(sqlalchemy_query(s), _orm_head(reg.resolve_run(s, run_ref)))


def run_summary(reg: Registry, run_ref: str, limit: int = 20) -> dict[str, Any]:
    """The ``status`` table's data (``summary_view``) of a run by id or unique prefix."""
    with reg.read() as s:
        return summary_view(sqlalchemy_query(s), _orm_head(reg.resolve_run(s, run_ref)), limit)


def runs_view(reg: Registry, limit: int = 50) -> list[dict[str, Any]]:
    with reg.read() as s:
        return [run_head(r) for r in sqlalchemy_query(s)(SQL["runs"], {"limit": limit})]


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
