"""The local scheduler's dispatcher: one small process per queue that starts, watches and ends jobs.

It is started on demand (by ``submit``, by ``poll``, so by ``status``/``resume``/``--wait``, and by a job that
finishes after its dispatcher died), holds ``dispatcher.lock`` so only one runs per queue, and exits when no
job is queued or running. So no llmjobs process has to stay alive for a DAG to finish, and an idle machine
runs nothing. Each tick it:

- reaps its children and records the outcome of jobs whose session has no process left (a job's shell
  command that outlives its Python process keeps the job running: a second attempt cannot start beside it);
- ends jobs past their walltime (SIGTERM to the session, SIGKILL after a grace; reason ``timeout``), sends the
  checkpoint signal before it to jobs with requeues left, and requeues them when the runner checkpointed;
- releases submissions whose dependencies wrote their DONE markers, and cancels those whose dependency
  ended without one (``dependency failed`` / ``dependency cancelled``);
- starts queued jobs, oldest first, while fewer than ``max_parallel`` run (each submission's own limit).

Jobs are forked from this process (the runner is imported once here), each in its own session.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import llmjobs
from llmjobs.cluster.backends.local import procs
from llmjobs.cluster.backends.local.queue import (
    KEEP_FINISHED_S,
    LIVE,
    connect,
    log_paths,
    note,
    pid_path,
    queue_dir,
    result_path,
    write,
)
from llmjobs.jobs.task import read_done

TICK_BUSY_S = 0.2  # longest sleep while jobs run; a finishing child wakes the loop at once (SIGCHLD)
TICK_IDLE_S = 0.5  # while only waiting for dependencies or new submissions
KILL_GRACE_S = 5.0  # SIGTERM, then SIGKILL this much later
RECHECK_DEPS_S = 2.0
CANDIDATES = 256  # queued jobs looked at per tick
CODE_DIR = str(Path(llmjobs.__file__).resolve().parent)


def ensure_dispatcher(folder: Path) -> None:
    """Start the queue's dispatcher unless one runs (its lock is held)."""
    folder = queue_dir(folder)
    fd = os.open(folder / "dispatcher.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    logfile = folder / "dispatcher.log"
    if logfile.exists() and logfile.stat().st_size > 1 << 20:
        logfile.unlink()
    # the dispatcher (and the jobs it forks) must run this very llmjobs, whatever PYTHONPATH says
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(CODE_DIR).parent), *filter(None, [env.get("PYTHONPATH")])])
    with open(logfile, "ab") as log:
        # its own session, none of the caller's pipes: `$(llmjobs submit ...)` must not wait for it
        subprocess.Popen([sys.executable, "-m", "llmjobs.cluster.backends.local.dispatcher", str(folder)],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=folder, env=env,
                         start_new_session=True)


@dataclass
class Group:
    folder: str
    env: dict[str, str]
    cwd: str
    exec_python: str | None  # None: fork; else the interpreter to exec
    code: str  # the submitter's llmjobs package


@dataclass
class Dispatcher:
    folder: Path
    children: dict[int, int] = field(default_factory=dict)  # pid of a job's first process -> job id
    codes: dict[int, int] = field(default_factory=dict)  # job id -> exit code of its first process
    satisfied: set[str] = field(default_factory=set)  # DONE markers seen valid
    groups: dict[int, Group] = field(default_factory=dict)
    last_group: int = -1
    deps_checked: float = 0.0

    def run(self) -> None:
        self.lock = os.open(self.folder / "dispatcher.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # another dispatcher won the race
        os.ftruncate(self.lock, 0)
        os.write(self.lock, str(os.getpid()).encode())
        import llmjobs.jobs.python
        import llmjobs.jobs.runner
        import llmjobs.jobs.shell  # noqa: F401

        self.con = connect(self.folder)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
        self.recover()
        while True:
            self.reap()
            finished = self.check_running()
            newest = self.con.execute("SELECT max(id) FROM groups").fetchone()[0] or 0
            if finished or newest != self.last_group or time.time() - self.deps_checked > RECHECK_DEPS_S:
                self.last_group = newest
                self.resolve_deps()
            self.start_ready()
            if self.maybe_exit():
                return
            signal.sigtimedwait([signal.SIGCHLD], TICK_BUSY_S if self.children else TICK_IDLE_S)

    # ---- finishing ---------------------------------------------------------------------------------------

    def recover(self) -> None:
        """Jobs a dead dispatcher marked starting: adopt the ones whose process came up, queue the others."""
        rows = self.con.execute("SELECT j.id, g.folder FROM jobs j JOIN groups g ON g.id = j.grp "
                                "WHERE j.state = 'starting'").fetchall()
        now = time.time()
        with write(self.con) as c:
            for jid, folder in rows:
                try:
                    pid = int(pid_path(folder, jid).read_text())
                except (OSError, ValueError):
                    c.execute("UPDATE jobs SET state = 'queued' WHERE id = ? AND state = 'starting'", (jid,))
                    continue
                c.execute("UPDATE jobs SET state = 'running', pid = ?, began = ?, started_at = "
                          "coalesce(started_at, ?) WHERE id = ? AND state = 'starting'", (pid, now, now, jid))

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            jid = self.children.pop(pid, None)
            if jid is not None:
                self.codes[jid] = os.waitstatus_to_exitcode(status)

    def check_running(self) -> int:
        """Finish jobs whose session is empty, enforce walltimes and kills; returns jobs finished."""
        rows = self.con.execute(
            "SELECT j.id, j.pid, j.began, j.kill, j.killed_at, j.signalled, j.requeues_left, g.walltime_s, "
            "g.signal_delay_s, g.folder FROM jobs j JOIN groups g ON g.id = j.grp WHERE j.state = 'running'"
        ).fetchall()
        if not rows:
            return 0
        live: dict[int, list[int]] | None = None
        ours = set(self.children)
        updates: list[tuple[str, tuple]] = []
        finished = 0
        now = time.time()
        for jid, pid, began, kill, killed_at, signalled, requeues_left, walltime_s, delay_s, folder in rows:
            if pid not in ours:
                if live is None:
                    live = procs.sessions()
                if pid not in live:
                    updates.append(self.outcome(jid, folder, kill, requeues_left, now))
                    finished += 1
                    continue
            # alive: enforce kills and the walltime
            if kill:
                if killed_at is None:
                    procs.signal_session(pid, signal.SIGTERM)
                    updates.append(("UPDATE jobs SET killed_at = ? WHERE id = ?", (now, jid)))
                elif now - killed_at > KILL_GRACE_S:
                    procs.signal_session(pid, signal.SIGKILL)
                continue
            elapsed = now - (began or now)
            if elapsed >= walltime_s:
                note(folder, jid, f"walltime of {walltime_s} s reached: ending the job (timeout)")
                procs.signal_session(pid, signal.SIGTERM)
                updates.append(("UPDATE jobs SET kill = 'timeout', killed_at = ? WHERE id = ?", (now, jid)))
            elif requeues_left > 0 and not signalled and elapsed >= walltime_s - delay_s and pid in ours:
                from llmjobs.cluster.backends.local.job import CHECKPOINT_SIGNAL

                try:
                    os.kill(pid, CHECKPOINT_SIGNAL)  # the job's Python process only: it checkpoints
                except ProcessLookupError:
                    pass
                updates.append(("UPDATE jobs SET signalled = 1 WHERE id = ?", (jid,)))
        if updates:
            with write(self.con) as c:
                for sql, args in updates:
                    c.execute(sql, args)
        return finished

    def outcome(self, jid: int, folder: str, kill: str | None, requeues_left: int, now: float) -> tuple[str, tuple]:
        """The row update for a job with no process left: from its result record, else its exit code."""
        try:
            result = json.loads(result_path(folder, jid).read_text())
        except (OSError, ValueError):
            result = {}
        code = self.codes.pop(jid, None)
        if code is not None and code < 0:
            code = 128 - code  # killed by a signal: the shell's convention
        outcome = result.get("outcome")
        done = "UPDATE jobs SET state = ?, reason = ?, exit_code = ?, ended_at = ? WHERE id = ?"
        if kill == "cancel":
            return done, ("cancelled", "cancelled by user", code, now, jid)
        if outcome == "requeue" and requeues_left > 0:
            result_path(folder, jid).unlink(missing_ok=True)
            return (("UPDATE jobs SET state = 'queued', requeues_left = requeues_left - 1, pid = NULL, began = NULL, "
                    "signalled = 0, kill = NULL, killed_at = NULL WHERE id = ?"), (jid,))
        if outcome == "success":
            return done, ("succeeded", None, 0, now, jid)
        if kill == "timeout":
            return done, ("failed", "timeout", code, now, jid)
        if outcome == "failed":
            return done, ("failed", result.get("reason") or "failed", result.get("exit_code", code), now, jid)
        why = "process died without a result"
        if code is not None:
            why += f" (killed by signal {code - 128})" if code > 128 else f" (exit code {code})"
        return done, ("failed", why, code, now, jid)

    # ---- dependencies ------------------------------------------------------------------------------------

    def resolve_deps(self) -> None:
        self.deps_checked = time.time()
        waiting = self.con.execute(
            "SELECT g.id, g.deps FROM groups g WHERE g.ready = 0 AND EXISTS "
            "(SELECT 1 FROM jobs j WHERE j.grp = g.id AND j.state = 'queued')").fetchall()
        for gid, deps_json in waiting:
            deps = [(str(j), m) for j, m in json.loads(deps_json)]
            ids = [int(j) for j, m in deps if m not in self.satisfied and j.isdigit()]
            states: dict[str, tuple[str, str | None]] = {}
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                q = f"SELECT id, state, reason FROM jobs WHERE id IN ({','.join('?' * len(chunk))})"
                states.update({str(r[0]): (r[1], r[2]) for r in self.con.execute(q, chunk)})
            ready, problem = True, None
            for jid, marker in deps:
                if marker in self.satisfied:
                    continue
                state, reason = states.get(jid, (None, None))
                if state in LIVE:
                    ready = False  # afterok: wait for the job to end, even when its marker is written
                    continue
                if marker and read_done(marker) is not None:
                    self.satisfied.add(marker)
                    continue
                if state is None:
                    problem = f"dependency failed: job {jid} is not in this machine's queue"
                elif state == "cancelled":
                    problem = reason if (reason or "").startswith("dependency") else \
                        f"dependency cancelled: job {jid} was cancelled"
                else:
                    problem = f"dependency failed: job {jid} ended without finishing its shard"
                break
            if problem:
                with write(self.con) as c:
                    rows = c.execute("SELECT j.id FROM jobs j WHERE j.grp = ? AND j.state = 'queued'",
                                     (gid,)).fetchall()
                    c.execute("UPDATE jobs SET state = 'cancelled', reason = ?, ended_at = ? "
                              "WHERE grp = ? AND state = 'queued'", (problem, time.time(), gid))
                folder = self.group(gid).folder
                for (jid,) in rows:
                    note(folder, jid, f"not started: {problem}")
            elif ready:
                with write(self.con) as c:
                    c.execute("UPDATE groups SET ready = 1 WHERE id = ?", (gid,))

    # ---- starting ----------------------------------------------------------------------------------------

    def group(self, gid: int) -> Group:
        if gid not in self.groups:
            folder, env, cwd, python, code = self.con.execute(
                "SELECT folder, env, cwd, python, code FROM groups WHERE id = ?", (gid,)).fetchone()
            same = python == sys.executable and code == CODE_DIR
            self.groups[gid] = Group(folder, json.loads(env), cwd, None if same else python, code)
        return self.groups[gid]

    def start_ready(self) -> None:
        busy = self.con.execute("SELECT shard_key FROM jobs WHERE state IN ('starting', 'running')").fetchall()
        running, keys = len(busy), {k for (k,) in busy}
        candidates = self.con.execute(
            "SELECT j.id, j.grp, j.shard_key, g.max_parallel FROM jobs j JOIN groups g ON g.id = j.grp "
            "WHERE j.state = 'queued' AND g.ready = 1 ORDER BY j.id LIMIT ?", (CANDIDATES,)).fetchall()
        chosen = []
        for jid, gid, key, cap in candidates:
            if running >= cap or key in keys:
                continue
            chosen.append((jid, gid))
            running += 1
            keys.add(key)
        if not chosen:
            return
        with write(self.con) as c:
            chosen = [(jid, gid) for jid, gid in chosen if c.execute(
                "UPDATE jobs SET state = 'starting' WHERE id = ? AND state = 'queued'", (jid,)).rowcount]
        started = []
        for jid, gid in chosen:
            task, requeues_left = self.con.execute("SELECT task, requeues_left FROM jobs WHERE id = ?",
                                                   (jid,)).fetchone()
            pid = self.spawn(jid, self.group(gid), task, requeues_left)
            self.children[pid] = jid
            started.append((pid, jid))
        now = time.time()
        with write(self.con) as c:
            for pid, jid in started:
                c.execute("UPDATE jobs SET state = 'running', pid = ?, began = ?, started_at = "
                          "coalesce(started_at, ?) WHERE id = ?", (pid, now, now, jid))

    def spawn(self, jid: int, g: Group, task: bytes, requeues_left: int) -> int:
        from llmjobs.cluster.backends.local.job import forked_child

        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        pid = os.fork()
        if pid:
            return pid
        if g.exec_python is None:
            forked_child(str(self.folder), g.folder, jid, task, requeues_left, g.env, g.cwd, parent)
        # another interpreter or llmjobs submitted this job: exec it there, in the same kind of session
        try:
            os.setsid()
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            out, err = log_paths(g.folder, jid)
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            os.dup2(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), 1)
            os.dup2(os.open(err, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), 2)
            os.closerange(3, 65536)
            try:
                os.chdir(g.cwd)
            except OSError:
                pass
            path = os.pathsep.join([str(Path(g.code).parent), *filter(None, [g.env.get("PYTHONPATH")])])
            os.execve(g.exec_python, [g.exec_python, "-u", "-m", "llmjobs.cluster.backends.local.job",
                                      str(self.folder), str(jid)], {**g.env, "PYTHONPATH": path})
        finally:
            os._exit(127)

    # ---- leaving -----------------------------------------------------------------------------------------

    def maybe_exit(self) -> bool:
        """Exit when nothing is queued or running. The lock is released inside the write transaction, so a
        submission either lands before (and is seen here) or finds the lock free (and starts a dispatcher)."""
        if self.children:
            return False
        with write(self.con) as c:
            live = c.execute(f"SELECT count(*) FROM jobs WHERE state IN ({','.join('?' * len(LIVE))})",
                             LIVE).fetchone()[0]
            if live:
                return False
            old = time.time() - KEEP_FINISHED_S
            c.execute("DELETE FROM jobs WHERE ended_at < ?", (old,))
            c.execute("DELETE FROM groups WHERE created < ? AND NOT EXISTS "
                      "(SELECT 1 FROM jobs j WHERE j.grp = groups.id)", (old,))
            os.close(self.lock)
        return True


def main(folder: str) -> None:
    Dispatcher(Path(folder)).run()


if __name__ == "__main__":
    main(sys.argv[1])
