"""What a submitted job runs on the node: one shard of one step, at most once.

Guarantees, whatever the scheduler: a shard whose DONE marker exists is not run again (idempotent), two
attempts of one shard never run at the same time on a shared filesystem with working locks (the second
waits, then finds DONE), and DONE is written atomically only after the kind returned on rank 0.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from submitit.helpers import Checkpointable, DelayedSubmission

from llmjobs import jobs
from llmjobs.jobs.context import StepContext
from llmjobs.jobs.task import ShardTask, missing_requirements, read_done, write_done, write_failure

log = logging.getLogger("llmjobs.job")


@contextmanager
def shard_lock(task: ShardTask, rank: int) -> Iterator[None]:
    path = Path(task.state_dir) / f"shard-{task.shard:05d}.rank-{rank}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released by the kernel if this process dies
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class DependencyNotSatisfied(RuntimeError):
    """An upstream shard has no valid DONE marker: the scheduler released this job too early."""


class ShardRunner(Checkpointable):
    """Callable submitted through submitit.

    On the scheduler's timeout/preemption signal submitit calls ``checkpoint``: a shard with ``requeues``
    left is requeued with the same task (the kind resumes from ``checkpoint_dir``); any other shard ignores
    the signal, so the scheduler ends it at its walltime and records it as timed out, not as an error.
    """

    def __call__(self, task: ShardTask) -> dict[str, Any]:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s llmjobs %(levelname)s %(message)s")
        if task.requeues <= 0:
            _ignore_timeout_signal()
        os.environ.update(task.env)
        ctx = StepContext.from_task(task)
        marker = task.done_marker
        if _done_before(task, ctx):
            log.info("%s shard %d already done; nothing to do", task.step, task.shard)
            return {"skipped": True}
        missing = missing_requirements(task)
        if missing:
            # never run on partial input, whatever the scheduler's dependency semantics
            reason = (f"dependency not satisfied: {len(missing)} upstream shard(s) have no DONE marker "
                      f"(first: {missing[0]})")
            write_failure(task.state_dir, task.shard, task.attempt, 1, reason)
            raise DependencyNotSatisfied(reason)
        with shard_lock(task, ctx.rank):
            if _done_before(task, ctx):
                log.info("%s shard %d finished by another attempt; nothing to do", task.step, task.shard)
                return {"skipped": True}
            kind = jobs.get(task.kind)
            fn = jobs.function(kind)
            ctx.output_dir.mkdir(parents=True, exist_ok=True)
            start = time.time()
            for trial in range(task.retries + 1):
                try:
                    log.info("running %s shard %d/%d (kind %s, rank %d/%d, try %d)", task.step, task.shard,
                             task.num_shards, task.kind, ctx.rank, ctx.world_size, trial + 1)
                    result = fn(ctx) or {}
                    break
                except Exception as e:
                    if trial == task.retries:
                        if ctx.is_head:
                            code = getattr(e, "code", None)
                            write_failure(task.state_dir, task.shard, task.attempt,
                                          code if isinstance(code, int) and code else 1,
                                          f"{type(e).__name__}: {e}")
                        raise
                    log.warning("try %d failed, retrying in place:\n%s", trial + 1, traceback.format_exc())
            if ctx.is_head:
                write_done(marker, {"attempt": task.attempt, "seconds": time.time() - start,
                                    "result": result if isinstance(result, dict) else {"value": repr(result)}})
            return result if isinstance(result, dict) else {"value": result}

    def checkpoint(self, task: ShardTask) -> DelayedSubmission | None:
        if task.requeues <= 0:
            return None
        log.warning("%s shard %d interrupted; requeued to resume from its checkpoint", task.step, task.shard)
        return DelayedSubmission(self, task)


def _done_before(task: ShardTask, ctx: StepContext) -> bool:
    """DONE written by another attempt. On a multi-node shard, rank 0 of this very attempt may write it
    while the other ranks are still starting: they must run their part all the same."""
    done = read_done(task.done_marker)
    return done is not None and (ctx.is_head or done.get("attempt") != task.attempt)


def _ignore_timeout_signal() -> None:
    if "SUBMITIT_EXECUTOR" not in os.environ or threading.current_thread() is not threading.main_thread():
        return
    from submitit import JobEnvironment

    signal.signal(JobEnvironment._usr_sig(), signal.SIG_IGN)


run_shard = ShardRunner()
