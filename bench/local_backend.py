"""The local backend against plain submitit: a trivial step of many shards on this machine, one run of each.

    python bench/local_backend.py [--shards 2000] [--baseline-shards 200] [--max-parallel N]

Both run the same thing per shard: ``llmjobs.jobs.runner.run_shard`` of a ``shell`` task whose command is
``true`` (DONE marker, lock, logs: what a real shard costs besides its own work).
- llmjobs: ``LocalBackend.submit`` of the whole step, then ``poll`` every 0.2 s until nothing is live.
- baseline: submitit's ``LocalExecutor.map_array`` of the same calls, then waiting on its jobs. It starts
  every job at once (no concurrency limit) at its 0.2 s submission throttle, so it runs ``--baseline-shards``
  (200 by default: 2,000 would spend 400 s in the throttle alone); llmjobs runs that count too, for a ratio
  on equal work, and ``--shards``.
Measured: submit seconds, shards/s from submit to the last shard, peak processes and peak memory (RSS and
PSS, summed) of everything this benchmark started (the dispatcher, jobs and their children; submitit's
controllers and workers), sampled every 50 ms.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Self

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


class Sampler(threading.Thread):
    """Peak count and memory of this process's descendants."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.procs = self.rss = self.pss = 0

    def descendants(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != b"Z":
                children.setdefault(int(fields[1]), []).append(int(name))
        out, todo = [], [os.getpid()]
        while todo:
            for c in children.get(todo.pop(), []):
                out.append(c)
                todo.append(c)
        return out

    @staticmethod
    def memory(pid: int) -> tuple[int, int]:
        rss = pss = 0
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
        except OSError:
            pass
        return rss, pss

    def run(self) -> None:
        while not self.stop.is_set():
            pids = self.descendants()
            mem = [self.memory(p) for p in pids]
            self.procs = max(self.procs, len(pids))
            self.rss = max(self.rss, sum(m[0] for m in mem))
            self.pss = max(self.pss, sum(m[1] for m in mem))
            time.sleep(0.05)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.join()


def tasks(base: Path, n: int):
    from llmjobs.jobs.task import ShardTask

    return [ShardTask(run_id="bench", step="s", kind="shell", shard=i, num_shards=n, params={"command": "true"},
                      output_dir=str(base / "out"), state_dir=str(base / "state")) for i in range(n)]


def run_llmjobs(base: Path, n: int, max_parallel: int) -> dict:
    from llmjobs.cluster.backends.base import JobRef, JobState, StepJob
    from llmjobs.cluster.backends.local import LocalBackend
    from llmjobs.cluster.profiles import Profile
    from llmjobs.resources import Resources

    os.environ["LLMJOBS_HOME"] = str(base / "home")
    backend = LocalBackend(Profile(name="bench", scheduler={"max_parallel": max_parallel}))
    job = StepJob(run_id="bench", step="s", tasks=tasks(base, n), resources=Resources(walltime="01:00:00"),
                  folder=base / "logs")
    with Sampler() as sampler:
        t0 = time.perf_counter()
        submitted = backend.submit(job)
        submit_s = time.perf_counter() - t0
        refs = [JobRef(s.job_id, s.folder) for s in submitted]
        while True:
            states = backend.poll(refs)
            if not any(st.state.live for st in states.values()):
                break
            time.sleep(0.2)
        total = time.perf_counter() - t0
    ok = sum(st.state == JobState.SUCCEEDED for st in states.values())
    return {"n": n, "ok": ok, "submit_s": submit_s, "total_s": total, "rate": n / total,
            "procs": sampler.procs, "rss_mb": sampler.rss / 1024, "pss_mb": sampler.pss / 1024}


def run_submitit(base: Path, n: int) -> dict:
    import submitit

    from llmjobs.jobs.runner import run_shard

    ex = submitit.LocalExecutor(folder=base / "submitit")
    ex.update_parameters(timeout_min=60)
    with Sampler() as sampler:
        t0 = time.perf_counter()
        jobs = ex.map_array(run_shard, tasks(base, n))
        submit_s = time.perf_counter() - t0
        while not all(j.done() for j in jobs):
            time.sleep(0.2)
        total = time.perf_counter() - t0
    ok = sum(j.state == "FINISHED" or j.exception() is None for j in jobs)
    return {"n": n, "ok": ok, "submit_s": submit_s, "total_s": total, "rate": n / total,
            "procs": sampler.procs, "rss_mb": sampler.rss / 1024, "pss_mb": sampler.pss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=2000)
    ap.add_argument("--baseline-shards", type=int, default=200)
    ap.add_argument("--max-parallel", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="llmjobs-bench-") as tmp:
        tmp = Path(tmp)
        rows = [("llmjobs local", run_llmjobs(tmp / "a", args.shards, args.max_parallel)),
                ("llmjobs local", run_llmjobs(tmp / "b", args.baseline_shards, args.max_parallel)),
                ("submitit LocalExecutor", run_submitit(tmp / "c", args.baseline_shards))]
    print(f"max_parallel {args.max_parallel} (submitit's LocalExecutor has no limit: all its jobs start at once); "
          f"cores {os.cpu_count()}, load {os.getloadavg()[0]:.1f}")
    print(f"{'':24} {'shards':>6} {'ok':>6} {'submit s':>9} {'total s':>8} {'shards/s':>9} {'peak procs':>10} "
          f"{'peak RSS MB':>11} {'peak PSS MB':>11}")
    for name, r in rows:
        print(f"{name:24} {r['n']:>6} {r['ok']:>6} {r['submit_s']:>9.2f} {r['total_s']:>8.1f} {r['rate']:>9.1f} "
              f"{r['procs']:>10} {r['rss_mb']:>11.0f} {r['pss_mb']:>11.0f}")
    big, same, base = (r for _, r in rows)
    print(f"ratios vs submitit at {base['n']} shards: throughput {same['rate'] / base['rate']:.1f}x "
          f"({big['n']} shards: {big['rate'] / base['rate']:.1f}x), submit time per shard "
          f"{(same['submit_s'] / same['n']) / (base['submit_s'] / base['n']):.3f}x, peak processes "
          f"{same['procs'] / base['procs']:.2f}x, peak PSS {same['pss_mb'] / base['pss_mb']:.2f}x")
    print(f"llmjobs {big['n']} vs {same['n']} shards: peak PSS {big['pss_mb'] / same['pss_mb']:.2f}x, "
          f"peak processes {big['procs']} vs {same['procs']} (the dispatcher plus, per running job, its Python "
          f"process and the shell kind's bash: at most 1 + 2 x {args.max_parallel})")


if __name__ == "__main__":
    main()
