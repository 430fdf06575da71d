"""The ``qsub``, ``qstat`` and ``qdel`` commands of the emulated PBS server."""

from __future__ import annotations

import getopt
import getpass
import os
import re
import shlex
import sys
from pathlib import Path

from . import faults, ids, render, server
from . import store as st

QSUB_OPTS = "a:A:c:C:e:fhIj:J:k:l:m:M:N:o:p:P:q:r:R:S:u:v:VW:Xz"
QSUB_USAGE = (
    "usage: qsub [-a date_time] [-A account_string] [-c interval]\n"
    "\t[-C directive_prefix] [-e path] [-f ] [-h ] [-I [-X]] [-j o|e|n] [-J X-Y[:Z]]\n"
    "\t[-k keep] [-l resource_list] [-m mail_options] [-M user_list]\n"
    "\t[-N jobname] [-o path] [-p priority] [-P project] [-q queue] [-r y|n]\n"
    "\t[-R o|e|oe] [-S path] [-u user_list] [-W otherattributes=value...]\n"
    "\t[-v variable_list] [-V ] [-z] [script | -- command [arg1 ...]]\n"
    "       qsub --version\n"
)
QDEL_USAGE = "usage:\n\tqdel [-W force|suppress_email=X] [-x] job_identifier...\n\tqdel --version\n"
DEFAULT_PROJECT = "_pbs_project_default"
_ARRAY_RANGE = re.compile(r"^(\d+)-(\d+)(?::(\d+))?$")
_WALLTIME = re.compile(r"^(?:(?:(\d+):)?(\d+):)?(\d+)$")


class QsubError(Exception):
    def __init__(self, message: str, rc: int):
        super().__init__(message)
        self.message, self.rc = message, rc


def _user() -> str:
    return os.environ.get("USER") or getpass.getuser()


def _split_variables(text: str) -> list[str]:
    """``A=1,B='x,y'`` -> ``["A=1", "B=x,y"]``: commas inside quotes or after a backslash do not split."""
    items, current, quote, escape = [], "", None, False
    for ch in text:
        if escape:
            current, escape = current + ch, False
        elif ch == "\\":
            escape = True
        elif quote:
            if ch == quote:
                quote = None
            else:
                current += ch
        elif ch in "'\"":
            quote = ch
        elif ch == ",":
            items.append(current)
            current = ""
        else:
            current += ch
    items.append(current)
    return [i for i in items if i]


def _parse_walltime(text: str) -> str:
    match = _WALLTIME.match(text)
    if not match:
        raise QsubError("qsub: Illegal attribute or resource value Resource_List.walltime\n", 2)
    h, m, s = (int(x or 0) for x in match.groups())
    total = h * 3600 + m * 60 + s
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


def _directives(script_text: str) -> list[str]:
    """Options from ``#PBS`` lines, read up to the first executable line as qsub does."""
    args: list[str] = []
    for line in script_text.splitlines():
        stripped = line.strip()
        if not stripped or (stripped.startswith("#") and not stripped.startswith("#PBS")):
            continue
        if not stripped.startswith("#PBS"):
            break
        args.extend(shlex.split(stripped[4:], comments=True))
    return args


def _collect(options: list[tuple[str, str]], into: dict) -> None:
    for flag, value in options:
        if flag == "-l":
            for item in value.split(","):
                key, _, val = item.partition("=")
                into.setdefault("-l", {})[key.strip()] = val.strip()
        elif flag == "-W":
            for item in value.split(","):
                key, _, val = item.partition("=")
                into.setdefault("-W", {})[key.strip()] = val.strip()
        else:
            into[flag] = value


def _resources(lopts: dict) -> dict:
    select = lopts.get("select")
    place = lopts.get("place")
    if select:
        first, *rest = select.split(":")
        if not first.isdigit():
            first, rest = "1", select.split(":")
        chunk = {}
        for part in rest:
            key, _, val = part.partition("=")
            chunk[key] = val
        nodect = int(first)
        place = place or "free"
    else:
        chunk, nodect, select = {"ncpus": lopts.get("ncpus", "1")}, 1, f"1:ncpus={lopts.get('ncpus', '1')}"
        place = place or "pack"
    chunk.setdefault("ncpus", "1")
    totals = {}
    for key in ("ncpus", "ngpus"):
        if key in chunk:
            totals[key] = int(chunk[key]) * nodect
    for key, val in lopts.items():
        if key not in ("select", "place", "walltime", "ncpus"):
            totals[key] = val
    return {
        "select": select, "place": place, "nodect": nodect, "chunk": chunk, "totals": totals,
        "walltime": _parse_walltime(lopts["walltime"]) if "walltime" in lopts else None,
    }


def _output_path(value: str | None, workdir: str, default_name: str) -> str:
    if not value:
        return str(Path(workdir) / default_name)
    if ":" in value and not value.startswith("/"):
        value = value.split(":", 1)[1]
    path = Path(value) if os.path.isabs(value) else Path(workdir) / value
    if value.endswith("/") or path.is_dir():
        path = path / default_name
    return str(path)


def _transient(command: str, json_header: bool = False) -> int | None:
    with st.locked() as store:
        down = server.is_down(store)
        fault = {} if down else faults.take(store, f"{command}_transient")
    if fault is None:
        return None
    message, rc = faults.transient_error(command, fault)
    if json_header:
        sys.stdout.write(render.json_document(None, "2306"))
    sys.stderr.write(message)
    return rc


def qsub_main(argv: list[str]) -> int:
    rc = _transient("qsub")
    if rc is not None:
        return rc
    try:
        return _qsub(argv)
    except QsubError as err:
        sys.stderr.write(err.message)
        return err.rc


def _qsub(argv: list[str]) -> int:
    try:
        cmd_opts, rest = getopt.getopt(argv, QSUB_OPTS)
    except getopt.GetoptError as err:
        raise QsubError(f"qsub: {err.msg}\n{QSUB_USAGE}", 2) from None
    if any(flag == "-I" for flag, _ in cmd_opts):
        raise QsubError("qsub: interactive jobs (-I) are not emulated\n", 2)
    if rest and rest[0] == "--":
        script_name, script_text = "STDIN", shlex.join(rest[1:]) + "\n"
    elif rest:
        if len(rest) > 1:
            raise QsubError(QSUB_USAGE, 2)
        script_name = rest[0]
        try:
            script_text = Path(script_name).read_text()
        except OSError:
            raise QsubError("qsub: script file:: No such file or directory\n", 1) from None
    else:
        script_name, script_text = "STDIN", sys.stdin.read()

    merged: dict = {}
    try:
        directive_opts, _ = getopt.getopt(_directives(script_text), QSUB_OPTS)
    except getopt.GetoptError as err:
        raise QsubError(f"qsub: directive error: {err.msg}\n", 2) from None
    _collect(directive_opts, merged)
    cmd_merged: dict = {}
    _collect(cmd_opts, cmd_merged)
    # Command-line options win; a command-line -v replaces the script's -v instead of adding to it.
    merged.setdefault("-l", {}).update(cmd_merged.pop("-l", {}))
    merged.setdefault("-W", {}).update(cmd_merged.pop("-W", {}))
    merged.update(cmd_merged)
    export_all = "-V" in merged

    indices, array_range = None, None
    if "-J" in merged:
        match = _ARRAY_RANGE.match(merged["-J"])
        if not match or int(match.group(1)) >= int(match.group(2)) or (match.group(3) and int(match.group(3)) < 1):
            raise QsubError(f"qsub: illegal -J value\n{QSUB_USAGE}", 2)
        start, end, step = int(match.group(1)), int(match.group(2)), int(match.group(3) or 1)
        indices = list(range(start, end + 1, step))
        array_range = merged["-J"]
        limit = int(os.environ.get("PBS_EMULATOR_MAX_ARRAY_SIZE", "10000"))
        if len(indices) > limit:
            raise QsubError("qsub: Array job exceeds server or queue size limit\n", 2)

    project = merged.get("-P")
    if os.environ.get("PBS_EMULATOR_REQUIRE_PROJECT") == "1" and not project:
        raise QsubError("qsub: Request rejected by filter hook: a group must be given with -P\n", 1)
    queue = merged.get("-q", os.environ.get("PBS_EMULATOR_DEFAULT_QUEUE", "workq"))
    known_queues = [q for q in os.environ.get("PBS_EMULATOR_QUEUES", "").split(",") if q]
    if known_queues and queue not in known_queues and not re.match(r"^R\d+$", queue):
        raise QsubError("qsub: Unknown queue\n", 170)
    resources = _resources(merged.get("-l", {}))

    server_name = st.server_name()
    user, host = _user(), st.submit_host()
    workdir = os.getcwd()
    env = os.environ
    variables = {}
    for name, source in (("PBS_O_HOME", "HOME"), ("PBS_O_LANG", "LANG"), ("PBS_O_LOGNAME", "LOGNAME"),
                         ("PBS_O_PATH", "PATH"), ("PBS_O_MAIL", "MAIL"), ("PBS_O_SHELL", "SHELL")):
        if source in env:
            variables[name] = env[source]
    variables.update(PBS_O_WORKDIR=workdir, PBS_O_SYSTEM="Linux", PBS_O_QUEUE=queue, PBS_O_HOST=host)
    job_env = {}
    if export_all:
        job_env.update({k: v for k, v in env.items() if not k.startswith("PBS_")})
    for item in _split_variables(merged.get("-v", "")):
        key, eq, val = item.partition("=")
        if not eq and key not in env:
            raise QsubError("qsub: cannot send environment with the job\n", 1)
        job_env[key] = val if eq else env[key]
    variables.update(job_env)

    depend = None
    with st.locked() as store:
        spec = merged.get("-W", {}).get("depend")
        if spec:
            kind, _, id_text = spec.partition(":")
            if kind not in ("afterok", "afterany", "afternotok") or not id_text:
                raise QsubError("qsub: illegal -W value\n", 2)
            dep_ids = []
            for raw in id_text.split(":"):
                ref = ids.parse(raw)
                job_ref, _ = server.find(store, ref.number, ref.index) if ref else (None, None)
                if job_ref is None or (ref.server and ref.server != server_name):
                    shown = ref.canonical(server_name) if ref else raw
                    raise QsubError(f"qsub: Unknown Job Id {shown}\n", 153)
                dep_ids.append(ref.canonical(server_name))
            depend = {"type": kind, "ids": dep_ids}

        number = store.next_number()
        suffix = "[]" if indices is not None else ""
        job_id = f"{number}{suffix}.{server_name}"
        name = merged.get("-N") or Path(script_name).name
        array_tail = ".^array_index^" if indices is not None else ""
        spool_script = store.spool() / f"{number}.{server_name}.SC"
        spool_script.write_text(script_text)
        now = st.now()
        held = depend is not None
        job = {
            "num": number, "id": job_id, "server": server_name, "is_array": indices is not None,
            "name": name, "user": user, "owner": f"{user}@{host}", "submit_host": host,
            "queue": queue, "project": project or DEFAULT_PROJECT, "submit_args": " ".join(argv),
            "workdir": workdir, "jobdir": os.path.expanduser("~"), "script": str(spool_script),
            "shell": merged.get("-S", "/bin/bash"),
            "out_path": _output_path(merged.get("-o"), workdir, f"{name}.o{number}{array_tail}"),
            "err_path": _output_path(merged.get("-e"), workdir, f"{name}.e{number}{array_tail}"),
            "join": merged.get("-j", "n"), "resources": resources, "variables": variables,
            "job_env": job_env,
            "base_env": {k: env[k] for k in ("HOME", "USER", "LOGNAME", "SHELL", "LANG", "PATH", "TZ") if k in env},
            "depend": depend, "beforeok": [], "hold_types": "s" if held else "n",
            "ctime": now, "qtime": now, "mtime": now, "etime": None if held else now,
            "state": "H" if held else "Q", "substate": server.SUB_HELD_DEP if held else server.SUB_QUEUED,
        }
        if indices is not None:
            job.update(indices=indices, range=array_range, array_exit_rule=st.array_exit_rule(),
                       subjobs={str(i): {"state": job["state"], "substate": job["substate"]} for i in indices})
        if depend and depend["type"] == "afterok":
            for dep_id in depend["ids"]:
                upstream = store.jobs[dep_id.split(".")[0].split("[")[0]]
                upstream.setdefault("beforeok", []).append(job_id)
        store.jobs[str(number)] = job
        server.schedule(store)
    print(job_id)
    return 0


def _targets(store: st.Store, args: list[str], history: bool, subjobs: bool, command: str):
    """(display id, job, unit, index) for each job to show, plus error lines and the exit code."""
    server_name = st.server_name()
    out, errors, rc = [], [], 0

    def add(job, unit, index):
        display = f"{job['num']}" + ("" if index is None else f"[{index}]") + f".{job['server']}"
        out.append((display, job, unit, index))
        if subjobs and index == "":
            for key, sub in server.units(job):
                out.append((f"{key}.{job['server']}", job, sub, key.split("[")[1][:-1]))

    if not args:
        for num in sorted(store.jobs, key=int):
            job = store.jobs[num]
            if job["state"] == "F" and not history:
                continue
            add(job, job, "" if job.get("is_array") else None)
        return out, errors, rc
    for arg in args:
        ref = ids.parse(arg)
        if ref is None:
            errors.append(f"{command}: Unknown queue destination {arg}\n")
            rc = 170
            continue
        canonical = ref.canonical(server_name)
        job, unit = server.find(store, ref.number, ref.index)
        if job is None or (ref.server and ref.server != server_name):
            errors.append(f"{command}: Unknown Job Id {canonical}\n")
            rc = 153
            continue
        if unit["state"] == "F" and not history and not (unit is not job and job["state"] != "F"):
            errors.append(f"{command}: {canonical} Job has finished, use -x or -H to obtain historical job "
                          "information\n")
            rc = 35
            continue
        add(job, unit, ref.index)
    return out, errors, rc


def qstat_main(argv: list[str]) -> int:
    try:
        opts, args = getopt.gnu_getopt(argv, "fF:xtaHJwn1su:p")
    except getopt.GetoptError as err:
        sys.stderr.write(f"qstat: {err.msg}\n")
        return 2
    flags = {flag: value for flag, value in opts}
    as_json = flags.get("-F", "").lower() == "json"
    full = "-f" in flags
    rc = _transient("qstat", json_header=as_json)
    if rc is not None:
        return rc
    history = "-x" in flags or "-H" in flags
    with st.locked() as store:
        server.schedule(store)
        bad = faults.take(store, "qstat_bad_json") if as_json else None
        targets, errors, rc = _targets(store, args, history, "-t" in flags or "-J" in flags, "qstat")
        json_rule = "2022" if bad or os.environ.get("PBS_EMULATOR_JSON_RULE") == "2022" else "2306"
        fault_vars = {bad.get("var", "PBS_EMULATOR_FAULT"): bad.get("value", "0123")} if bad else None
        if full:
            attributes = {d: render.job_attributes(j, u, i, fault_vars) for d, j, u, i in targets}
            text = (render.json_document(attributes, json_rule) if as_json
                    else "".join(render.full_text(d, a) for d, a in attributes.items()))
        elif "-a" in flags:
            rows = "".join(render.alt_text_row(j, u, i, d) for d, j, u, i in targets)
            text = render.alt_header(st.server_name()) + rows if rows else ""
        else:
            rows = "".join(render.text_row(j, u, i, d) for d, j, u, i in targets)
            text = render.default_header() + rows if rows else ""
    sys.stderr.write("".join(errors))
    sys.stdout.write(text)
    return rc


def qdel_main(argv: list[str]) -> int:
    try:
        opts, args = getopt.gnu_getopt(argv, "W:x")
    except getopt.GetoptError as err:
        sys.stderr.write(f"qdel: {err.msg}\n{QDEL_USAGE}")
        return 2
    if not args:
        sys.stderr.write(QDEL_USAGE)
        return 2
    purge = any(flag == "-x" for flag, _ in opts)
    rc = _transient("qdel")
    if rc is not None:
        return rc
    who = f"{_user()}@{st.submit_host()}"
    server_name = st.server_name()
    errors = []
    with st.locked() as store:
        if server.crashes_on_delete(args):
            # OpenPBS 23.06 dies in this request (a double free); the client gets no reply, says nothing
            # and exits 0. Nothing of the request is done; the jobs' processes keep running.
            server.crash(store, f"qdel {' '.join(args)}")
            return 0
        for arg in args:
            ref = ids.parse(arg)
            if ref is None:
                errors.append(f"qdel: illegally formed job identifier: {arg}\n")
                rc = 1
                continue
            canonical = ref.canonical(server_name)
            job, unit = server.find(store, ref.number, ref.index)
            if job is None or (ref.server and ref.server != server_name):
                errors.append(f"qdel: Unknown Job Id {canonical}\n")
                rc = 153
                continue
            if unit["state"] == "F":
                if purge and unit is job:
                    del store.jobs[str(job["num"])]
                    continue
                errors.append(f"qdel: Job has finished {canonical}\n")
                rc = 35
                continue
            server.delete(store, job, unit, who)
        server.schedule(store)
    sys.stderr.write("".join(errors))
    return rc or 0
