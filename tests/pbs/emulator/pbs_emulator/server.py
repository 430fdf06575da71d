"""What the PBS server and scheduler do between commands: hold and release dependent jobs, start queued
jobs FIFO within the slot cap, record the end of a job, delete jobs.

All functions take an open :class:`Store` (the caller holds the lock).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import ids
from . import store as st

NOT_RUNNING = "Not Running: Not enough free nodes available"

# Substates shown by the captured real outputs.
SUB_QUEUED, SUB_HELD_DEP, SUB_RUNNING, SUB_SUBJOB_RUNNING, SUB_ARRAY_BEGUN = 10, 22, 42, 41, 70
SUB_DELETED, SUB_FINISHED, SUB_FAILED = 91, 92, 93
# PBS's JOB_EXEC_KILL_WALLTIME: the Exit_status of a job killed for exceeding its walltime.
EXIT_WALLTIME = -29
# JOB_EXEC_FAIL1: the job could not be started.
EXIT_FAIL1 = -1


def day_stamp(t: int) -> str:
    return time.strftime("%a %b %d at %H:%M", time.localtime(t))


def units(job: dict) -> list[tuple[str, dict]]:
    """The runnable pieces of a job: itself, or its subjobs in index order."""
    if not job.get("is_array"):
        return [(str(job["num"]), job)]
    return [(f"{job['num']}[{i}]", job["subjobs"][str(i)]) for i in job["indices"]]


def find(store: st.Store, number: int, index: str | None):
    """(job, unit) for a reference; unit is the job itself for plain ids and array parents."""
    job = store.jobs.get(str(number))
    if job is None:
        return None, None
    if index is None:
        return (job, job) if not job.get("is_array") else (None, None)
    if not job.get("is_array"):
        return None, None
    if index == "":
        return job, job
    unit = job["subjobs"].get(index)
    return (job, unit) if unit is not None else (None, None)


def succeeded(job: dict) -> bool:
    return job.get("state") == "F" and job.get("substate") == SUB_FINISHED and job.get("exit_status") == 0


def _dep_job(store: st.Store, job_id: str) -> dict | None:
    number = job_id.split(".")[0].split("[")[0]
    return store.jobs.get(number)


def _detach_dependent(store: st.Store, job: dict) -> None:
    for dep_id in (job.get("depend") or {}).get("ids", []):
        upstream = _dep_job(store, dep_id)
        if upstream and job["id"] in upstream.get("beforeok", []):
            upstream["beforeok"].remove(job["id"])


def _resolve_dependencies(store: st.Store) -> bool:
    changed = False
    for job in store.jobs.values():
        if job["state"] != "H" or job["substate"] != SUB_HELD_DEP:
            continue
        kind, ids = job["depend"]["type"], job["depend"]["ids"]
        verdicts = []
        for dep_id in ids:
            upstream = _dep_job(store, dep_id)
            if upstream is None or upstream["state"] != "F":
                verdicts.append(None)
            elif kind == "afterany":
                verdicts.append(True)
            elif kind == "afternotok":
                verdicts.append(not succeeded(upstream))
            else:
                verdicts.append(succeeded(upstream))
        now = st.now()
        if False in verdicts:
            # As file 33 shows: deleted at once, state F, substate 92, no Exit_status, no comment.
            job.update(state="F", substate=SUB_FINISHED, history_timestamp=now)
            for _, unit in units(job) if job.get("is_array") else []:
                unit.update(state="F", substate=SUB_FINISHED, history_timestamp=now)
            _detach_dependent(store, job)
            changed = True
        elif all(v is True for v in verdicts):
            job.update(state="Q", substate=SUB_QUEUED, hold_types="n", etime=now, mtime=now,
                       depend_shown=False)
            for _, unit in units(job) if job.get("is_array") else []:
                unit.update(state="Q", substate=SUB_QUEUED, etime=now)
            changed = True
    return changed


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _spawn_runner(store: st.Store, key: str) -> int:
    package_root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [package_root, env.get("PYTHONPATH", "")] if p)
    env["PBS_EMULATOR_HOME"] = str(store.home)
    with open(store.home / "runner.log", "a") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pbs_emulator.runner", str(store.home), key],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, close_fds=True, env=env,
        )
    return proc.pid


def _exec_strings(job: dict, slot: int) -> tuple[str, str]:
    node, res = st.node_name(), job["resources"]
    chunk = res["chunk"]
    hosts, vnodes = [], []
    for _ in range(res["nodect"]):
        ncpus = int(chunk.get("ncpus", 1))
        hosts.append(f"{node}/{slot}" + (f"*{ncpus}" if ncpus > 1 else ""))
        extra = "".join(f":{k}={v}" for k, v in chunk.items() if k != "ncpus")
        vnodes.append(f"({node}:ncpus={ncpus}{extra})")
    return "+".join(hosts), "+".join(vnodes)


def _start(store: st.Store, job: dict, key: str, unit: dict, slot: int) -> None:
    now = st.now()
    exec_host, exec_vnode = _exec_strings(job, slot)
    subjob = unit is not job
    unit.update(
        state="R", substate=SUB_SUBJOB_RUNNING if subjob else SUB_RUNNING, stime=now, mtime=now,
        exec_host=exec_host, exec_vnode=exec_vnode, slot=slot, run_count=unit.get("run_count", 0) + 1,
        comment=f"Job run at {day_stamp(now)} on {exec_vnode}", session_id=None, deleting=None,
    )
    if subjob and job["state"] == "Q":
        job.update(state="B", substate=SUB_ARRAY_BEGUN, stime=now, mtime=now,
                   comment=f"Job Array Began at {day_stamp(now)}")
    unit["runner_pid"] = _spawn_runner(store, key)


def crashes_on_delete(args: list[str]) -> bool:
    """The qdel that crashes a stock OpenPBS 23.06 server: two or more subjobs of one array plus any other
    job in one request (a double free in the server's delete path, fixed in no release)."""
    refs = [ids.parse(a) for a in args]
    per_array: dict[int, int] = {}
    for ref in refs:
        if ref is not None and ref.index:
            per_array[ref.number] = per_array.get(ref.number, 0) + 1
    return any(count >= 2 and len(args) > count for count in per_array.values())


def crash(store: st.Store, request: str) -> None:
    """The server process is gone: every command fails to connect until :func:`restart`. Running jobs keep
    running (their MoM does not need the server) and their ends are recorded as the MoM reports them."""
    store.data["down"] = {"since": st.now(), "request": request}
    with open(store.home / "server.log", "a") as log:
        log.write(f"{time.ctime()} pbs_server crashed (double free) in: {request}\n")


def is_down(store: st.Store) -> bool:
    return bool(store.data.get("down"))


def schedule(store: st.Store) -> None:
    if is_down(store):
        return  # no server, no scheduling
    while _resolve_dependencies(store):
        pass
    running = [u for job in store.jobs.values() for _, u in units(job) if u["state"] == "R"]
    free = [s for s in range(st.slots()) if s not in {u.get("slot") for u in running}]
    for num in sorted(store.jobs, key=int):
        job = store.jobs[num]
        if job["state"] not in ("Q", "B"):
            continue
        for key, unit in units(job):
            if unit["state"] != "Q":
                continue
            if not free:
                if unit is job or job["state"] == "Q":
                    job["comment"] = NOT_RUNNING
                break
            _start(store, job, key, unit, free.pop(0))


def _array_code(exit_status: int) -> int:
    """A subjob's exit status as an array's: 0 ok, 1 non-zero, 2 a PBS error (negative)."""
    return 2 if exit_status < 0 else (1 if exit_status else 0)


def _array_exit(job: dict) -> int:
    if job.get("array_exit_rule", "last") == "last":
        # OpenPBS 23.06 overwrites the array's exit status subjob by subjob: the last subjob to end decides,
        # so an array whose failed subjob ended first still "succeeds" and releases its afterok dependents
        return job.get("last_subjob_exit", 0)
    # PBS documents an array's exit status as 0 (all subjobs 0), 1 (some subjob non-zero), 2 (PBS error);
    # deleted subjobs do not count.
    codes = [u.get("exit_status") for _, u in units(job) if u.get("substate") != SUB_DELETED]
    codes = [c for c in codes if c is not None]
    if any(c < 0 for c in codes):
        return 2
    return 1 if any(c != 0 for c in codes) else 0


def _finish_array_if_done(store: st.Store, job: dict) -> None:
    if any(u["state"] != "F" for _, u in units(job)):
        return
    now = st.now()
    began = job.get("comment") or ""
    if job.get("deleting"):
        job.update(substate=SUB_DELETED, comment=f"{began} and terminated")
    else:
        code = _array_exit(job)
        job.update(exit_status=code, substate=SUB_FINISHED if code == 0 else SUB_FAILED,
                   comment=f"{began} and {'finished' if code == 0 else 'failed'}",
                   stageout_status=1)
    job.update(state="F", obittime=now, history_timestamp=now, mtime=now)
    if job.get("vanish_on_finish"):
        del store.jobs[str(job["num"])]


def finish(store: st.Store, job: dict, unit: dict, exit_status: int) -> None:
    """Record the end of a job or subjob (called by its runner)."""
    now = st.now()
    base = unit.get("comment") or ""
    if unit.get("deleting"):
        unit.update(substate=SUB_DELETED, comment=f"{base} and terminated by {unit['deleting']}")
    elif exit_status == 0:
        unit.update(substate=SUB_FINISHED, comment=f"{base} and finished")
    else:
        unit.update(substate=SUB_FAILED, comment=f"{base} and failed")
    unit.update(state="F", exit_status=exit_status, obittime=now, history_timestamp=now, mtime=now,
                stageout_status=1, runner_pid=None)
    if unit is not job:
        job["last_subjob_exit"] = _array_code(exit_status)
        _finish_array_if_done(store, job)
    elif job.get("vanish_on_finish"):
        del store.jobs[str(job["num"])]


def _signal_unit(unit: dict, sig: int) -> None:
    if unit.get("session_id"):
        try:
            os.killpg(unit["session_id"], sig)
        except ProcessLookupError:
            pass


def _drop_unstarted(unit: dict, now: int) -> None:
    unit.update(state="F", substate=SUB_DELETED, history_timestamp=now, mtime=now)
    if unit.get("comment"):
        unit["comment"] += " and terminated"


def delete(store: st.Store, job: dict, unit: dict, who: str) -> None:
    """qdel: a running job gets SIGTERM (its runner records the end); a waiting one ends at once."""
    now = st.now()
    targets = units(job) if (unit is job and job.get("is_array")) else [(None, unit)]
    if unit is job:
        job["deleting"] = who
    for _, target in targets:
        if target["state"] == "R":
            target["deleting"] = who
            _signal_unit(target, signal.SIGTERM)
        elif target["state"] in ("Q", "H"):
            _drop_unstarted(target, now)
    if job.get("is_array"):
        if unit is job and job["state"] in ("Q", "H"):
            _drop_unstarted(job, now)
            _detach_dependent(store, job)
        else:
            _finish_array_if_done(store, job)
    elif unit["state"] == "F":
        _detach_dependent(store, job)
