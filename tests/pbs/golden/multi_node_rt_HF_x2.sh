#!/bin/bash
#PBS -N demo-0a1b2c.train
#PBS -P gaa00000
#PBS -q rt_HF
#PBS -l select=2
#PBS -l walltime=24:00:00
#PBS -o /groups/gaa00000/llmjobs/runs/demo-0a1b2c/logs/train/submit-1/pbs_0123456789abcdef.out
#PBS -e /groups/gaa00000/llmjobs/runs/demo-0a1b2c/logs/train/submit-1/pbs_0123456789abcdef.err

source /etc/profile.d/modules.sh

# setup
module load singularitypro

# environment
export SINGULARITYENV_LLMJOBS_SCRATCH="$PBS_LOCALDIR"
export SINGULARITYENV_HF_HUB_OFFLINE="1"
export LLMJOBS_SCRATCH="$PBS_LOCALDIR"
export HF_HUB_OFFLINE="1"

# sentinels: start time and host now, exit code at the end, even when killed with TERM
export SUBMITIT_PBS_FOLDER="/groups/gaa00000/llmjobs/runs/demo-0a1b2c/logs/train/submit-1"
mkdir -p "$SUBMITIT_PBS_FOLDER"
echo "$(date +%s) $(hostname)" > "$SUBMITIT_PBS_FOLDER/${PBS_JOBID}_pbs_started"
_pbs_child=
trap '_pbs_rc=$?; echo "$_pbs_rc" > "$SUBMITIT_PBS_FOLDER/${PBS_JOBID}_pbs_exit"' EXIT
trap '[ -n "$_pbs_child" ] && kill -TERM "$_pbs_child" 2>/dev/null; exit 143' TERM

# hosts of the job, each once ($PBS_NODEFILE repeats them)
if [ -r "${PBS_NODEFILE:-}" ]; then
    export SUBMITIT_PBS_HOSTS="$(awk '!seen[$0]++' "$PBS_NODEFILE" | paste -sd, -)"
else
    export SUBMITIT_PBS_HOSTS="$(hostname)"
fi
export SUBMITIT_PBS_NUM_NODES=2
export SUBMITIT_EXECUTOR=pbs

# command
_pbs_hosts="$SUBMITIT_PBS_FOLDER/${PBS_JOBID}_pbs_hosts"
tr , '\n' <<< "$SUBMITIT_PBS_HOSTS" > "$_pbs_hosts"
# the environment every node starts from (ssh/pdsh/mpirun do not carry it)
export -p | grep -v -E '^declare -x (HOSTNAME|PWD|OLDPWD|SHLVL|_)=' > "$SUBMITIT_PBS_FOLDER/${PBS_JOBID}_pbs_env.sh"
cat > "$SUBMITIT_PBS_FOLDER/${PBS_JOBID}_pbs_node.sh" <<'LLMJOBS_PBS_NODE'
#!/bin/bash
_me="$(hostname)"  # before the head node's environment (PATH included) is loaded
. "${0%_pbs_node.sh}_pbs_env.sh" 2>/dev/null
if [ -n "${1:-}" ]; then _rank="$1"
elif [ -n "${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-${PMIX_RANK:-}}}" ]; then _rank="${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-${PMIX_RANK}}}"
else
    _rank=0; _i=0
    for _h in ${SUBMITIT_PBS_HOSTS//,/ }; do
        [ "${_h%%.*}" = "${_me%%.*}" ] && _rank=$_i; _i=$((_i + 1))
    done
fi
export SUBMITIT_PBS_NODE_RANK=$_rank
exec singularity exec --nv --bind /groups /groups/gaa00000/images/llmjobs.sif python3 -u -m submitit.core._submit /groups/gaa00000/llmjobs/runs/demo-0a1b2c/logs/train/submit-1 >> "$SUBMITIT_PBS_FOLDER/${PBS_JOBID}_${SUBMITIT_PBS_NODE_RANK}_log.out" 2>> "$SUBMITIT_PBS_FOLDER/${PBS_JOBID}_${SUBMITIT_PBS_NODE_RANK}_log.err"
LLMJOBS_PBS_NODE
_pbs_node="$SUBMITIT_PBS_FOLDER/${PBS_JOBID}_pbs_node.sh"
mpirun -np 2 -hostfile "$_pbs_hosts" -npernode 1 bash "$_pbs_node" &
_pbs_child=$!
wait "$_pbs_child"
exit $?
