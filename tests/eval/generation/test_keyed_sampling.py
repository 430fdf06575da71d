"""Keyed sampling (the transformers engine's per-request randomness): the draws follow the distribution, cut
to the top-p nucleus, and depend only on a row's key and step."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from llmjobs.jobs.engines.keyed_sampling import pick, row_keys


def _draws(probs: list[float], rows: int, temperature: float = 1.0, top_p: float = 1.0, step: int = 0):
    logits = torch.log(torch.tensor([probs] * rows, dtype=torch.float64))
    keys = row_keys(torch.full((rows,), 7, dtype=torch.int64), torch.arange(rows, dtype=torch.int64))
    return pick(logits, keys, step, temperature, top_p)


def test_frequencies_follow_the_distribution():
    probs = [0.5, 0.3, 0.15, 0.05]
    draws = _draws(probs, 20000)
    freq = torch.bincount(draws, minlength=4).double() / 20000
    assert torch.allclose(freq, torch.tensor(probs, dtype=torch.float64), atol=0.015)


def test_top_p_keeps_only_the_nucleus_renormalised():
    draws = _draws([0.05, 0.5, 0.3, 0.15], 20000, top_p=0.75)  # nucleus: tokens 1 and 2 (0.5 + 0.3 >= 0.75)
    freq = torch.bincount(draws, minlength=4).double() / 20000
    assert freq[0] == 0 and freq[3] == 0
    assert abs(freq[1] - 0.5 / 0.8) < 0.015


def test_temperature_sharpens_and_zero_is_greedy():
    probs = [0.4, 0.35, 0.25]
    cold = torch.bincount(_draws(probs, 20000, temperature=0.3), minlength=3).double() / 20000
    sharp = torch.tensor(probs, dtype=torch.float64) ** (1 / 0.3)
    assert torch.allclose(cold, sharp / sharp.sum(), atol=0.015)  # p0 0.54 instead of 0.4
    assert set(_draws(probs, 50, temperature=0.0).tolist()) == {0}


def test_a_rows_draw_depends_on_its_key_and_step_only():
    probs = [0.25] * 4
    a = _draws(probs, 64, step=3)
    assert torch.equal(a[:16], _draws(probs, 16, step=3))  # fewer rows in the batch: the same draws
    assert not torch.equal(a, _draws(probs, 64, step=4))  # the next step: other draws
