"""The Registry: opening (and migrating) the database, transactions, and the one status-transition function.

SQLite is the embedded default: WAL mode so readers never block the writer, a busy timeout, and every
transaction opened with ``BEGIN IMMEDIATE`` so two writers queue on the lock instead of failing with
"database is locked" when both try to upgrade a read transaction. On PostgreSQL, rows that are read and then
updated are locked with ``SELECT ... FOR UPDATE``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from llmjobs import settings
from llmjobs.errors import UserError
from llmjobs.registry.models import Attempt, Event, Run, Shard, Step

BUSY_TIMEOUT_S = 60


def _sqlite_engine(url: str) -> Engine:
    db = make_url(url).database
    if db and db != ":memory:":
        path = Path(db).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        # create it 0600 before SQLite does: runs name paths and commands of the user's project
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(fd)
        os.chmod(path, 0o600)
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    try:
        return create_engine(url, pool_pre_ping=True)
    except Exception as e:  # e.g. an unknown dialect or a driver that is not installed
        raise UserError(f"cannot use registry URL {make_url(url).render_as_string(hide_password=True)}: {e}. "
                        "For PostgreSQL install the extra: pip install 'llmjobs[postgres]'") from None


class Registry:
    def __init__(self, url: str | None = None, *, migrate: bool = True) -> None:
        self.url = settings.registry_url(url)
        self.engine = make_engine(self.url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        if migrate:
            from llmjobs.registry.migrate import upgrade

            upgrade(self.engine)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on error."""
        with self._sessions() as s, s.begin():
            yield s

    def close(self) -> None:
        self.engine.dispose()

    # ---- lookups -------------------------------------------------------------------------------------

    def resolve_run(self, s: Session, ref: str) -> Run:
        """A run by id, or by a unique id prefix; ``UserError`` otherwise."""
        run = s.get(Run, ref)
        if run is not None:
            return run
        matches = s.scalars(select(Run).where(Run.id.startswith(ref, autoescape=True)).limit(5)).all()
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise UserError(f"unknown run id {ref!r}; `llmjobs runs` lists the runs in {self.display_url}")
        ids = ", ".join(r.id for r in matches)
        raise UserError(f"run id {ref!r} is ambiguous: it starts {ids}; give more of it")

    @property
    def display_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    # ---- the one way statuses change ----------------------------------------------------------------

    def transition(self, s: Session, obj: Run | Step | Shard | Attempt, new: str,
                   reason: str | None = None) -> bool:
        """Set ``obj``'s status (``state`` for attempts) and append the event; no-op when unchanged."""
        attr = "state" if isinstance(obj, Attempt) else "status"
        old = getattr(obj, attr)
        if old == new:
            return False
        setattr(obj, attr, new)
        if isinstance(obj, Attempt):
            obj.reason = reason if reason is not None else obj.reason
        s.add(Event(run_id=_run_id(obj), entity=type(obj).__name__.lower(), entity_id=_entity_id(obj),
                    old=old, new=new, reason=reason))
        return True

    def new_attempt(self, s: Session, shard: Shard, backend: str) -> Attempt:
        """The next attempt of a shard; the shard row is locked so two submitters never share a number."""
        s.execute(select(Shard.id).where(Shard.id == shard.id).with_for_update())
        last = s.scalar(select(func.max(Attempt.number)).where(Attempt.shard_id == shard.id)) or 0
        attempt = Attempt(shard_id=shard.id, number=last + 1, backend=backend, state="submitting")
        s.add(attempt)
        s.flush()
        s.add(Event(run_id=_run_id(attempt, shard), entity="attempt", entity_id=str(attempt.id), old=None,
                    new="submitting", reason=None))
        return attempt

    def ping(self) -> None:
        with self.engine.connect() as c:
            c.execute(text("SELECT 1"))


def _run_id(obj, shard: Shard | None = None) -> str:
    if isinstance(obj, Run):
        return obj.id
    if isinstance(obj, Step):
        return obj.run_id
    if isinstance(obj, Shard):
        return obj.step.run_id
    return (shard or obj.shard).step.run_id


def _entity_id(obj) -> str:
    if isinstance(obj, Run):
        return obj.id
    if isinstance(obj, Step):
        return f"{obj.name}"
    if isinstance(obj, Shard):
        return f"{obj.step.name}[{obj.index}]"
    return f"{obj.shard.step.name}[{obj.shard.index}]#{obj.number}"
