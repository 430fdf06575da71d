"""What a submitted job runs on the node: one shard of one step, at most once.

Guarantees, whatever the scheduler: a shard whose DONE marker exists is not run again (idempotent), two
attempts of one shard never run at the same time on a shared filesystem with working locks (the second
waits, then finds DONE), and DONE is written atomically only after the kind returned on rank 0.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from llmjobs import jobs
from llmjobs.jobs.context import StepContext
from llmjobs.jobs.task import ShardTask, read_done, write_done

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


class ShardRunner:
    """Callable submitted through submitit; a class so that backends can add checkpoint/requeue hooks."""

    def __call__(self, task: ShardTask) -> dict[str, Any]:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s llmjobs %(levelname)s %(message)s")
        os.environ.update(task.env)
        ctx = StepContext.from_task(task)
        marker = task.done_marker
        if read_done(marker) is not None:
            log.info("%s shard %d already done; nothing to do", task.step, task.shard)
            return {"skipped": True}
        with shard_lock(task, ctx.rank):
            if read_done(marker) is not None:
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
                except Exception:
                    if trial == task.retries:
                        raise
                    log.warning("try %d failed, retrying in place:\n%s", trial + 1, traceback.format_exc())
            if ctx.is_head:
                write_done(marker, {"attempt": task.attempt, "seconds": time.time() - start,
                                    "result": result if isinstance(result, dict) else {"value": repr(result)}})
            return result if isinstance(result, dict) else {"value": result}


run_shard = ShardRunner()
