"""The local scheduler's queue: one SQLite file (WAL, short transactions) shared by every run on this machine.

A submission is one ``groups`` row (what its jobs wait for, their environment, limits) and one ``jobs`` row
per shard holding the pickled ``ShardTask``: a queued shard costs a row, not a process. Only the dispatcher
starts and finishes jobs; ``submit``, ``poll`` and ``cancel`` read and write rows. The file and its folder
are private to the user (jobs' environments are stored here).
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

LIVE = ("queued", "starting", "running")
# finished rows are kept this long for `poll`; the registry records the outcome at its first sync
KEEP_FINISHED_S = 14 * 24 * 3600

SCHEMA = """
CREATE TABLE IF NOT EXISTS groups (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    folder TEXT NOT NULL,              -- the submission's folder: logs, result records
    deps TEXT NOT NULL,                -- JSON [[job_id, done_marker], ...]: jobs that must succeed first
    ready INTEGER NOT NULL DEFAULT 0,  -- 1 once every dependency wrote its DONE marker
    env TEXT NOT NULL,                 -- JSON: the submitting environment, the jobs' environment
    cwd TEXT NOT NULL,
    python TEXT NOT NULL,              -- the submitter's interpreter and llmjobs; another pair is exec'd
    code TEXT NOT NULL,
    max_parallel INTEGER NOT NULL,
    walltime_s INTEGER NOT NULL,
    signal_delay_s INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    grp INTEGER NOT NULL REFERENCES groups(id),
    shard_key TEXT NOT NULL,           -- state_dir + shard: two jobs of one shard never run at once
    task BLOB NOT NULL,                -- pickled ShardTask
    state TEXT NOT NULL,               -- queued | starting | running | succeeded | failed | cancelled | lost
    reason TEXT,
    exit_code INTEGER,
    requeues_left INTEGER NOT NULL DEFAULT 0,
    pid INTEGER,                       -- the job's first process = its session id
    started_at REAL,                   -- first start (what status shows)
    began REAL,                        -- start of the current run (walltime counts from here)
    ended_at REAL,
    signalled INTEGER NOT NULL DEFAULT 0,  -- checkpoint signal sent in this run
    kill TEXT,                         -- why it is being ended: cancel | timeout
    killed_at REAL                     -- when SIGTERM went out; SIGKILL follows after a grace
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, id);
CREATE INDEX IF NOT EXISTS jobs_grp ON jobs(grp, state);
"""


def queue_dir(base: Path) -> Path:
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    return base


def connect(folder: Path) -> sqlite3.Connection:
    folder = queue_dir(folder)
    path = folder / "queue.db"
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    # autocommit mode: every transaction is explicit and short (BEGIN IMMEDIATE for writes)
    con = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.executescript(SCHEMA)
    return con


class write:
    """``with write(con): ...``: one short IMMEDIATE transaction."""

    def __init__(self, con: sqlite3.Connection) -> None:
        self.con = con

    def __enter__(self) -> sqlite3.Connection:
        self.con.execute("BEGIN IMMEDIATE")
        return self.con

    def __exit__(self, exc_type, exc, tb) -> None:
        self.con.execute("COMMIT" if exc_type is None else "ROLLBACK")


def log_paths(folder: str | Path, job_id: int | str) -> tuple[Path, Path]:
    """stdout and stderr of a job: the names submitit's local jobs had, so old runs read the same."""
    folder = Path(folder)
    return folder / f"{job_id}_0_log.out", folder / f"{job_id}_0_log.err"


def result_path(folder: str | Path, job_id: int | str) -> Path:
    return Path(folder) / f"{job_id}.result.json"


def pid_path(folder: str | Path, job_id: int | str) -> Path:
    """The job's own word of its pid, written by the job as it starts. The queue row's ``pid`` is what the
    dispatcher acts on; this file lets a new dispatcher adopt a job whose dispatcher died after the fork and
    before it wrote the row (``Dispatcher.recover``)."""
    return Path(folder) / f"{job_id}.pid"


def note(folder: str | Path, job_id: int | str, line: str) -> None:
    """Append llmjobs' own word to a job's stderr log (why it was ended), so the log says what happened."""
    try:
        with open(log_paths(folder, job_id)[1], "a") as f:
            f.write(f"llmjobs {time.strftime('%Y-%m-%d %H:%M:%S')}: {line}\n")
    except OSError:
        pass
