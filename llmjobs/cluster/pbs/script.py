"""The qsub script, rendered by one pure function (golden-tested under ``tests/pbs/golden``).

What the script does on the head node, in order:
1. ``#PBS`` directives: ``-N -P -q -l select -l walltime -o -e -J -W depend=afterok:... -v``. There is
   exactly one ``-v`` (a second one, or one on the qsub command line, replaces the first) and never ``-V``
   (it exports shell functions, which break qstat's JSON). Job variables are ``export`` lines in the body
   instead, so they stay out of PBS's ``Variable_List`` where numeric-looking values break qstat's JSON.
2. ``source /etc/profile.d/modules.sh`` (batch shells on ABCI start without ``module``), then the
   profile's setup lines (``module load singularitypro`` ...), then the exports.
3. Sentinels: ``<job id>_pbs_started`` now, ``<job id>_pbs_exit`` from a trap on EXIT/TERM, so a job PBS
   forgot can still be resolved.
4. The hosts of ``$PBS_NODEFILE``, each once (PBS repeats a host per chunk/cpu), then one task per node:
   directly on a single node; through ``mpirun -hostfile``, ``pdsh`` or ``ssh`` on several. Each node runs a
   small node script written next to the logs (the job script itself runs from a spool copy on the head
   node only), which loads the head node's exported environment and sets ``SUBMITIT_PBS_NODE_RANK``.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from submitit.core.utils import JobPaths

from llmjobs.resources import format_walltime, parse_walltime

Launcher = Literal["mpirun", "pdsh", "ssh"]
LAUNCHERS = ("mpirun", "pdsh", "ssh")
MODULES_INIT = "source /etc/profile.d/modules.sh"
DEFAULT_LAUNCHER_ARGS: dict[str, list[str]] = {
    "mpirun": ["-npernode", "1"],  # Open MPI; Intel MPI wants ["-ppn", "1"]
    "pdsh": ["-S"],  # exit with the largest remote exit code
    "ssh": ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"],
}


def _shell_folder(folder: str | Path) -> str:
    """The folder as a double-quoted shell word; submitit's ``%j`` becomes ``${PBS_JOBID}``."""
    text = str(folder)
    text = text.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`").replace("$", "\\$")
    return '"' + text.replace("%j", "${PBS_JOBID}") + '"'


def _export_value(value: str) -> str:
    """Double-quoted, so ``$PBS_LOCALDIR`` and friends expand in the job; quotes and backticks escaped."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`") + '"'


def _variables(variables: dict[str, str]) -> str:
    for key, value in variables.items():
        if "," in str(value) or "=" in key or "," in key:
            raise ValueError(f"-v variable {key}={value!r}: PBS splits -v on commas; set it with env instead")
    return ",".join(f"{k}={v}" for k, v in variables.items())


def select_statement(nodes: int, ncpus: int | None = None, ngpus: int | None = None,
                     mem_gb: float | None = None) -> str:
    parts = [str(nodes)]
    if ncpus:
        parts.append(f"ncpus={ncpus}")
    if ngpus:
        parts.append(f"ngpus={ngpus}")
    if mem_gb:
        parts.append(f"mem={int(mem_gb)}gb" if float(mem_gb).is_integer() else f"mem={int(mem_gb * 1024)}mb")
    return ":".join(parts)


def render_script(
    command: str,
    folder: str | Path,
    uid: str = "submission",
    job_name: str = "submitit",
    project: str | None = None,
    queue: str | None = None,
    nodes: int = 1,
    ncpus: int | None = None,
    ngpus: int | None = None,
    mem_gb: float | None = None,
    walltime: int | str = 60,
    array_size: int | None = None,
    depend: Sequence[str] | None = None,
    variables: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    setup: Sequence[str] | None = None,
    modules_init: str | None = MODULES_INIT,
    launcher: Launcher = "mpirun",
    launcher_args: Sequence[str] | None = None,
    stderr_to_stdout: bool = False,
    additional_directives: Sequence[str] | None = None,
) -> str:
    """The text of a qsub script that runs ``command`` once per node.

    ``walltime`` is minutes (submitit's ``timeout_min``) or ``HH:MM:SS``; ``array_size`` N adds ``-J 0-N-1``;
    ``depend`` lists job ids that must succeed first (``afterok``); ``variables`` go into the single ``-v``.
    """
    if nodes < 1:
        raise ValueError("nodes must be at least 1")
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {', '.join(LAUNCHERS)}, not {launcher!r}")
    if array_size is not None and array_size < 1:
        raise ValueError("array_size must be at least 1")
    variables = dict(variables or {})
    if nodes > 1 and launcher in ("pdsh", "ssh"):
        variables.setdefault("USE_SSH", "1")  # ABCI opens ssh between the job's nodes only when asked
    hours = format_walltime(parse_walltime(walltime))
    log_base = f"{JobPaths.get_first_id_independent_folder(folder)}/pbs_{uid}"
    suffix = ".^array_index^" if array_size and array_size > 1 else ""

    lines = ["#!/bin/bash"]
    directives = [f"-N {job_name[:230]}"]
    if project:
        directives.append(f"-P {project}")
    if queue:
        directives.append(f"-q {queue}")
    directives.append(f"-l select={select_statement(nodes, ncpus, ngpus, mem_gb)}")
    directives.append(f"-l walltime={hours}")
    if stderr_to_stdout:
        directives += ["-j oe", f"-o {log_base}{suffix}.out"]
    else:
        directives += [f"-o {log_base}{suffix}.out", f"-e {log_base}{suffix}.err"]
    if array_size and array_size > 1:
        directives.append(f"-J 0-{array_size - 1}")
    if depend:
        directives.append("-W depend=afterok:" + ":".join(dict.fromkeys(depend)))
    if variables:
        directives.append(f"-v {_variables(variables)}")
    directives += list(additional_directives or [])
    lines += [f"#PBS {d}" for d in directives]

    if modules_init:
        lines += ["", modules_init]
    if setup:
        lines += ["", "# setup", *setup]
    if env:
        lines += ["", "# environment", *(f"export {k}={_export_value(v)}" for k, v in env.items())]

    dirs = _shell_folder(folder)
    err_redirect = "2>&1" if stderr_to_stdout else \
        '2>> "$SUBMITIT_PBS_FOLDER/${PBS_JOBID}_${SUBMITIT_PBS_NODE_RANK}_log.err"'
    out_redirect = '>> "$SUBMITIT_PBS_FOLDER/${PBS_JOBID}_${SUBMITIT_PBS_NODE_RANK}_log.out"'
    lines += [
        "",
        "# sentinels: start time and host now, exit code at the end, even when killed with TERM",
        f"export SUBMITIT_PBS_FOLDER={dirs}",
        'mkdir -p "$SUBMITIT_PBS_FOLDER"',
        'echo "$(date +%s) $(hostname)" > "$SUBMITIT_PBS_FOLDER/${PBS_JOBID}_pbs_started"',
        "_pbs_child=",
        """trap '_pbs_rc=$?; echo "$_pbs_rc" > "$SUBMITIT_PBS_FOLDER/${PBS_JOBID}_pbs_exit"' EXIT""",
        """trap '[ -n "$_pbs_child" ] && kill -TERM "$_pbs_child" 2>/dev/null; exit 143' TERM""",
        "",
        "# hosts of the job, each once ($PBS_NODEFILE repeats them)",
        'if [ -r "${PBS_NODEFILE:-}" ]; then',
        '    export SUBMITIT_PBS_HOSTS="$(awk \'!seen[$0]++\' "$PBS_NODEFILE" | paste -sd, -)"',
        "else",
        '    export SUBMITIT_PBS_HOSTS="$(hostname)"',
        "fi",
        f"export SUBMITIT_PBS_NUM_NODES={nodes}",
        "export SUBMITIT_EXECUTOR=pbs",
        "",
        "# command",
    ]
    if nodes == 1:
        lines += [
            "export SUBMITIT_PBS_NODE_RANK=0",
            f"{command} {out_redirect} {err_redirect} &",
        ]
    else:
        args = list(DEFAULT_LAUNCHER_ARGS[launcher] if launcher_args is None else launcher_args)
        node_lines = [
            "#!/bin/bash",
            '_me="$(hostname)"  # before the head node\'s environment (PATH included) is loaded',
            '. "${0%_pbs_node.sh}_pbs_env.sh" 2>/dev/null',
            'if [ -n "${1:-}" ]; then _rank="$1"',
            ('elif [ -n "${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-${PMIX_RANK:-}}}" ]; then '
             '_rank="${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-${PMIX_RANK}}}"'),
            "else",
            '    _rank=0; _i=0',
            '    for _h in ${SUBMITIT_PBS_HOSTS//,/ }; do',
            '        [ "${_h%%.*}" = "${_me%%.*}" ] && _rank=$_i; _i=$((_i + 1))',
            "    done",
            "fi",
            "export SUBMITIT_PBS_NODE_RANK=$_rank",
            f"exec {command} {out_redirect} {err_redirect}",
        ]
        lines += [
            '_pbs_hosts="$SUBMITIT_PBS_FOLDER/${PBS_JOBID}_pbs_hosts"',
            'tr , \'\\n\' <<< "$SUBMITIT_PBS_HOSTS" > "$_pbs_hosts"',
            "# the environment every node starts from (ssh/pdsh/mpirun do not carry it)",
            ("export -p | grep -v -E '^declare -x (HOSTNAME|PWD|OLDPWD|SHLVL|_)=' "
             '> "$SUBMITIT_PBS_FOLDER/${PBS_JOBID}_pbs_env.sh"'),
            "cat > \"$SUBMITIT_PBS_FOLDER/${PBS_JOBID}_pbs_node.sh\" <<'LLMJOBS_PBS_NODE'",
            *node_lines,
            "LLMJOBS_PBS_NODE",
            '_pbs_node="$SUBMITIT_PBS_FOLDER/${PBS_JOBID}_pbs_node.sh"',
        ]
        extra = shlex.join(args) + " " if args else ""
        if launcher == "mpirun":
            lines.append(f'mpirun -np {nodes} -hostfile "$_pbs_hosts" {extra}bash "$_pbs_node" &')
        elif launcher == "pdsh":
            lines.append(f'pdsh {extra}-w "$SUBMITIT_PBS_HOSTS" bash "$_pbs_node" &')
        else:
            lines += [
                "(",
                "    _pbs_i=0; _pbs_pids=()",
                '    for _pbs_host in ${SUBMITIT_PBS_HOSTS//,/ }; do',
                f'        ssh {extra}"$_pbs_host" bash "$_pbs_node" "$_pbs_i" &',
                "        _pbs_pids+=($!); _pbs_i=$((_pbs_i + 1))",
                "    done",
                "    _pbs_rc=0",
                '    for _pbs_pid in "${_pbs_pids[@]}"; do wait "$_pbs_pid" || _pbs_rc=$?; done',
                "    exit $_pbs_rc",
                ") &",
            ]
    lines += [
        "_pbs_child=$!",
        'wait "$_pbs_child"',
        "exit $?",
        "",
    ]
    return "\n".join(lines)
