"""The PBS backend's resource matching and the refusals at submit (ABCI's limits), and the multi-node
launch path of the job script."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmjobs.cluster.backends.base import JobRef
from llmjobs.cluster.backends.pbs import PBSBackend, depend_ids, job_name
from llmjobs.cluster.pbs.script import render_script
from llmjobs.cluster.profiles import profile_from_file
from llmjobs.errors import UserError
from llmjobs.resources import Resources

ROOT = Path(__file__).resolve().parents[2]


def abci(**scheduler) -> PBSBackend:
    profile = profile_from_file(ROOT / "clusters" / "abci.yaml")
    profile.scheduler = {**profile.scheduler, "group": "gaa00000", "max_unfinished_jobs": None, **scheduler}
    return PBSBackend(profile)


@pytest.mark.parametrize("resources, expected", [
    ({"cpus": 4}, "rt_HC"),
    ({"cpus": 32, "mem_gb": 300}, "rt_HC"),
    ({"cpus": 64}, "rt_HF"),  # more cores than rt_HC and rt_HG have
    ({"gpus_per_node": 1, "cpus": 16}, "rt_HG"),
    ({"gpus_per_node": 1, "cpus": 17}, "rt_HF"),
    ({"gpus_per_node": 1, "mem_gb": 200}, "rt_HF"),
    ({"gpus_per_node": 2}, "rt_HF"),
    ({"nodes": 2}, "rt_HF"),  # the only multi-node type
    ({"nodes": 128, "gpus_per_node": 8}, "rt_HF"),
])
def test_smallest_fitting_type(resources, expected):
    assert abci().match(Resources(**resources)).name == expected


def test_refusals_name_the_problem(monkeypatch):
    monkeypatch.delenv("LLMJOBS_PBS_GROUP", raising=False)
    with pytest.raises(UserError, match="scheduler.group is not set"):
        abci(group=None).validate("train", Resources(), 1)
    monkeypatch.setenv("LLMJOBS_PBS_GROUP", "gbb11111")
    backend = abci(group=None)
    backend.validate("train", Resources(), 1)
    assert backend.executor_parameters(Resources(), name="x")["project"] == "gbb11111"

    with pytest.raises(UserError, match=r"no resource type .* fits 1 node\(s\) x 9 GPU.*Available: rt_HC"):
        abci().validate("train", Resources(gpus_per_node=9), 1)
    with pytest.raises(UserError, match="Only rt_HF can span several nodes"):
        abci().validate("train", Resources(nodes=2, cpus=500), 1)
    with pytest.raises(UserError, match="no resource type"):
        abci().validate("train", Resources(nodes=129), 1)
    with pytest.raises(UserError, match="walltime 168:00:01 is over this cluster's limit of 168:00:00"):
        abci().validate("train", Resources(walltime="168:00:01"), 1)
    abci().validate("train", Resources(walltime="7-00:00:00"), 1)
    with pytest.raises(UserError, match="75001 shards, but an array job may have at most 75000"):
        abci().validate("gen", Resources(), 75001)
    abci().validate("gen", Resources(), 75000)


def test_unfinished_jobs_limit(pbs_server, tmp_path):
    """Counted from the emulated server: the user's queued/running jobs plus one per step of the run."""
    job = tmp_path / "sleep.sh"
    job.write_text("#!/bin/bash\nsleep 30\n")
    out = f"{tmp_path}/sleep.^array_index^"
    submitted = pbs_server.run("qsub", "-P", "g", "-J", "0-3", "-j", "oe", "-o", out, str(job))
    assert submitted.returncode == 0, submitted.stderr  # an array counts once
    backend = abci(max_unfinished_jobs=3)
    backend.validate("a", Resources(), 4)
    backend.validate("b", Resources(), 4)
    with pytest.raises(UserError, match="you have 1 unfinished PBS jobs and this run adds 3; the limit is 3"):
        backend.validate("c", Resources(), 1)


def test_profile_option_errors_are_user_errors(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("backend: pbs\nscheduler: {group: g, launcher: srun}\n")
    with pytest.raises(UserError, match=r"invalid pbs options:\n  launcher"):
        PBSBackend(profile_from_file(path))
    path.write_text("backend: pbs\nscheduler: {reservation: 1234}\n")
    with pytest.raises(UserError, match="reservation"):
        PBSBackend(profile_from_file(path))


def test_names_and_dependencies():
    assert job_name("run 1/step") == "run_1_step"
    assert job_name("42-run.step") == "j42-run.step"
    refs = [JobRef("7[0].pbs1", "f"), JobRef("7[3].pbs1", "f"), JobRef("8.pbs1", "f"), JobRef("<x[0]>", "f")]
    assert depend_ids(refs) == ["7[].pbs1", "8.pbs1", "<x[]>"]


# Stand-ins for the launchers (no second node, sshd, pdsh or MPI exist here): each starts the node command
# on this machine in a clean environment, as the real tool would on another node.
STAND_INS = {
    # ssh [-o opt]... HOST COMMAND...
    "ssh": 'while [ "${1#-}" != "$1" ]; do shift 2; done; shift\n'
           'exec env -i HOME="$HOME" PATH="$PATH" bash -c "$*"\n',
    # mpirun -np N -hostfile F [-npernode 1] COMMAND...: N ranks, told their rank as Open MPI does
    "mpirun": 'n=1; while [ "${1#-}" != "$1" ]; do [ "$1" = -np ] && n=$2; shift 2; done\n'
              'pids=(); for ((i = 0; i < n; i++)); do\n'
              '  env -i HOME="$HOME" PATH="$PATH" OMPI_COMM_WORLD_RANK=$i "$@" & pids+=($!)\n'
              'done; rc=0; for p in "${pids[@]}"; do wait $p || rc=$?; done; exit $rc\n',
    # pdsh [-S] -w HOSTS COMMAND...: the command runs once per host, where `hostname` names that host
    "pdsh": 'while [ "${1#-}" != "$1" ]; do case $1 in -w) hosts=$2; shift 2;; *) shift;; esac; done\n'
            'pids=(); for h in ${hosts//,/ }; do\n'
            '  d=$(mktemp -d); printf "#!/bin/sh\\necho $h.cluster\\n" > $d/hostname; chmod +x $d/hostname\n'
            '  env -i HOME="$HOME" PATH="$d:$PATH" bash -c "$*" & pids+=($!)\n'
            'done; rc=0; for p in "${pids[@]}"; do wait $p || rc=$?; done; exit $rc\n',
}


@pytest.mark.parametrize("launcher", sorted(STAND_INS))
def test_multi_node_launch(tmp_path, launcher):
    """The two-node path of the job script, run here with a stand-in launcher; everything else is the real
    script: the deduplicated node file, the exported environment, the node script and each node's rank."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / launcher).write_text("#!/bin/bash\n" + STAND_INS[launcher])
    (bin_dir / launcher).chmod(0o755)
    nodefile = tmp_path / "nodefile"
    nodefile.write_text("nodeA\nnodeA\nnodeB\nnodeB\n")
    folder = tmp_path / "logs"
    probe = (f"{sys.executable} -c \"import os, submitit; e = submitit.JobEnvironment(); "
             "print(e.job_id, e.global_rank, e.num_nodes, ','.join(e.hostnames), os.environ['MARK'])\"")
    text = render_script(probe, folder, nodes=2, launcher=launcher, env={"MARK": "from-head"}, modules_init=None)
    assert ("#PBS -v USE_SSH=1" in text) == (launcher != "mpirun")
    script = tmp_path / "job.sh"
    script.write_text(text)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PBS_JOBID": "5.pbs1",
           "PBS_NODEFILE": str(nodefile)}
    subprocess.run(["bash", str(script)], env=env, check=True, timeout=60)
    outs = [(folder / f"5.pbs1_{rank}_log.out").read_text().split() for rank in (0, 1)]
    assert outs == [["5.pbs1", "0", "2", "nodeA,nodeB", "from-head"],
                    ["5.pbs1", "1", "2", "nodeA,nodeB", "from-head"]]
    assert (folder / "5.pbs1_pbs_exit").read_text().strip() == "0"
    assert (folder / "5.pbs1_pbs_hosts").read_text().split() == ["nodeA", "nodeB"]


def test_exit_sentinel_on_failure_and_term(tmp_path):
    """The job script's own exit code lands in the sentinel, also when PBS stops it with SIGTERM."""
    folder = tmp_path / "logs"
    env = {**os.environ, "PBS_JOBID": "6.pbs1"}
    script = tmp_path / "fail.sh"
    script.write_text(render_script("exit 7", folder, modules_init=None))
    assert subprocess.run(["bash", str(script)], env=env, timeout=30, check=False).returncode == 7
    assert (folder / "6.pbs1_pbs_exit").read_text().strip() == "7"

    env["PBS_JOBID"] = "7.pbs1"
    script.write_text(render_script("sleep 30", folder, modules_init=None))
    proc = subprocess.Popen(["bash", str(script)], env=env)
    started = folder / "7.pbs1_pbs_started"
    for _ in range(100):
        if started.exists():
            break
        time.sleep(0.05)
    time.sleep(0.3)
    proc.terminate()
    assert proc.wait(timeout=10) == 143
    assert (folder / "7.pbs1_pbs_exit").read_text().strip() == "143"
