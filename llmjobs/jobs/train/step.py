"""The kinds ``train.sft`` and ``train.lora``: one call per node starts that node's training processes.

The walltime / preemption signal reaches this process (the runner's Checkpointable path, ``requeues:``):
it raises the stop flag, the training processes save a checkpoint at the next optimizer step and exit, and
then submitit's own handler requeues the job, which resumes from that checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from llmjobs.jobs.context import StepContext
from llmjobs.jobs.train.params import LoraParams, SFTParams

log = logging.getLogger("llmjobs.train")


def run_sft(ctx: StepContext) -> dict[str, Any]:
    return _run(ctx, "train.sft", SFTParams)


def run_lora(ctx: StepContext) -> dict[str, Any]:
    return _run(ctx, "train.lora", LoraParams)


def _run(ctx: StepContext, kind: str, model: type[Any], worker: str = "llmjobs.jobs.train.worker",
         extra: dict[str, Any] | None = None) -> dict[str, Any]:
    out = Path(ctx.output_dir)
    work = out / ".train"
    work.mkdir(parents=True, exist_ok=True)
    stop_flag = work / f"attempt-{ctx.attempt}.stop"
    status_file = work / f"attempt-{ctx.attempt}.status.json"
    if ctx.is_head:  # a requeued job runs the same attempt again: forget the last run's stop and status
        stop_flag.unlink(missing_ok=True)
        status_file.unlink(missing_ok=True)
    running: list[subprocess.Popen] = []
    restore = _relay_walltime_signal(running, stop_flag)  # first thing: the signal may come during setup
    try:
        return _launch(ctx, kind, model, work, stop_flag, status_file, running, worker, extra)
    finally:
        restore()


def _launch(ctx: StepContext, kind: str, model: type[Any], work: Path, stop_flag: Path,
            status_file: Path, running: list[subprocess.Popen], worker: str,
            extra: dict[str, Any] | None) -> dict[str, Any]:
    from llmjobs.jobs.train import launch

    p = model.model_validate(ctx.params)
    out = Path(ctx.output_dir)
    if ctx.num_shards > 1:
        raise ValueError(f"{kind} runs as one shard; spread it with resources.nodes and gpus_per_node")
    config = work / f"attempt-{ctx.attempt}.rank-{ctx.rank}.json"
    config.write_text(json.dumps({
        "kind": kind, "params": p.model_dump(mode="json"), "output_dir": str(out),
        "checkpoint_dir": str(ctx.checkpoint_dir), "stop_flag": str(stop_flag), "status_file": str(status_file),
        "attempt": ctx.attempt, "run_id": ctx.run_id, "step": ctx.step, **(extra or {})}))
    nproc = p.nproc_per_node or max(1, launch.gpus_on_node())
    cmd, env = launch.command(ctx, str(config), nproc, worker)
    log.info("node %d/%d: %s", ctx.rank, ctx.world_size, launch.describe(cmd, env))
    proc = subprocess.Popen(cmd, env={**os.environ, **env})
    running.append(proc)
    rc = proc.wait()
    status = _read(status_file)
    if rc != 0:
        raise RuntimeError(f"{kind}: training process exited with code {rc} (its traceback is above in this log)")
    if not ctx.is_head:
        if status.get("state") == "interrupted":
            time.sleep(120)  # the head requeues the job, which ends this task too
        return {"role": "training node", "rank": ctx.rank}
    if status.get("state") != "done":
        raise RuntimeError(f"{kind}: training ended without finishing (status {status or 'missing'})")
    return status["result"]


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _grace_seconds() -> float:
    """How long to wait for the checkpoint after the signal: most of the scheduler's warning time."""
    delay = float(os.environ.get("SUBMITIT_LOCAL_SIGNAL_DELAY_S") or os.environ.get("LLMJOBS_SIGNAL_DELAY_S")
                  or 90)
    return max(5.0, delay - 10.0)


def _alive(pid: int) -> bool:
    """Whether the child still runs. Not Popen.poll: the main thread sits in Popen.wait, which holds the lock
    poll needs, so from this signal handler poll would always say 'running'."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _relay_walltime_signal(running: list[subprocess.Popen], stop_flag: Path):
    """While training runs, the walltime signal first makes the trainers checkpoint, then goes on to the
    handler that was there (submitit's requeue). Without requeues the runner ignores the signal: so do we."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    sig = signal.SIGUSR2
    try:
        from submitit import JobEnvironment

        sig = JobEnvironment._usr_sig()
    except Exception:  # noqa: BLE001 - outside submitit: USR2, the usual choice
        log.debug("no submitit job environment; relaying SIGUSR2")
    previous = signal.getsignal(sig)
    if not callable(previous):
        return lambda: None

    def handler(signum: int, frame: Any) -> None:
        log.warning("walltime/preemption signal: asking the trainers to checkpoint")
        stop_flag.touch()
        deadline = time.time() + _grace_seconds()
        while running and _alive(running[0].pid) and time.time() < deadline:
            time.sleep(0.2)
        if running and _alive(running[0].pid):
            log.warning("trainers still running after %.0fs; requeueing from the last periodic checkpoint",
                        _grace_seconds())
        signal.signal(sig, previous)
        previous(signum, frame)

    signal.signal(sig, handler)
    return lambda: signal.signal(sig, previous)
