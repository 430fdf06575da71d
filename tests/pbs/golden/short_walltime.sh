#!/bin/bash
#PBS -N demo-0a1b2c.probe
#PBS -P gaa00000
#PBS -q rt_HC
#PBS -l select=1
#PBS -l walltime=00:00:20
#PBS -o /groups/gaa00000/llmjobs/runs/demo-0a1b2c/logs/probe/submit-1/pbs_0123456789abcdef.out
#PBS -e /groups/gaa00000/llmjobs/runs/demo-0a1b2c/logs/probe/submit-1/pbs_0123456789abcdef.err

source /etc/profile.d/modules.sh

# setup
module load singularitypro

# environment
export SINGULARITYENV_LLMJOBS_SCRATCH="$PBS_LOCALDIR"
export SINGULARITYENV_HF_HUB_OFFLINE="1"
export LLMJOBS_SCRATCH="$PBS_LOCALDIR"
export HF_HUB_OFFLINE="1"

# sentinels: start time and host now, exit code at the end, even when killed with TERM
export SUBMITIT_PBS_FOLDER="/groups/gaa00000/llmjobs/runs/demo-0a1b2c/logs/probe/submit-1"
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
export SUBMITIT_PBS_NUM_NODES=1
export SUBMITIT_EXECUTOR=pbs

# command
export SUBMITIT_PBS_NODE_RANK=0
singularity exec --nv --bind /groups /groups/gaa00000/images/llmjobs.sif python3 -u -m submitit.core._submit /groups/gaa00000/llmjobs/runs/demo-0a1b2c/logs/probe/submit-1 >> "$SUBMITIT_PBS_FOLDER/${PBS_JOBID}_${SUBMITIT_PBS_NODE_RANK}_log.out" 2>> "$SUBMITIT_PBS_FOLDER/${PBS_JOBID}_${SUBMITIT_PBS_NODE_RANK}_log.err" &
_pbs_child=$!
wait "$_pbs_child"
exit $?
