"""The fast defaults of the training loop: the chunked cross-entropy gives the plain one's loss and gradients,
bf16 weights with fp32 masters keep the small updates that pure bf16 weights lose (and checkpoint the masters),
and the default micro-batch is a token budget on GPUs, one row on CPU."""

from __future__ import annotations

import pytest


def _trainer(tmp_path, tiny_llama, chat_data, **kw):
    from llmjobs.jobs.train import worker
    from llmjobs.jobs.train.params import SFTParams

    p = SFTParams.model_validate({"model": str(tiny_llama), "data": str(chat_data), "max_length": 1024,
                                  "warmup_ratio": 0.0, "lr_scheduler_type": "constant", "max_steps": 4, **kw})
    cfg = {"kind": "train.sft", "output_dir": str(tmp_path / "out"), "checkpoint_dir": str(tmp_path / "ckpt"),
           "stop_flag": str(tmp_path / "stop"), "status_file": str(tmp_path / "status.json"), "attempt": 1}
    t = worker.Trainer(cfg, p)
    t.setup()
    return t


def test_chunked_cross_entropy_matches_the_plain_one(tmp_path, tiny_llama, chat_data, monkeypatch):
    import torch

    from llmjobs.jobs.train import fused_loss

    monkeypatch.setattr(fused_loss, "CHUNK_ELEMENTS", 1)  # 256-token chunks: a ~1k-token row takes several
    results = []
    for fused in (True, False):
        t = _trainer(tmp_path / str(fused), tiny_llama, chat_data, fused_loss=fused)
        assert (t.head is not None) == fused
        bins = t.plan.micro(0, 0, 0)
        assert t.plan.tokens_per_bin[t.plan.rows(0)].sum() > 3 * 256
        batch = t._batch(bins)
        n = int((batch["target"] != fused_loss.IGNORE).sum())
        loss = t._micro_loss(batch, 1)
        loss.backward()
        grads = {name: x.grad.clone() for name, x in t.model.named_parameters()}
        results.append((float(loss.detach()), n, grads))
        assert t.model.get_output_embeddings()(torch.ones(1, 128)).shape[-1] > 128  # the projection is back
    (l1, n1, g1), (l2, n2, g2) = results
    assert n1 == n2 > 0
    assert l1 == pytest.approx(l2, rel=1e-5)
    for name in g2:
        torch.testing.assert_close(g1[name], g2[name], atol=1e-5, rtol=1e-4)


def test_fp32_masters_keep_updates_that_bf16_weights_lose(tmp_path, tiny_llama, chat_data):
    import torch

    lr, steps = 1e-5, 3
    update = {}
    for precision in ("fp32", "bf16_master", "bf16"):
        t = _trainer(tmp_path / precision, tiny_llama, chat_data, precision=precision, learning_rate=lr,
                     max_grad_norm=0.0)
        before = [x.detach().float().clone() for _, x in t.trained]
        for s in range(steps):
            t.step(s)
        weights = [x.detach() for _, x in t.trained]
        after = t.masters if precision == "bf16_master" else weights
        update[precision] = torch.cat([(a.float() - b).flatten() for a, b in zip(after, before)])
        if precision == "bf16_master":
            assert all(w.dtype == torch.bfloat16 for w in weights)
            assert all(m.dtype == torch.float32 for m in t.masters)
            for w, m in zip(weights, t.masters):  # the model holds the masters' bf16 rounding
                assert torch.equal(w, m.to(torch.bfloat16))
            t.save(steps, {"step": steps, "history": [], "train_seconds": 0.0, "tokens": 0, "world": 1})
            again = _trainer(tmp_path / precision, tiny_llama, chat_data, precision=precision, learning_rate=lr)
            assert again.resume()["step"] == steps
            for m, m2 in zip(t.masters, again.masters):
                assert torch.equal(m, m2)  # the fp32 masters, not their bf16 rounding, come back

    def error(u):  # how far an update is from the fp32 run's
        return float((u - update["fp32"]).norm() / update["fp32"].norm())

    # with lr 1e-5 most updates are below half a bf16 step of the weights: pure bf16 drops (or inflates)
    # them; the masters accumulate them as fp32 does
    assert error(update["bf16_master"]) < 0.3
    assert error(update["bf16"]) > 2 * error(update["bf16_master"])


def test_default_micro_batch_is_a_token_budget_on_gpus(tiny_llama, chat_data):
    from llmjobs.jobs.train import modeling
    from llmjobs.jobs.train.params import SFTParams

    def p(**kw):
        return SFTParams.model_validate({"model": str(tiny_llama), "data": str(chat_data), **kw})

    h100, h200, a100_40 = 79.2, 139.8, 39.4  # GiB as torch reports them
    assert modeling.rows_per_micro(p(max_length=4096), "cuda", h100) == 5  # 22k tokens fit beside 25 GiB
    assert modeling.rows_per_micro(p(max_length=4096), "cuda", h200) == 8  # the 32,768-token cap
    assert modeling.rows_per_micro(p(max_length=4096), "cuda", a100_40) == 1
    assert modeling.rows_per_micro(p(max_length=32768), "cuda", h200) == 1
    assert modeling.rows_per_micro(p(max_length=4096), "cpu") == 1
    assert modeling.rows_per_micro(p(max_length=4096, per_device_train_batch_size=2), "cuda", h200) == 2
    # a model wider and deeper than the reference gets a smaller budget, unless gradient checkpointing is on
    big = {"hidden_size": 5120, "num_hidden_layers": 40}
    init = {"config": big, "tokenizer": str(tiny_llama)}

    def fresh(**kw):
        return SFTParams.model_validate({"init": init, "data": str(chat_data), **kw})

    assert modeling.rows_per_micro(fresh(max_length=1024), "cuda", h200) == 7  # 32,768 x 49,152 / 204,800
    assert modeling.rows_per_micro(fresh(max_length=1024), "cuda", h100) == 5  # 22,352 x 49,152 / 204,800
    assert modeling.rows_per_micro(fresh(max_length=4096), "cuda", h200) == 1
    assert modeling.rows_per_micro(fresh(max_length=1024, gradient_checkpointing=True), "cuda", h200) == 32
    assert modeling.precision(p(), "cpu") == "fp32"
