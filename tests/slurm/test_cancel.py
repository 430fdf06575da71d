"""``cancel`` on Slurm: whole arrays by their array job id, one per scancel, plain jobs batched, downstream
first; then what sacct says is returned, never assumed. Runs on the Slurm testbed."""

from __future__ import annotations

import os
import shutil

from llmjobs.cluster.backends.base import JobState
from llmjobs.cluster.backends.slurm import scancel_groups

from .conftest import refs, shell_tasks, step_job


def test_scancel_groups():
    ids = ["5_0", "5_1", "6", "7_2", "8", "9"]
    assert scancel_groups(ids) == [["9", "8"], ["7"], ["6"], ["5"]]
    assert [len(g) for g in scancel_groups([str(n) for n in range(150)], batch=100)] == [100, 50]


def test_cancel_by_array_id_then_sacct(backend, tmp_path, monkeypatch):
    calls = tmp_path / "scancel-calls"
    wrap = tmp_path / "bin"
    wrap.mkdir()
    # records each call, then runs the real scancel
    (wrap / "scancel").write_text(f'#!/bin/bash\necho "$*" >> {calls}\nexec {shutil.which("scancel")} "$@"\n')
    (wrap / "scancel").chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrap}:{os.environ['PATH']}")

    gen = backend.submit(step_job(tmp_path, "gen", shell_tasks(tmp_path, "gen", "sleep 120", shards=3)))
    one = backend.submit(step_job(tmp_path, "one", shell_tasks(tmp_path, "one", "sleep 120")))
    score = backend.submit(step_job(tmp_path, "score", shell_tasks(tmp_path, "score", "true"), after=refs(gen)))
    jobs = refs(gen) + refs(one) + refs(score)
    statuses = backend.cancel(jobs)

    array_id = gen[0].job_id.split("_")[0]
    assert calls.read_text().splitlines() == [f"{score[0].job_id} {one[0].job_id}", array_id]
    assert {j.job_id: statuses[j.job_id].state for j in jobs} == {j.job_id: JobState.CANCELLED for j in jobs}
