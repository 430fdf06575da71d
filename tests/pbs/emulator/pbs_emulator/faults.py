"""Fault injection for client robustness tests. Faults live in the store, so every command sees them.

Kinds:
- ``qstat_transient`` / ``qsub_transient`` / ``qdel_transient``: the next ``count`` calls of that command
  fail as when the server cannot be reached (stderr ``Connection refused`` and
  ``<cmd>: cannot connect to server <server> (errno=15010)``, exit code ``rc``, default 255).
- ``qstat_bad_json``: the next ``count`` ``qstat -F json`` calls print PBS 2022's invalid JSON: strings that
  look numeric are printed bare, and each job's Variable_List carries ``var``=``value`` (default
  ``PBS_EMULATOR_FAULT=0123``) as if it had been submitted with ``-v``, so the output is always invalid.
- ``vanish``: the job ``job_id`` disappears from the server's history, at once (``when="now"``; a running
  job keeps running, unrecorded) or the moment it finishes (``when="finish"``).
"""

from __future__ import annotations

from pathlib import Path

from . import ids
from . import store as st

KINDS = ("qstat_transient", "qsub_transient", "qdel_transient", "qstat_bad_json", "vanish")


def inject(home, kind: str, count: int = 1, **params) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown fault {kind!r}; known: {', '.join(KINDS)}")
    with st.locked(Path(home)) as store:
        if kind == "vanish":
            ref = ids.parse(params["job_id"])
            job = store.jobs.get(str(ref.number)) if ref else None
            if job is None:
                raise KeyError(f"no job {params['job_id']!r} on the emulated server")
            if params.get("when", "finish") == "now" or job["state"] == "F":
                del store.jobs[str(ref.number)]
            else:
                job["vanish_on_finish"] = True
            return
        store.faults[kind] = {"count": count, **params}


def clear(home) -> None:
    with st.locked(Path(home)) as store:
        store.faults.clear()


def take(store: st.Store, kind: str) -> dict | None:
    """Consume one occurrence of a fault; None when it is not armed."""
    fault = store.faults.get(kind)
    if not fault or fault.get("count", 0) <= 0:
        return None
    fault["count"] -= 1
    if fault["count"] <= 0:
        del store.faults[kind]
    return fault


def transient_error(command: str, fault: dict) -> tuple[str, int]:
    message = fault.get("message") or (
        f"Connection refused\n{command}: cannot connect to server {st.server_name()} (errno=15010)\n")
    return message, int(fault.get("rc", 255))
