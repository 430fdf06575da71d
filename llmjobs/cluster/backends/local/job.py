"""One job of the local scheduler: a process in its own session that runs one shard and records the outcome.

The dispatcher forks it (cheap: the runner is already imported, so a trivial shard costs milliseconds, not a
fresh interpreter), or, when the submitter used another interpreter or another llmjobs, execs
``python -m llmjobs.cluster.backends.local.job QUEUE_DIR JOB_ID``. Either way the job gets the submitter's
environment, ``sys.path`` entries and working directory, writes ``JOB_ID.result.json`` beside its logs, and
exits with the kind's exit code.

Walltime: the dispatcher sends SIGUSR2 ``signal_delay_s`` before the walltime to a job with requeues left; the
runner's ``checkpoint`` then decides, and a requeued job ends here with outcome ``requeue``. At the walltime
the dispatcher ends the whole session.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import sys
import traceback
from pathlib import Path

from llmjobs.cluster.backends.local.queue import log_paths, pid_path, result_path

CHECKPOINT_SIGNAL = signal.SIGUSR2


class Requeued(BaseException):
    """Raised in the job on the checkpoint signal; a BaseException so the kind's ``except Exception`` and
    the runner's in-place retries do not swallow it."""


def _write_result(folder: str, job_id: int, **result) -> None:
    path = result_path(folder, job_id)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, path)


def _adopt_environment(env: dict[str, str], cwd: str) -> None:
    os.environ.clear()
    os.environ.update(env)
    # a forked job has the dispatcher's sys.path: add what the submitter's PYTHONPATH gave it
    extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
    sys.path[0:0] = extra
    if extra:
        import importlib

        importlib.invalidate_caches()
    try:
        os.chdir(cwd)
    except OSError:
        os.chdir(env.get("HOME", "/"))
    # the dispatcher may have imported torch before the fork, when the environment did not bound its threads
    threads = env.get("OMP_NUM_THREADS", "")
    if "torch" in sys.modules and threads.isdigit() and int(threads) > 0:
        sys.modules["torch"].set_num_threads(int(threads))


def run_job(queue_dir: str, folder: str, job_id: int, task_blob: bytes, requeues_left: int,
            dispatcher_pid: int) -> int:
    """Run the shard in this process (already in its own session, logs on fds 1 and 2); returns the exit code."""
    from llmjobs.jobs.runner import run_shard
    from llmjobs.jobs.task import read_failure

    task = pickle.loads(task_blob)

    def on_checkpoint(signum, frame):
        if run_shard.checkpoint(task) is None:
            return
        # recorded first: if the kind sits in native code until the walltime kill, the requeue still counts
        _write_result(folder, job_id, outcome="requeue")
        raise Requeued

    if requeues_left > 0:
        signal.signal(CHECKPOINT_SIGNAL, on_checkpoint)
    try:
        run_shard(task)
    except Requeued:
        print("llmjobs: walltime near: checkpoint signal received; the job is requeued", file=sys.stderr)
        code = 0
    except BaseException as e:  # noqa: BLE001 - every failure is recorded, then the process ends
        traceback.print_exc()
        failure = read_failure(task.state_dir, task.shard, task.attempt)
        code = failure["exit_code"] if failure else (e.code if isinstance(e, SystemExit) and
                                                     isinstance(e.code, int) and e.code else 1)
        reason = failure["reason"] if failure else f"{type(e).__name__}: {e}"
        _write_result(folder, job_id, outcome="failed", exit_code=code, reason=reason)
    else:
        _write_result(folder, job_id, outcome="success", exit_code=0)
        code = 0
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    if os.getppid() != dispatcher_pid:
        # the dispatcher that started this job is gone: make sure one records it and starts what waits
        from llmjobs.cluster.backends.local.dispatcher import ensure_dispatcher

        ensure_dispatcher(Path(queue_dir))
    return code


def forked_child(queue_dir: str, folder: str, job_id: int, task_blob: bytes, requeues_left: int,
                 env: dict[str, str], cwd: str, dispatcher_pid: int) -> None:
    """Body of a job forked by the dispatcher; never returns."""
    code = 1
    try:
        os.setsid()
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(sig, signal.SIG_DFL)
        out, err = log_paths(folder, job_id)
        devnull = os.open(os.devnull, os.O_RDONLY)
        o = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        e = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(devnull, 0)
        os.dup2(o, 1)
        os.dup2(e, 2)
        # drop the dispatcher's descriptors: above all its lock file, which must not outlive the dispatcher
        os.closerange(3, 65536)
        sys.stdout.reconfigure(line_buffering=True)  # `logs --follow` shows a job's prints as they come
        sys.stderr.reconfigure(line_buffering=True)
        pid_path(folder, job_id).write_text(str(os.getpid()))
        _adopt_environment(env, cwd)
        code = run_job(queue_dir, folder, job_id, task_blob, requeues_left, dispatcher_pid)
    except BaseException:  # noqa: BLE001 - a forked child must never return into the dispatcher's loop
        try:
            traceback.print_exc()
        except BaseException:  # noqa: BLE001, S110 - nothing is left to report it to
            pass
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def main(queue_dir: str, job_id: int) -> int:
    """Entry of an exec'd job (already in its own session, logs on fds 1 and 2, environment set)."""
    from llmjobs.cluster.backends.local.queue import connect

    con = connect(Path(queue_dir))
    folder, blob, requeues_left = con.execute(
        "SELECT g.folder, j.task, j.requeues_left FROM jobs j JOIN groups g ON g.id = j.grp WHERE j.id = ?",
        (job_id,)).fetchone()
    con.close()
    pid_path(folder, job_id).write_text(str(os.getpid()))
    return run_job(queue_dir, folder, job_id, blob, requeues_left, os.getppid())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
