"""The launch line of each node, the generated DeepSpeed configs, and which checkpoints count as complete.
(The runs that use them are in test_train_runs.py; DeepSpeed itself is not installed here.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmjobs.jobs.context import StepContext
from llmjobs.jobs.train import checkpoint, dsconfig, launch
from llmjobs.jobs.train.params import DeepSpeedSpec, SFTParams


def _ctx(rank: int, world: int) -> StepContext:
    return StepContext(run_id="r-1", step="ft", shard=0, num_shards=1, output_dir=Path("/o"),
                       checkpoint_dir=Path("/o/.checkpoints/shard-00000"), params={}, attempt=2, rank=rank,
                       world_size=world, head_node="node-a", hostnames=["node-a", "node-b"])


def test_each_node_starts_torchrun_with_its_rank_and_the_same_rendezvous(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    lines = [launch.command(_ctx(r, 2), "cfg.json", 8)[0] for r in range(2)]
    for rank, cmd in enumerate(lines):
        assert cmd[1:3] == ["-m", "llmjobs.jobs.train.torchrun"]
        assert {"--nnodes=2", f"--node_rank={rank}", "--nproc_per_node=8", "--master_addr=node-a"} <= set(cmd)
        assert cmd[-3:] == ["-m", "llmjobs.jobs.train.worker", "cfg.json"]
    ports = {next(a for a in cmd if a.startswith("--master_port=")) for cmd in lines}
    assert len(ports) == 1  # agreed without talking
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # a requeued job rendezvous on a fresh port
    assert launch.rendezvous_port(_ctx(0, 2)) != int(next(iter(ports)).split("=")[1])


def test_one_cpu_process_runs_the_worker_directly():
    cmd, env = launch.command(_ctx(0, 1), "cfg.json", 1)
    assert cmd[1:] == ["-m", "llmjobs.jobs.train.worker", "cfg.json"]
    assert env["WORLD_SIZE"] == "1" and env["RANK"] == "0"


def _p(**kw) -> SFTParams:
    return SFTParams.model_construct(per_device_train_batch_size=2, gradient_accumulation_steps=4,
                                     max_grad_norm=1.0, **kw)


def test_deepspeed_zero2_and_zero3_configs():
    z2 = dsconfig.generate(_p(), DeepSpeedSpec(zero=2), world=16, bf16=True)
    assert z2["train_batch_size"] == 2 * 4 * 16 and z2["gradient_accumulation_steps"] == 4
    assert z2["zero_optimization"]["stage"] == 2 and z2["bf16"] == {"enabled": True}
    assert "offload_optimizer" not in z2["zero_optimization"]
    z3 = dsconfig.generate(_p(), DeepSpeedSpec(zero=3, offload="all", config={"zero_optimization":
                                                                            {"overlap_comm": False}}),
                           world=8, bf16=True)
    zo = z3["zero_optimization"]
    assert zo["stage"] == 3 and zo["stage3_gather_16bit_weights_on_model_save"] is True
    assert zo["offload_optimizer"]["device"] == "cpu" and zo["offload_param"]["device"] == "cpu"
    assert zo["overlap_comm"] is False  # the user's config wins, key by key
    with pytest.raises(ValueError, match="needs zero: 3"):
        dsconfig.generate(_p(), DeepSpeedSpec(zero=2, offload="all"), world=8, bf16=True)
    json.dumps(z3)  # what DeepSpeed reads


def test_only_complete_untruncated_checkpoints_count(tmp_path):
    root = tmp_path / "ck"
    for step in (10, 20, 30):
        tmp = checkpoint.staging(root, step, "a1")
        (tmp / "model.pt").write_bytes(b"x" * 100)
        checkpoint.publish(root, tmp, step, {}, keep=3)
    assert [s for s, _ in checkpoint.complete(root)] == [10, 20, 30]
    (checkpoint.step_dir(root, 30) / "model.pt").write_bytes(b"x" * 10)  # cut short after the marker
    checkpoint.staging(root, 40, "a2")  # the job died while writing step 40
    (checkpoint.step_dir(root, 20) / checkpoint.MARKER).unlink()  # renamed, marker never written
    assert checkpoint.latest(root)[0] == 10
    tmp = checkpoint.staging(root, 50, "a3")
    (tmp / "model.pt").write_bytes(b"y")
    checkpoint.publish(root, tmp, 50, {}, keep=1)
    assert [s for s, _ in checkpoint.complete(root)] == [50]
    assert not list(root.glob("*.tmp-*"))  # the dead attempt's partial directory is gone
