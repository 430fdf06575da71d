"""Packing: documents in one packed row do not see each other, the packer fills rows, the plan is a function of
the step (resume jumps, it does not replay), and the loss mask covers assistant tokens only."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llmjobs.jobs.train.packing import best_fit_decreasing


def _params(tiny_llama, chat_data, **kw):
    from llmjobs.jobs.train.params import SFTParams

    return SFTParams.model_validate({"model": str(tiny_llama), "data": str(chat_data), "max_length": 256, **kw})


# flex_attention passes this test too, but compiling it takes minutes on CPU: not in CI
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_row_loss_equals_its_documents_run_separately(attn, tiny_llama, chat_data):
    """The isolation proof: per-token losses of a packed row (position ids restart per document, no mask, no
    cache, as the loop runs it) equal those of each document alone; a row without the position-id resets
    (what a leaking attention amounts to) differs."""
    import torch
    from transformers import AutoModelForCausalLM

    from llmjobs.jobs.train import data, packing

    p = _params(tiny_llama, chat_data)
    tok = data.load_tokenizer(p)
    ds = data.build(p, tok)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32, attn_implementation=attn).eval()
    docs = [[0, 1, 2, 3]]
    row = packing.collate_packed(ds, docs)

    def token_losses(ids, labels, pos):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor(ids), position_ids=torch.tensor(pos), use_cache=False).logits
        return torch.nn.functional.cross_entropy(logits[0].float(), torch.tensor(labels[0]), reduction="none",
                                                 ignore_index=data.IGNORE)

    packed = token_losses(row["input_ids"], row["labels"], row["position_ids"])
    alone = []
    for d in docs[0]:
        one = packing.collate_packed(ds, [[d]])
        alone.append(token_losses(one["input_ids"], one["labels"], one["position_ids"]))
    torch.testing.assert_close(packed, torch.cat(alone), atol=2e-5, rtol=1e-4)

    leaky_pos = np.arange(row["input_ids"].shape[1])[None]
    leaky = token_losses(row["input_ids"], row["labels"], leaky_pos)
    assert not torch.allclose(leaky, packed, atol=1e-3)


def test_best_fit_decreasing_fills_rows_on_a_reasoning_length_mix():
    """A seed-like mix (lognormal, mean ~1.5k tokens, capped at 4,096): nearly every packed token is real."""
    rng = np.random.default_rng(0)
    lengths = np.minimum(rng.lognormal(np.log(1200), 0.7, 5000).astype(np.int64) + 1, 4096)
    bins = best_fit_decreasing(lengths, 4096)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))  # every document, once
    assert max(lengths[b].sum() for b in bins) <= 4096
    fill = lengths.sum() / (len(bins) * 4096)
    padded_share = lengths.sum() / (len(lengths) * 4096)  # padding every sample to max_length
    assert fill > 0.97, fill
    assert fill / padded_share > 2.5


def test_plan_is_a_function_of_the_step(tiny_llama, chat_data):
    from llmjobs.jobs.train import data, packing

    p = _params(tiny_llama, chat_data)
    ds = data.build(p, data.load_tokenizer(p))
    plan = packing.make_plan(ds, True, 256, 1, 2, 2, seed=3)
    again = packing.make_plan(ds, True, 256, 1, 2, 2, seed=3)
    steps = [plan.rows(s) for s in range(plan.steps_per_epoch * 2)]
    assert [again.rows(s) for s in reversed(range(len(steps)))] == steps[::-1]  # any order, same answer
    one_epoch = [b for s in steps[:plan.steps_per_epoch] for b in s]
    assert len(set(one_epoch)) == len(one_epoch)  # an epoch uses each row at most once
    assert steps[0] != steps[plan.steps_per_epoch]  # the next epoch is reshuffled
    ranks = [plan.micro(0, r, m) for r in range(2) for m in range(2)]
    assert sum(len(x) for x in ranks) == 4 and len({str(x) for x in ranks}) == 4


def test_loss_mask_covers_assistant_turns_only(tiny_llama, chat_data):
    from llmjobs.jobs.train import data

    p = _params(tiny_llama, chat_data)
    tok = data.load_tokenizer(p)
    enc = data.Encoder(tok, p)
    row = json.loads(chat_data.read_text().splitlines()[0])
    e = enc.encode(row, p.data[0])
    trained = tok.decode([t for t, m in zip(e.ids, e.mask, strict=True) if m])
    untrained = tok.decode([t for t, m in zip(e.ids, e.mask, strict=True) if not m])
    answer = row["messages"][1]["content"]
    assert trained.startswith(answer)  # the answer and the template's end-of-turn
    assert "What is" in untrained and "What is" not in trained
    assert "The answer is" not in untrained


def test_overlong_samples_dropped_or_truncated_and_counted(tmp_path, tiny_llama):
    from llmjobs.jobs.train import data

    rows = [{"prompt": "What is 1 + 1? ", "completion": "two " * n} for n in (2, 5, 80, 120)]
    path = tmp_path / "pc.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dropped = data.build(_params(tiny_llama, path, max_length=64), data.load_tokenizer(_params(tiny_llama, path)))
    assert (dropped.stats["samples"], dropped.stats["dropped_overlong"]) == (2, 2)
    p = _params(tiny_llama, path, max_length=64, overlong="truncate")
    cut = data.build(p, data.load_tokenizer(p))
    assert (cut.stats["samples"], cut.stats["truncated"]) == (4, 2)
    assert cut.lengths.max() == 64


def test_source_weights_subsample_and_repeat(tmp_path, tiny_llama, chat_data):
    from llmjobs.jobs.train import data

    p = _params(tiny_llama, chat_data)
    p = p.model_copy(update={"data": [p.data[0].model_copy(update={"weight": 0.5}),
                                      p.data[0].model_copy(update={"weight": 2.0})]})
    ds = data.build(p, data.load_tokenizer(p))
    assert [s["samples"] for s in ds.stats["sources"]] == [48, 192]
