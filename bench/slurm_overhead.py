"""What llmjobs costs on top of plain submitit on the same Slurm: 200 no-op shards, one run of each.

    python bench/slurm_overhead.py [--shards 200] [--cluster clusters/slurm.yaml]

Baseline: submitit's ``SlurmExecutor.map_array`` of 200 calls to a no-op, with the same sbatch options
(partition, account, array parallelism, walltime), waited for by checking submitit's result files every
second. llmjobs: ``llmjobs submit`` of a one-step recipe with ``shards: 200`` whose python kind calls the
same no-op, waited for with ``llmjobs status --json`` every second (each call one sacct plus the DONE
markers, as a user would). Both wall times include submission and the wait; the ratio is llmjobs/submitit.
Needs a running Slurm (``bash scripts/slurm-testbed.sh start``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
NOOP = "builtins:id"  # a C function: the job's own work is nothing, only the machinery is measured


def plain_submitit(shards: int, folder: Path, options: dict, minutes: int) -> float:
    import submitit

    ex = submitit.SlurmExecutor(folder=folder)
    params = {"time": minutes, "nodes": 1, "ntasks_per_node": 1, "cpus_per_task": 1}
    for key in ("partition", "account", "qos", "constraint", "array_parallelism"):
        if options.get(key):
            params[key] = options[key]
    ex.update_parameters(**params)
    t0 = time.perf_counter()
    jobs = ex.map_array(id, range(shards))
    while not all(j.paths.result_pickle.exists() for j in jobs):
        time.sleep(1)
    elapsed = time.perf_counter() - t0
    failed = [j.job_id for j in jobs if j.result() is None]
    assert not failed, f"submitit jobs failed: {failed[:5]}"
    return elapsed


def through_llmjobs(shards: int, home: Path, cluster: Path, minutes: int) -> float:
    home.mkdir(parents=True, exist_ok=True)
    recipe = home / "noop.yaml"
    recipe.write_text(yaml.safe_dump({"name": "noop", "steps": {"noop": {
        "kind": "python", "shards": shards, "params": {"function": NOOP},
        "resources": {"cpus": 1, "walltime": minutes}}}}))
    env = {**os.environ, "LLMJOBS_HOME": str(home)}
    env.pop("LLMJOBS_REGISTRY", None)
    cli = [sys.executable, "-m", "llmjobs.cli"]
    t0 = time.perf_counter()
    run_id = subprocess.run([*cli, "submit", str(recipe), "--cluster", str(cluster)], env=env, check=True,
                            capture_output=True, text=True).stdout.split()[-1]
    while True:
        view = json.loads(subprocess.run([*cli, "status", run_id, "--json"], env=env, check=True,
                                         capture_output=True, text=True).stdout)
        if view["status"] not in ("pending", "queued", "running"):
            break
        time.sleep(1)
    elapsed = time.perf_counter() - t0
    assert view["status"] == "succeeded", json.dumps(view)[:2000]
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=200)
    parser.add_argument("--cluster", type=Path, default=REPO / "clusters" / "slurm.yaml")
    parser.add_argument("--walltime-min", type=int, default=10)
    args = parser.parse_args()
    options = yaml.safe_load(args.cluster.read_text()).get("scheduler", {})
    with tempfile.TemporaryDirectory(prefix="llmjobs-bench-") as tmp:
        base = plain_submitit(args.shards, Path(tmp) / "submitit", options, args.walltime_min)
        ours = through_llmjobs(args.shards, Path(tmp) / "home", args.cluster, args.walltime_min)
    print(f"shards: {args.shards} no-op tasks, array parallelism {options.get('array_parallelism', 'default')}")
    print(f"plain submitit map_array: {base:8.1f} s")
    print(f"llmjobs submit + status:  {ours:8.1f} s")
    print(f"ratio llmjobs / submitit: {ours / base:8.2f}")
    assert math.isfinite(ours / base)


if __name__ == "__main__":
    main()
