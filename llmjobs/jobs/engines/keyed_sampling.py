"""Sampling whose randomness belongs to the request, not to the batch.

Each row of a decoding batch carries a key (the prompt's seed and the sample's index). The uniform number that
picks the row's next token is a hash of (key, step), so a prompt's samples are the same whether it is decoded
alone or among hundreds of others: the transformers engine can batch many prompts together and keep vLLM's
per-request seeds. One number per row and step (inverse-CDF sampling), so the cost does not grow with the
vocabulary beyond the cumulative sum that top-p needs anyway.
"""

from __future__ import annotations

_MASK = 0xFFFFFFFF


def _mix(x):
    """A 32-bit integer hash on int64 tensors (values stay below 2**32, products below 2**63)."""
    x = x & _MASK
    x = x ^ (x >> 16)
    x = (x * 0x045D9F3B) & _MASK
    x = x ^ (x >> 16)
    x = (x * 0x045D9F3B) & _MASK
    return x ^ (x >> 16)


def row_keys(seeds, samples):
    """One key per row from the prompt's seed and the sample's index (int64 tensors of one shape)."""
    return _mix(_mix(seeds) ^ _mix(samples + 0x9E3779B9))


def uniforms(keys, step: int):
    """A uniform number in [0, 1) per row for decoding step ``step``."""
    import torch

    h = _mix(keys ^ _mix(torch.full_like(keys, step) + 0x7F4A7C15))
    return (h >> 8).to(torch.float64) / float(1 << 24)


def pick(logits, keys, step: int, temperature: float, top_p: float):
    """The next token of each row: greedy at temperature 0, else sampled from the temperature-scaled
    distribution cut to its top-p nucleus, with the row's own uniform number."""
    import torch

    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.to(torch.float64) / temperature, dim=-1)
    if top_p < 1.0:
        probs, order = probs.sort(dim=-1, descending=True)
        cdf = probs.cumsum(dim=-1)
        # keep the smallest prefix whose mass reaches top_p (the first token always)
        probs = probs.masked_fill(cdf - probs >= top_p, 0.0)
    else:
        order = None
    cdf = probs.cumsum(dim=-1)
    target = uniforms(keys, step) * cdf[:, -1]
    index = torch.searchsorted(cdf, target[:, None], right=True).clamp_(max=probs.shape[-1] - 1)
    return (order.gather(-1, index) if order is not None else index).squeeze(-1)
