"""The Registry: opening (and migrating) the database, transactions, and the one status-transition function.

SQLite is the embedded default, in WAL mode so readers never block the writer and the writer never blocks
readers. Two kinds of transaction:
- ``read()``: a deferred transaction (plain ``BEGIN``) that is always rolled back. It takes no write lock, so
  any number of ``status``/``runs`` commands run beside a ``submit``.
- ``session()``: a short write transaction, opened with ``BEGIN IMMEDIATE`` on SQLite so two writers queue on
  the lock (busy timeout) instead of failing with "database is locked" when both try to upgrade a read
  transaction. On PostgreSQL, rows that are read and then updated are locked with ``SELECT ... FOR UPDATE``.
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
READ = "llmjobs_read"  # execution option of the engine behind read-only sessions
NEW_REGISTRY_ENV = "LLMJOBS_NEW_REGISTRY"


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
        # readers take a snapshot and no lock; writers take the write lock up front
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ) else "BEGIN IMMEDIATE")

    return engine


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    try:
        return create_engine(url, pool_pre_ping=True)
    except Exception as e:  # noqa: BLE001 - e.g. an unknown dialect or a driver that is not installed
        raise UserError(f"cannot use registry URL {make_url(url).render_as_string(hide_password=True)}: {e}. "
                        "For PostgreSQL install the extra: pip install 'llmjobs[postgres]'") from None


def check_not_lost(url: str, explicit: bool) -> None:
    """Refuse to create the default SQLite registry afresh while run folders recorded in it exist.

    A deleted (or moved) ``registry.db`` would otherwise be recreated empty without a word, and every run
    in ``$LLMJOBS_HOME/runs`` would silently vanish from ``runs``/``status``/``resume``.
    """
    if explicit or not url.startswith("sqlite") or os.environ.get(NEW_REGISTRY_ENV) == "1":
        return
    db = make_url(url).database
    if not db or db == ":memory:" or Path(db).expanduser().exists():
        return
    runs = settings.home() / "runs"
    try:
        folders = [p for p in runs.iterdir() if (p / ".llmjobs").is_dir() or (p / "logs").is_dir()]
    except OSError:
        return
    if folders:
        raise UserError(
            f"the registry {db} does not exist, but {runs} holds {len(folders)} run folder(s) that were "
            f"recorded in it (e.g. {folders[0].name}). Restore the file, or point --registry / "
            f"LLMJOBS_REGISTRY at the registry you use; to start an empty registry anyway (those runs will "
            f"not be listed or resumable), set {NEW_REGISTRY_ENV}=1")


class Registry:
    def __init__(self, url: str | None = None, *, migrate: bool = True, create: bool | None = None) -> None:
        """``create``: whether a missing default SQLite file may be created while run folders exist
        (default: only when ``$LLMJOBS_NEW_REGISTRY=1``); an explicit URL is always created."""
        self.url = settings.registry_url(url)
        explicit = bool(url or os.environ.get("LLMJOBS_REGISTRY")) or bool(create)
        check_not_lost(self.url, explicit)
        self.engine = make_engine(self.url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._reads = sessionmaker(self.engine.execution_options(**{READ: True}), autoflush=False)
        if migrate:
            from llmjobs.registry.migrate import upgrade

            upgrade(self.engine)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One write transaction: committed on success, rolled back on error. Keep it short."""
        with self._sessions() as s, s.begin():
            yield s

    @contextmanager
    def read(self) -> Iterator[Session]:
        """One read-only transaction: a consistent snapshot, no write lock; anything changed is discarded."""
        with self._reads() as s:
            try:
                yield s
            finally:
                s.rollback()

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
        run_id, entity_id = self._label(s, obj)
        s.add(Event(run_id=run_id, entity=type(obj).__name__.lower(), entity_id=entity_id, old=old, new=new,
                    reason=reason))
        return True

    def shard_labels(self, s: Session, shard_ids) -> dict[int, tuple[str, str]]:
        """shard id -> (run id, "step[index]"), cached in the session: events name their shard without a
        lazy load (and an autoflush) per attempt."""
        cache = s.info.setdefault("llmjobs_shard_labels", {})
        missing = [i for i in set(shard_ids) if i not in cache]
        with s.no_autoflush:
            for chunk in _chunks(missing):
                for sid, run_id, name, index in s.execute(select(Shard.id, Step.run_id, Step.name, Shard.index)
                                                          .join(Step).where(Shard.id.in_(chunk))):
                    cache[sid] = (run_id, f"{name}[{index}]")
        return cache

    def _label(self, s: Session, obj) -> tuple[str, str]:
        if isinstance(obj, Run):
            return obj.id, obj.id
        if isinstance(obj, Step):
            return obj.run_id, obj.name
        if obj.id is None:
            s.flush()
        if isinstance(obj, Shard):
            return self.shard_labels(s, [obj.id])[obj.id]
        run_id, label = self.shard_labels(s, [obj.shard_id])[obj.shard_id]
        return run_id, f"{label}#{obj.number}"

    def new_attempt(self, s: Session, shard: Shard, backend: str) -> Attempt:
        """The next attempt of a shard; the shard row is locked so two submitters never share a number."""
        return self.new_attempts(s, [shard.id], backend)[0]

    def new_attempts(self, s: Session, shard_ids: list[int], backend: str) -> list[Attempt]:
        """The next attempt of each shard, in order, with a bounded number of statements for any count.

        The shard rows are locked (``FOR UPDATE`` on PostgreSQL; SQLite's write transaction already holds
        the database) so two submitters never share a number. The attempt records the submitting process,
        so a ``submitting`` attempt whose submitter is gone can be declared lost at once.
        """
        import os
        import socket

        shards: dict[int, Shard] = {}
        last: dict[int, int] = {}
        for chunk in _chunks(shard_ids):
            shards.update((sh.id, sh) for sh in s.scalars(select(Shard).where(Shard.id.in_(chunk))
                                                          .with_for_update()))
            last.update(s.execute(select(Attempt.shard_id, func.max(Attempt.number))
                                  .where(Attempt.shard_id.in_(chunk)).group_by(Attempt.shard_id)).all())
        host, pid = socket.gethostname(), os.getpid()
        attempts = [Attempt(shard_id=sid, number=last.get(sid, 0) + 1, backend=backend, state="submitting",
                            submitter_host=host, submitter_pid=pid) for sid in shard_ids]
        s.add_all(attempts)
        s.flush()
        labels = self.shard_labels(s, shard_ids)
        s.add_all([Event(run_id=labels[a.shard_id][0], entity="attempt", entity_id=str(a.id), old=None,
                         new="submitting", reason=None) for a in attempts])
        return attempts

    def ping(self) -> None:
        with self.engine.connect() as c:
            c.execute(text("SELECT 1"))


def _chunks(ids: list, size: int = 500) -> list[list]:
    """IN lists of bounded length (SQLite's variable limit, PostgreSQL's plan sizes)."""
    ids = list(ids)
    return [ids[i:i + size] for i in range(0, len(ids), size)]
