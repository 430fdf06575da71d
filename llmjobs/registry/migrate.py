"""Apply Alembic migrations when a registry is opened, so an older registry is upgraded in place."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Engine

MIGRATIONS = Path(__file__).parent / "migrations"


def config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head() -> str | None:
    return ScriptDirectory.from_config(config()).get_current_head()


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    target = head() if revision == "head" else revision
    if current(engine) == target:
        return  # the common case: no lock, no Alembic run
    cfg = config()
    with engine.begin() as conn:  # on SQLite this is BEGIN IMMEDIATE: concurrent openers queue here
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(7220131)"))  # serialise first-time creation
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
