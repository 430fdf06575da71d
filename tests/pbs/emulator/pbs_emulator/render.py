"""qstat's output formats, laid out like the real outputs captured from OpenPBS 23.06.

Like PBS, every attribute value is a string and the JSON writer decides from the text alone whether to
print it bare (as a number) or quoted. PBS releases before 2023 (PBS Professional 2022 included) printed
bare any string C ``strtod`` reads whole, which yields invalid JSON for values such as ``007``, ``.5`` or
``1.``; ``json_rule="2022"`` reproduces that.
"""

from __future__ import annotations

import json
import re
import time

from . import ids, server
from . import store as st

_JSON_NUMBER = re.compile(r"-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?")
_STRTOD = re.compile(
    r"\s*[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|0[xX][0-9a-fA-F]+(\.[0-9a-fA-F]*)?([pP][+-]?\d+)?"
    r"|inf(inity)?|nan)",
    re.IGNORECASE,
)


def bare(text: str, json_rule: str) -> bool:
    pattern = _STRTOD if json_rule == "2022" else _JSON_NUMBER
    return bool(text) and pattern.fullmatch(text) is not None


def _value(value, depth: int, json_rule: str) -> str:
    if isinstance(value, dict):
        return dump(value, depth, json_rule)
    text = str(value)
    return text if bare(text, json_rule) else json.dumps(text, ensure_ascii=False)


def dump(obj: dict, depth: int = 0, json_rule: str = "2306") -> str:
    pad = "    " * (depth + 1)
    items = [f"{pad}{json.dumps(k)}:{_value(v, depth + 1, json_rule)}" for k, v in obj.items()]
    return "{\n" + ",\n".join(items) + "\n" + "    " * depth + "}"


def json_document(jobs: dict | None, json_rule: str) -> str:
    top = {"timestamp": st.now(), "pbs_version": st.pbs_version(), "pbs_server": st.server_name()}
    if jobs:
        top["Jobs"] = jobs
        return dump(top, 0, json_rule) + "\n"
    return dump(top, 0, json_rule)  # the real qstat ends this short form without a newline


def _ctime(t: int | None) -> str:
    return time.ctime(t)


def _hms(seconds: int) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _resource_list(job: dict) -> dict:
    res = job["resources"]
    values = dict(res["totals"])
    values.update(nodect=res["nodect"], place=res["place"], select=res["select"])
    if res.get("walltime"):
        values["walltime"] = res["walltime"]
    return dict(sorted((k, str(v)) for k, v in values.items()))


def _resources_used(job: dict, unit: dict) -> dict:
    end = unit.get("obittime") or st.now()
    return {
        "cpupercent": "0", "cput": "00:00:00", "mem": "0kb",
        "ncpus": str(job["resources"]["totals"].get("ncpus", 1)), "vmem": "0kb",
        "walltime": _hms(end - unit["stime"]),
    }


def _depend(job: dict) -> str | None:
    server_name = job["server"]
    if job.get("depend") and job.get("depend_shown", True):
        dep = job["depend"]
        return dep["type"] + ":" + ":".join(f"{i}@{server_name}" for i in dep["ids"])
    if job.get("beforeok"):
        return "beforeok:" + ":".join(f"{i}@{server_name}" for i in job["beforeok"])
    return None


def _path(job: dict, key: str, index: str | None) -> str:
    path = job[key]
    if index is not None:
        path = path.replace("^array_index^", index)
    return f"{job['submit_host']}:{path}"


def job_attributes(job: dict, unit: dict, index: str | None, fault_vars: dict | None = None) -> dict:
    """The attributes of ``qstat -f`` for a plain job, an array parent (index "") or a subjob."""
    subjob = index not in (None, "")
    parent = index == ""
    ran = unit.get("stime") is not None and not parent
    finished = unit["state"] == "F"
    # As captured: a running subjob's first report has no resources_used/session_id/jobdir yet.
    show_usage = ran and not (subjob and not finished)
    a: dict = {"Job_Name": job["name"], "Job_Owner": job["owner"]}
    if show_usage:
        a["resources_used"] = _resources_used(job, unit)
    state = _state(job, unit, index)
    a.update(job_state=state, queue=job["queue"], server=job["server"])
    if not subjob:
        a["Checkpoint"] = "u"
    a["ctime"] = _ctime(job["ctime"])
    depend = None if subjob else _depend(job)
    if depend:
        a["depend"] = depend
    a["Error_Path"] = _path(job, "err_path", index if subjob else None)
    if ran and unit.get("exec_host"):
        a.update(exec_host=unit["exec_host"], exec_vnode=unit["exec_vnode"])
    if not subjob:
        a["Hold_Types"] = job["hold_types"]
    a.update(Join_Path=job["join"], Keep_Files="n", Mail_Points="a", mtime=_ctime(unit.get("mtime") or job["mtime"]))
    a["Output_Path"] = _path(job, "out_path", index if subjob else None)
    a.update(Priority="0", qtime=_ctime(job["qtime"]), Rerunable="True", Resource_List=_resource_list(job))
    if unit.get("stime") is not None:
        a["stime"] = _ctime(unit["stime"])
    if finished and unit.get("obittime") is not None:
        a["obittime"] = _ctime(unit["obittime"])
    if show_usage and unit.get("session_id"):
        a["session_id"] = str(unit["session_id"])
    if show_usage:
        a["jobdir"] = job["jobdir"]
    a["substate"] = str(unit["substate"])
    variables = dict(job["variables"])
    if fault_vars:
        variables.update(fault_vars)
    a["Variable_List"] = variables
    if unit.get("comment"):
        a["comment"] = unit["comment"]
    etime = unit.get("etime", job.get("etime"))
    if etime is not None:
        a["etime"] = _ctime(etime)
    if ran:
        a["run_count"] = str(unit.get("run_count", 1))
    if finished and unit.get("exit_status") is not None:
        a.update(Stageout_status=str(unit.get("stageout_status", 1)), Exit_status=str(unit["exit_status"]))
    if not subjob:
        a["Submit_arguments"] = job["submit_args"]
    if parent:
        a.update(
            array="True", array_state_count=_array_state_count(job),
            array_indices_submitted=job["range"],
            array_indices_remaining=ids.format_ranges(
                [i for i in job["indices"] if job["subjobs"][str(i)]["state"] in ("Q", "H")]),
        )
    if subjob:
        a.update(array_id=job["id"], array_index=index)
    if finished and unit.get("history_timestamp") is not None:
        a["history_timestamp"] = str(unit["history_timestamp"])
    a.update(project=job["project"], Submit_Host=job["submit_host"])
    return a


def _array_state_count(job: dict) -> str:
    if job["state"] == "F":
        queued = running = expired = 0  # as captured: a finished parent reports all zeros
    else:
        states = [u["state"] for _, u in server.units(job)]
        queued = sum(s in ("Q", "H") for s in states)
        running = states.count("R")
        expired = states.count("F")
    return f"Queued:{queued} Running:{running} Exiting:0 Expired:{expired}"


# ---- text formats ---------------------------------------------------------------------------------


def _state(job: dict, unit: dict, index: str | None) -> str:
    """A subjob shows H while its parent is held, and X once done while the array still runs."""
    state = unit["state"]
    if index not in (None, ""):
        if state in ("Q", "H") and job["state"] == "H":
            return "H"
        if state == "F" and job["state"] != "F":
            return "X"
    return state


def _display(job: dict, unit: dict, index: str | None) -> tuple[str, str]:
    state = _state(job, unit, index)
    ran = unit.get("stime") is not None and index != ""
    time_use = "00:00:00" if ran and state in ("F", "X") else "0"
    return state, time_use


def default_header() -> str:
    return ("Job id            Name             User              Time Use S Queue\n"
            "----------------  ---------------- ----------------  -------- - -----\n")


def default_row(job_id: str, name: str, user: str, time_use: str, state: str, queue: str) -> str:
    return f"{job_id:<17.17} {name:<16.16} {user:<16.16}  {time_use:>8.8} {state} {queue:<16}\n"


def alt_header(server_name: str) -> str:
    return (f"\n{server_name}: \n" + " " * 60 + "Req'd  Req'd   Elap\n"
            "Job ID          Username Queue    Jobname    SessID NDS TSK Memory Time  S Time\n"
            "--------------- -------- -------- ---------- ------ --- --- ------ ----- - -----\n")


def alt_row(job_id, user, queue, name, sess, nds, tsk, mem, req_time, state, elapsed) -> str:
    return (f"{job_id:<15.15} {user:<8.8} {queue:<8.8} {name:<10.10} {sess:>6.6} {nds:>3.3} {tsk:>3.3} "
            f"{mem:>6.6} {req_time:>5.5} {state} {elapsed:>5.5}\n")


def text_row(job: dict, unit: dict, index: str | None, display_id: str) -> str:
    state, time_use = _display(job, unit, index)
    return default_row(display_id, job["name"], job["user"], time_use, state, job["queue"])


def alt_text_row(job: dict, unit: dict, index: str | None, display_id: str) -> str:
    blank = " -- "
    state, _ = _display(job, unit, index)
    running = state == "R" and unit.get("stime") is not None and index != ""
    sess = str(unit.get("session_id")) if running and unit.get("session_id") else blank
    walltime = job["resources"].get("walltime")
    req_time = walltime.rsplit(":", 1)[0] if walltime else blank
    elapsed = _hms(st.now() - unit["stime"]).rsplit(":", 1)[0] if running else blank
    return alt_row(display_id, job["user"], job["queue"], job["name"], sess, str(job["resources"]["nodect"]),
                   str(job["resources"]["totals"].get("ncpus", 1)), blank, req_time, state, elapsed)


def _prt_attr(name: str, resource: str | None, value: str) -> str:
    """One attribute of ``qstat -f``, wrapped at commas near column 78 as qstat's prt_attr() does."""
    out = [f"    {name}"]
    start = len(name) + 7  # 4 spaces + " = "
    if resource:
        start += len(resource) + 1
        out.append(f".{resource}")
    out.append(" = ")
    tokens = [t for t in value.split(",") if t]
    first = True
    for i, token in enumerate(tokens):
        if len(token) + start < 78:
            out.append(token)
            start += len(token)
        else:
            if not first:
                out.append("\n\t")
                start = 9
            for ch in token:
                out.append(ch)
                start += 1
                if start > 78:
                    start = 8
                    out.append("\n\t")
        if i + 1 < len(tokens):
            first = False
            out.append(",")
    return "".join(out) + "\n"


def full_text(display_id: str, attributes: dict) -> str:
    lines = [f"Job Id: {display_id}\n"]
    for key, value in attributes.items():
        if key == "Variable_List":
            lines.append(_prt_attr(key, None, ",".join(f"{k}={v}" for k, v in value.items())))
        elif isinstance(value, dict):
            lines.extend(_prt_attr(key, k, str(v)) for k, v in value.items())
        else:
            lines.append(_prt_attr(key, None, str(value)))
    return "".join(lines) + "\n"
