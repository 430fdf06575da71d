"""What a submitit job sees inside PBS: its id, array index, node rank and the job's hosts."""

from __future__ import annotations

import os
from typing import ClassVar

from submitit.core import job_environment, logger


def unique_hosts(nodefile: str) -> list[str]:
    """Hosts of ``$PBS_NODEFILE`` once each, in order (PBS repeats a host per chunk)."""
    hosts: list[str] = []
    with open(nodefile) as f:
        for line in f:
            host = line.strip()
            if host and host not in hosts:
                hosts.append(host)
    return hosts


class PBSJobEnvironment(job_environment.JobEnvironment):
    """``SUBMITIT_PBS_NODE_RANK``, ``SUBMITIT_PBS_HOSTS`` and ``SUBMITIT_PBS_NUM_NODES`` are set by the job
    script (``script.py``); the ids come from PBS (``PBS_JOBID``, ``PBS_ARRAY_ID``, ``PBS_ARRAY_INDEX``)."""

    _env: ClassVar[dict[str, str]] = {
        "job_id": "PBS_JOBID",
        "num_tasks": "SUBMITIT_PBS_NUM_NODES",  # one task per node
        "num_nodes": "SUBMITIT_PBS_NUM_NODES",
        "node": "SUBMITIT_PBS_NODE_RANK",
        "global_rank": "SUBMITIT_PBS_NODE_RANK",
        "local_rank": "SUBMITIT_PBS_LOCAL_RANK",
        "array_job_id": "PBS_ARRAY_ID",
        "array_task_id": "PBS_ARRAY_INDEX",
    }

    @property
    def job_id(self) -> str:
        # PBS's own id ('1234[3].pbs1'), as qsub/qstat print it: submitit's files are named after it
        return os.environ[self._env["job_id"]]

    @property
    def hostnames(self) -> list[str]:
        listed = os.environ.get("SUBMITIT_PBS_HOSTS", "")
        if listed:
            return [h for h in listed.split(",") if h]
        nodefile = os.environ.get("PBS_NODEFILE")
        if nodefile and os.path.exists(nodefile):
            return unique_hosts(nodefile)
        return [self.hostname]

    def _requeue(self, countdown: int) -> None:
        # qrerun is an operator command on ABCI and users cannot qalter: llmjobs resume resubmits instead
        logger.get_logger().info(f"PBS job {self.job_id} not requeued: resubmit it ({countdown} timeouts left)")
