"""The emulated MoM: runs one job or subjob as a real detached process group and records its end.

Started by the scheduler as ``python -m pbs_emulator.runner HOME KEY`` in a new session, so the job
outlives the command (and the test process) that queued it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import ids, server
from . import store as st

POLL = 0.1


def _seconds(walltime: str | None) -> float | None:
    if not walltime:
        return None
    parts = [int(p) for p in walltime.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    h, m, s = parts
    return h * 3600 + m * 60 + s


def _final_path(path: str, index: str | None) -> Path:
    return Path(path.replace("^array_index^", index) if index is not None else path)


def _job_env(job: dict, unit_id: str, index: str | None, nodefile: Path, scratch: Path) -> dict:
    env = dict(job["base_env"])
    env.update(job["job_env"])
    env.update({k: v for k, v in job["variables"].items() if k.startswith("PBS_O_")})
    ncpus = str(job["resources"]["chunk"].get("ncpus", 1))
    env.update(
        PBS_JOBID=unit_id, PBS_JOBNAME=job["name"], PBS_QUEUE=job["queue"], PBS_ENVIRONMENT="PBS_BATCH",
        PBS_NODEFILE=str(nodefile), PBS_JOBDIR=job["jobdir"], PBS_TASKNUM="1", PBS_NODENUM="0",
        PBS_MOMPORT="15003", TMPDIR=str(scratch / "tmp"), PBS_LOCALDIR=str(scratch / "local"),
        NCPUS=ncpus, OMP_NUM_THREADS=ncpus,
    )
    if index is not None:
        env.update(PBS_ARRAY_INDEX=index, PBS_ARRAY_ID=job["id"])
    # qstat/qsub/qdel work inside a job, as on a real node whose /etc/pbs.conf names the server
    env.update({k: v for k, v in os.environ.items() if k.startswith("PBS_EMULATOR_")})
    return env


def main(home: str, key: str) -> int:
    home_path = Path(home)
    ref = ids.parse(key)
    with st.locked(home_path) as store:
        job, unit = server.find(store, ref.number, ref.index)
        if unit is None or unit["state"] != "R":
            return 0
        index = ref.index
        unit_id = ref.canonical(job["server"])
        scratch = home_path / "scratch" / unit_id
        for sub in ("tmp", "local"):
            (scratch / sub).mkdir(parents=True, exist_ok=True)
        nodefile = scratch / "nodefile"
        chunk = job["resources"]["chunk"]
        per_chunk = int(chunk.get("mpiprocs", chunk.get("ncpus", 1)))
        nodefile.write_text(f"{st.node_name()}\n" * (per_chunk * job["resources"]["nodect"]))
        env = _job_env(job, unit_id, index, nodefile, scratch)
        spool_out = store.spool() / f"{unit_id}.OU"
        spool_err = store.spool() / f"{unit_id}.ER"
        join = job["join"]
        finals = {spool_out: _final_path(job["out_path"], index), spool_err: _final_path(job["err_path"], index)}
        if join == "oe":
            finals.pop(spool_err)
        elif join == "eo":
            finals.pop(spool_out)
        walltime = _seconds(job["resources"].get("walltime"))
        argv = [job["shell"], job["script"]]
        cwd = job["jobdir"]

    messages = spool_out if join == "oe" else spool_err  # where the MoM's own messages go
    try:
        with open(spool_out, "wb") as out, open(spool_err, "wb") as err:
            proc = subprocess.Popen(
                argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=err if join == "eo" else out,
                stderr=subprocess.STDOUT if join in ("oe", "eo") else err, start_new_session=True,
            )
    except OSError as exc:
        with open(messages, "ab") as err:
            err.write(f"=>> PBS: job could not start: {exc}\n".encode())
        exit_status = server.EXIT_FAIL1
    else:
        with st.locked(home_path) as store:
            _, unit = server.find(store, ref.number, ref.index)
            if unit is not None:
                unit["session_id"] = proc.pid
        exit_status = _supervise(proc, home_path, ref, walltime, messages)

    _stage_out(finals)
    for spool in (spool_out, spool_err):
        spool.unlink(missing_ok=True)
    shutil.rmtree(scratch, ignore_errors=True)
    with st.locked(home_path) as store:
        job, unit = server.find(store, ref.number, ref.index)
        if unit is not None:
            server.finish(store, job, unit, exit_status)
        server.schedule(store)
    return 0


def _supervise(proc: subprocess.Popen, home: Path, ref: ids.JobRef, walltime: float | None,
               messages: Path) -> int:
    """Wait for the job; enforce its walltime and a qdel (SIGTERM, then SIGKILL after the kill delay)."""
    started = time.monotonic()
    killed_for_walltime = False
    term_sent_at = None
    while proc.poll() is None:
        time.sleep(POLL)
        elapsed = time.monotonic() - started
        if term_sent_at is None and walltime is not None and elapsed > walltime:
            killed_for_walltime = True
            with open(messages, "ab") as err:
                err.write(f"=>> PBS: job killed: walltime {int(elapsed)} exceeded limit {int(walltime)}\n"
                          .encode())
            _killpg(proc.pid, signal.SIGTERM)
            term_sent_at = time.monotonic()
        elif term_sent_at is None:
            with st.locked(home, write=False) as store:
                _, unit = server.find(store, ref.number, ref.index)
                deleting = unit is not None and unit.get("deleting")
            if deleting:
                _killpg(proc.pid, signal.SIGTERM)
                term_sent_at = time.monotonic()
        elif time.monotonic() - term_sent_at > st.kill_delay():
            _killpg(proc.pid, signal.SIGKILL)
    _killpg(proc.pid, signal.SIGKILL)  # the MoM reaps what the script left behind
    if killed_for_walltime:
        return server.EXIT_WALLTIME
    code = proc.returncode
    return 256 - code if code < 0 else code  # killed by signal N: 256 + N, as PBS reports it


def _stage_out(finals: dict[Path, Path]) -> None:
    """PBS copies the spooled output to its destination when the job ends."""
    for spool, final in finals.items():
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(spool, final)
        except OSError as exc:
            print(f"stage out of {spool} to {final} failed: {exc}", file=sys.stderr)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
