"""Reading ``qstat -x -f -F json`` and deciding what each job's state means.

PBS Professional prints JSON that is not always valid: an attribute value that looks numeric is printed bare
(``"FOO":005``, ``"X":.5``, ``"Y":1.``), and some escapes (``\\'``, ``\\,``) are not JSON escapes. The
output has one attribute per line, so the repair works line by line: a bare value that is not a valid JSON
literal is quoted, an invalid escape loses its backslash.

Classification (the captured outputs of a real server under ``tests/pbs`` show each case):
``job_state`` Q/H/W/T/M/S/U are queued (H with substate 22 waits on a dependency), R/B/E running, F/X
finished. A finished job is read from its substate (91 deleted, 92 finished, 93 failed), then
``Exit_status`` (0-255 the script's exit code, 256+N killed by signal N, negative: PBS's own codes such as
-29 walltime), then the ``comment``. A job deleted because its ``afterok`` dependency failed also ends
with substate 92, but without ``Exit_status``: it never ran.
"""

from __future__ import annotations

import json
import re
import signal
from datetime import UTC, datetime
from typing import Any

from llmjobs.cluster.backends.base import JobState, JobStatus

PENDING_STATES = frozenset("QHWTMSU")
RUNNING_STATES = frozenset("RBE")
FINISHED_STATES = frozenset("FX")

SUBSTATE_DEPENDENCY_HOLD = 22
SUBSTATE_DELETED = 91
SUBSTATE_FINISHED = 92
SUBSTATE_FAILED = 93

# PBS's JOB_EXEC_* codes: negative Exit_status values set by the server/MoM, not by the script
PBS_EXIT_CODES: dict[int, str] = {
    -1: "job could not start (exec failed before files)",
    -2: "job could not start (exec failed after files)",
    -3: "job could not start; will be retried",
    -4: "aborted at MoM initialization",
    -5: "aborted at MoM initialization (checkpoint, no migration)",
    -6: "aborted at MoM initialization (checkpoint, migration ok)",
    -7: "restart from checkpoint failed",
    -8: "job could not start (hook)",
    -10: "invalid user or group on the execution host",
    -11: "job was rerun",
    -12: "job was checkpointed and killed",
    -13: "password required",
    -14: "requeued: a sister node failed",
    -15: "requeued for restart from checkpoint",
    -16: "hook rejected the job (rerun)",
    -17: "hook rejected the job (deleted)",
    -18: "rerun requested by a hook",
    -19: "deleted by a hook",
    -20: "node failure: lost contact with the head node",
    -21: "security credentials failed",
    -22: "hook error",
    -23: "Kerberos credentials failed",
    -24: "killed: CPU burst over the requested ncpus",
    -25: "killed: CPU use over the requested ncpus",
    -26: "out of memory (vmem over the limit)",
    -27: "out of memory",
    -28: "killed: CPU time over the limit",
    -29: "timeout",
}

_JOB_ID = re.compile(r"^(?P<seq>\d+)(?:\[(?P<index>\d*)\])?(?:\.(?P<server>.+))?$")


# --- job ids ----------------------------------------------------------------------------------------------

def split_job_id(job_id: str) -> tuple[str, str | None, str | None]:
    """``'1234[3].pbs1'`` -> ``('1234', '3', 'pbs1')``; ``'1234[].pbs1'`` -> ``('1234', '', 'pbs1')``."""
    m = _JOB_ID.match(job_id.strip())
    if not m:
        raise ValueError(f"not a PBS job id: {job_id!r}")
    return m.group("seq"), m.group("index"), m.group("server")


def array_parent(job_id: str) -> str | None:
    """The array's id for a subjob id (``1234[3].pbs1`` -> ``1234[].pbs1``), else None."""
    seq, index, server = split_job_id(job_id)
    if not index:
        return None
    return f"{seq}[]" + (f".{server}" if server else "")


def subjob_id(array_id: str, index: int) -> str:
    """``subjob_id('1234[].pbs1', 3)`` -> ``'1234[3].pbs1'`` (the form qstat prints)."""
    return array_id.replace("[]", f"[{index}]", 1)


def query_id(job_id: str) -> str:
    """What to pass to qstat for a job: a subjob is asked through its array (with ``-t``).

    Text that is no PBS id (a placeholder) is returned as it is.
    """
    try:
        return array_parent(job_id) or job_id
    except ValueError:
        return job_id


# --- tolerant JSON ----------------------------------------------------------------------------------------

_ATTR_LINE = re.compile(r'^(?P<head>\s*"(?:[^"\\]|\\.)*"\s*:\s*)(?P<value>[^\s"{\[].*?)(?P<tail>\s*,?\s*)$')
_JSON_NUMBER = re.compile(r"^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$")
_BAD_ESCAPE = re.compile(r'\\([^"\\/bfnrtu])')


def repair_json(text: str) -> str:
    """Make PBS's almost-JSON parseable: quote bare non-JSON values, drop invalid escapes."""
    out = []
    for line in text.splitlines():
        m = _ATTR_LINE.match(line)
        if m:
            value = m.group("value")
            if not (_JSON_NUMBER.match(value) or value in ("true", "false", "null")):
                line = f"{m.group('head')}{json.dumps(value)}{m.group('tail')}"
        out.append(_BAD_ESCAPE.sub(r"\1", line))
    return "\n".join(out)


def loads_qstat(text: str) -> dict[str, Any]:
    """Parse qstat's JSON, repairing it if needed. Raises ``ValueError`` if even the repair fails."""
    try:
        return json.loads(text, strict=False)
    except ValueError:
        return json.loads(repair_json(text), strict=False)


def jobs_from_qstat(text: str) -> dict[str, dict[str, Any]]:
    """``{job_id: attributes}`` from the JSON of ``qstat -f -F json``; no ``Jobs`` key means no jobs."""
    if not text.strip():
        return {}
    data = loads_qstat(text)
    if not isinstance(data, dict):
        raise ValueError("qstat JSON is not an object")  # noqa: TRY004 - callers handle unreadable output
    jobs = data.get("Jobs") or {}
    if not isinstance(jobs, dict):
        raise ValueError("qstat JSON 'Jobs' is not an object")  # noqa: TRY004
    return jobs


_UNKNOWN_ID = re.compile(r"Unknown Job Id (\S+)")
_FINISHED_ID = re.compile(r"qstat: (\S+) Job has finished")


def unknown_ids(stderr: str) -> set[str]:
    """Ids qstat said it does not know (rc 153), as printed."""
    return set(_UNKNOWN_ID.findall(stderr))


# --- classification ---------------------------------------------------------------------------------------

def _int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def parse_time(value: Any) -> datetime | None:
    """PBS times (``'Sun Nov 22 18:43:59 2026'``) or epoch seconds, as an aware UTC datetime.

    qstat formats times with the CLIENT's ``ctime()``, so they are in the local time zone of the machine
    running qstat (``TZ`` honoured): JST on ABCI's login nodes. Read them in that zone, never as UTC.
    """
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, UTC)
    try:
        local = datetime.strptime(str(value).strip(), "%a %b %d %H:%M:%S %Y")
    except ValueError:
        return None
    return local.astimezone(UTC)  # a naive datetime's astimezone() reads it in the local zone


def exec_hosts(attrs: dict[str, Any]) -> str | None:
    """``'hostA/0*8+hostB/0*8'`` -> ``'hostA,hostB'`` (each host once, in order)."""
    raw = attrs.get("exec_host")
    if not raw:
        return None
    hosts: list[str] = []
    for part in str(raw).split("+"):
        host = part.split("/", 1)[0]
        if host and host not in hosts:
            hosts.append(host)
    return ",".join(hosts) or None


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def exit_reason(code: int) -> str:
    if code >= 256:
        return f"killed by {signal_name(code - 256)}"
    if code < 0:
        return PBS_EXIT_CODES.get(code, f"PBS exit code {code}")
    return f"exit code {code}"


def classify(attrs: dict[str, Any]) -> JobStatus:
    """The llmjobs state of one job from its qstat attributes."""
    state = str(attrs.get("job_state", "")).strip()
    substate = _int(attrs.get("substate"))
    exit_status = _int(attrs.get("Exit_status"))
    comment = attrs.get("comment")
    comment = str(comment).strip() if comment is not None else None
    common: dict[str, Any] = {"nodes": exec_hosts(attrs), "started_at": parse_time(attrs.get("stime")),
                              "ended_at": parse_time(attrs.get("obittime"))}

    if state in PENDING_STATES:
        if state == "H" and substate == SUBSTATE_DEPENDENCY_HOLD:
            reason = "waiting for dependency"
        elif state == "H":
            reason = "held"
        else:
            reason = comment
        return JobStatus(JobState.QUEUED, reason=reason, **common)
    if state in RUNNING_STATES:
        return JobStatus(JobState.RUNNING, reason=None, **common)
    if state not in FINISHED_STATES:
        return JobStatus(JobState.LOST, reason=f"unknown PBS job_state {state!r}", **common)

    ended = common["ended_at"] or parse_time(attrs.get("mtime"))
    common["ended_at"] = ended
    if substate == SUBSTATE_DELETED:
        reason = "deleted"
        if comment and "terminated by" in comment:
            reason = "deleted by " + comment.rsplit("terminated by", 1)[1].strip()
        return JobStatus(JobState.CANCELLED, reason=reason, exit_code=exit_status, **common)
    if exit_status is None:
        # finished without ever running: its afterok dependency failed (file 33), or deleted before start
        if attrs.get("depend"):
            return JobStatus(JobState.CANCELLED, reason="dependency failed", **common)
        return JobStatus(JobState.CANCELLED, reason=comment or "finished without running", **common)
    if exit_status == 0 and substate != SUBSTATE_FAILED:
        return JobStatus(JobState.SUCCEEDED, exit_code=0, **common)
    if exit_status == 0:
        return JobStatus(JobState.FAILED, reason=comment or "failed", exit_code=0, **common)
    return JobStatus(JobState.FAILED, reason=exit_reason(exit_status), exit_code=exit_status, **common)
