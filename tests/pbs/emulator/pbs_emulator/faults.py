"""Fault injection for client robustness tests. Faults live in the store, so every command sees them.

Kinds:
- ``qstat_transient`` / ``qsub_transient`` / ``qdel_transient``: the next ``count`` calls of that command
  fail as when the server cannot be reached (stderr ``Connection refused`` and
  ``<cmd>: cannot connect to server <server> (errno=15010)``; exit code 255 for qstat, 162 for qsub/qdel;
  ``rc=`` and ``message=`` override them).
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
    """stderr and exit code of a command that cannot reach the server, as OpenPBS's sources print them:
    qstat exits with the failed connection handle (-1, so 255); qsub and qdel exit with pbs_errno
    15010, which the shell sees as 15010 & 0xff = 162."""
    server_name = st.server_name()
    if command == "qdel":
        default = f"Connection refused\nCouldn't connect to cluster: {server_name}\n", 162
    else:
        default = (f"Connection refused\n{command}: cannot connect to server {server_name} (errno=15010)\n",
                   255 if command == "qstat" else 162)
    return fault.get("message") or default[0], int(fault.get("rc", default[1]))
