"""``llmjobs status`` of a finished run in a SQLite registry, without typer, SQLAlchemy or the controller.

A finished run (succeeded, failed, cancelled) is never synced (``Controller.sync`` returns at once), so
showing it is a read of the registry: the same statements as ``llmjobs.views``, run through ``sqlite3``, and
the same Rich tables. Importing SQLAlchemy, typer and the controller was most of the time `status` took.

Anything else goes to the full command (``try_status`` returns None and prints nothing): a run that is not
finished (it must be synced with its scheduler and its DONE markers), another database, a registry that does
not exist yet or needs a migration, an unknown or ambiguous run id (the full command words the error), any
option this path does not know, and any error.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import Any

from llmjobs import settings
from llmjobs.views import FINISHED, RUN_FIELDS, Query, full_view, run_head, summary_view


def _parse(argv: list[str]) -> tuple[str | None, str | None, bool, bool] | None:
    """(--registry, RUN, --json, --shards) of ``[--registry URL] [--debug] status [RUN] [--json] [--shards]``;
    None for any other command line."""
    registry = None
    i = 0
    while i < len(argv) and argv[i] != "status":
        if argv[i] == "--registry" and i + 1 < len(argv):
            registry, i = argv[i + 1], i + 2
        elif argv[i].startswith("--registry="):
            registry, i = argv[i].split("=", 1)[1], i + 1
        elif argv[i] == "--debug":
            i += 1
        else:
            return None
    if i == len(argv):
        return None
    run, as_json, shards = None, False, False
    for a in argv[i + 1:]:
        if a == "--json":
            as_json = True
        elif a == "--shards":
            shards = True
        elif a.startswith("-") or run is not None:
            return None
        else:
            run = a
    return registry, run, as_json, shards


def sqlite_file(url: str) -> Path | None:
    """The file of a plain ``sqlite:///PATH`` URL that exists; None for anything SQLAlchemy would read
    differently (a driver, query options, escapes, ``~``) or that the full command must create."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or any(c in url for c in "?#%~"):
        return None
    db = url[len(prefix):]
    if db in ("", ":memory:"):
        return None
    path = Path(db)
    return path if path.is_file() else None


def _resolve(q: Query, ref: str | None) -> list:
    cols = ", ".join(RUN_FIELDS)
    if ref is None:
        return list(q(f"SELECT {cols} FROM runs ORDER BY created_at DESC LIMIT 1", {}))
    rows = list(q(f"SELECT {cols} FROM runs WHERE id = :ref", {"ref": ref}))
    if rows:
        return rows
    # Registry.resolve_run's prefix match: LIKE 'ref%' with the wildcards in ref escaped
    pattern = ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    return list(q(f"SELECT {cols} FROM runs WHERE id LIKE :p ESCAPE '\\' LIMIT 2", {"p": pattern}))


def read(path: Path, ref: str | None, full: bool, summary: bool) -> tuple[dict | None, dict | None] | None:
    """(summary view, full view) of a finished run, as ``llmjobs.views`` builds them; None when the full
    command must handle it."""
    from llmjobs.registry.migrate import HEAD

    con = sqlite3.connect(path, timeout=60, isolation_level=None)  # the registry's busy timeout
    try:
        con.execute("BEGIN")  # deferred: a snapshot, no write lock (as Registry.read)

        def q(sql: str, params: dict[str, Any]) -> list:
            return con.execute(sql, params).fetchall()

        if q("SELECT version_num FROM alembic_version", {}) != [(HEAD,)]:
            return None  # new or older registry: the full command migrates it
        rows = _resolve(q, ref)
        if len(rows) != 1:
            return None
        head = run_head(rows[0])
        if head["status"] not in FINISHED:
            return None
        return (summary_view(q, head) if summary else None), (full_view(q, head) if full else None)
    finally:
        con.rollback()
        con.close()


def try_status(argv: list[str]) -> int | None:
    """Show the status of a finished run from a SQLite registry; the exit code, or None (nothing printed)
    when the full command must run instead."""
    parsed = _parse(argv)
    if parsed is None:
        return None
    registry, ref, as_json, shards = parsed
    path = sqlite_file(settings.registry_url(registry))
    if path is None:
        return None
    try:
        views = read(path, ref, full=as_json or shards, summary=not as_json)
    except (sqlite3.Error, OSError, ValueError, KeyError):
        return None  # the full command says what is wrong, in its words
    if views is None:
        return None
    summary, full = views
    if as_json:
        from llmjobs.views import write_json

        write_json(full, sys.stdout)
        return 0
    from rich.console import Console

    from llmjobs.tables import attention_table, shards_table, status_table

    out = Console()
    out.print(status_table(summary))
    if shards:
        out.print(shards_table(full))
    elif (t := attention_table(summary)) is not None:
        out.print(t)
    return 0

