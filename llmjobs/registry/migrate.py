"""Apply Alembic migrations when a registry is opened, so an older registry is upgraded in place.

Opening checks the stored revision with one query against ``HEAD``, the newest revision id known to this
code, and imports Alembic (and parses the migration scripts) only when they differ: every command opens the
registry, and parsing the scripts each time cost a noticeable part of a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # SQLAlchemy loads with the functions that use it: HEAD is read without it
    from sqlalchemy.engine import Engine

MIGRATIONS = Path(__file__).parent / "migrations"
# the newest file in migrations/versions; tests/test_registry.py checks it against Alembic's own head
HEAD = "0004"


def config():
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head() -> str | None:
    """Alembic's head, from the scripts (slow; for tests and upgrades)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(config()).get_current_head()


def current(engine: Engine) -> str | None:
    """The stored revision; None for a database that has never been migrated."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except DBAPIError:  # no alembic_version table yet
        return None


def upgrade(engine: Engine, revision: str = "head") -> None:
    target = HEAD if revision == "head" else revision
    if current(engine) == target:
        return  # the common case: one query, no lock, no Alembic
    from alembic import command
    from sqlalchemy import text

    cfg = config()
    with engine.begin() as conn:  # on SQLite this is BEGIN IMMEDIATE: concurrent openers queue here
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(7220131)"))  # serialise first-time creation
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
