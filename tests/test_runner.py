"""The shard runner's own guarantees, whatever the scheduler: the DONE-marker reader, the refusal to run on
missing upstream input, and the failure record with the kind's own exit code. Runs the real runner in
this process (no scheduler involved: these guarantees must hold even when the scheduler is wrong)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmjobs.jobs.runner import DependencyNotSatisfied, run_shard
from llmjobs.jobs.task import ShardTask, done_marker, read_done, read_failure, write_done


def _task(tmp: Path, command: str, requires: tuple[str, ...] = (), **kw) -> ShardTask:
    return ShardTask(run_id="r1", step="b", kind="shell", shard=0, num_shards=1, params={"command": command},
                     output_dir=str(tmp / "b"), state_dir=str(tmp / ".llmjobs" / "b"), requires=requires, **kw)


def test_read_done_accepts_only_what_write_done_writes(tmp_path):
    good = tmp_path / "good.done"
    write_done(good, {"attempt": 2, "seconds": 1.5, "result": {}})
    assert read_done(good)["attempt"] == 2
    bad = {
        "truncated": '{"attempt": 1, "ti',
        "list": "[1, 2]",
        "no_attempt": json.dumps({"time": 1.0}),
        "string_attempt": json.dumps({"attempt": "1", "time": 1.0}),
        "bool_attempt": json.dumps({"attempt": True, "time": 1.0}),
        "no_time": json.dumps({"attempt": 1}),
        "bad_seconds": json.dumps({"attempt": 1, "time": 1.0, "seconds": "x"}),
        "binary": b"\xff\xfe\x00",
    }
    for name, content in bad.items():
        path = tmp_path / f"{name}.done"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        assert read_done(path) is None, name
    assert read_done(tmp_path / "missing.done") is None
    assert read_done(tmp_path) is None  # a directory where the marker should be


def test_shard_refuses_to_run_on_missing_upstream_marker(tmp_path):
    upstream = [str(done_marker(tmp_path / ".llmjobs" / "a", i)) for i in range(4)]
    for m in upstream[:3]:  # shard 3 of the upstream step failed: no marker
        write_done(Path(m), {"attempt": 1, "seconds": 0.1})
    side_effect = tmp_path / "ran"
    task = _task(tmp_path, f"touch {side_effect}", tuple(upstream))
    with pytest.raises(DependencyNotSatisfied, match="dependency not satisfied"):
        run_shard(task)
    assert not side_effect.exists()
    assert read_done(task.done_marker) is None
    failure = read_failure(task.state_dir, 0, 1)
    assert failure and "dependency not satisfied" in failure["reason"] and upstream[3] in failure["reason"]

    # a corrupt marker is no better than a missing one
    Path(upstream[3]).write_text("{")
    with pytest.raises(DependencyNotSatisfied):
        run_shard(task)
    assert not side_effect.exists()

    write_done(Path(upstream[3]), {"attempt": 2, "seconds": 0.1})
    run_shard(task)
    assert side_effect.exists() and read_done(task.done_marker)["attempt"] == 1


def test_failure_record_keeps_the_commands_own_exit_code(tmp_path):
    task = _task(tmp_path, "echo about to fail; exit 3", attempt=2)
    with pytest.raises(RuntimeError, match="code 3"):
        run_shard(task)
    failure = read_failure(task.state_dir, 0, 2)
    assert failure["exit_code"] == 3 and "code 3" in failure["reason"]
    assert read_failure(task.state_dir, 0, 1) is None  # records are per attempt
