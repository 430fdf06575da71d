"""Which attention implementation trains packed rows, and PyTorch's varlen FlashAttention for transformers.

Packed rows carry position ids that restart at 0 for every document and no attention mask:
- ``flash_attention_2/3`` (when the package is installed): transformers derives cu_seqlens from the position
  ids and calls the varlen kernel; no mask is materialised.
- ``varlen`` (registered here): ``torch.nn.attention.varlen.varlen_attn``, PyTorch's own variable-length
  FlashAttention (CUDA only); the loop passes ``cu_seq_lens_q`` / ``max_length_q`` through the model's
  forward kwargs, and transformers builds no mask for a custom implementation.
- ``sdpa`` / ``eager`` / ``flex_attention``: transformers finds the position-id resets and builds a
  block-causal mask (leak-free, but dense: sdpa loses its flash kernel). The CPU default.
"""

from __future__ import annotations

import importlib.util
import inspect
from typing import Any

VARLEN = "llmjobs_varlen"


def resolve(requested: str, device_type: str, packing: bool) -> str:
    if requested == "varlen":
        return VARLEN
    if requested != "auto":
        return requested
    if device_type != "cuda":
        return "sdpa"
    if importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    if packing and varlen_available():
        return VARLEN
    return "sdpa"


def varlen_available() -> bool:
    try:
        from torch.nn.attention import varlen  # noqa: F401
    except ImportError:
        return False
    return True


def _varlen_forward(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, scaling: float | None = None,
                    dropout: float = 0.0, **kwargs: Any) -> tuple[Any, None]:
    import torch
    from torch.nn.attention.varlen import varlen_attn

    # transformers hands (batch=1, heads, tokens, dim); the kernel wants (tokens, heads, dim)
    if query.shape[0] != 1:
        raise ValueError("varlen attention trains padding-free packed rows (batch 1)")
    cu = kwargs.get("cu_seq_lens_q")
    max_len = kwargs.get("max_length_q")
    if cu is None:
        pos = kwargs["position_ids"].reshape(-1)
        starts = torch.nonzero(pos == 0).reshape(-1)
        cu = torch.cat([starts, torch.tensor([pos.numel()], device=pos.device)]).to(torch.int32)
        max_len = int((cu[1:] - cu[:-1]).max())
    q = query[0].transpose(0, 1)
    k = key[0].transpose(0, 1)
    v = value[0].transpose(0, 1)
    if k.shape[1] != q.shape[1]:  # grouped-query attention: repeat kv heads
        rep = q.shape[1] // k.shape[1]
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
    dtype = q.dtype
    if dtype not in (torch.bfloat16, torch.float16):
        # under autocast the rotary embedding hands back fp32; the kernel takes 16-bit only
        half = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else torch.bfloat16
        q, k, v = q.to(half), k.to(half), v.to(half)
    # max_len stays as given: under torch.compile with dynamic shapes it is symbolic, and int() would
    # specialise the graph on it (a recompile for every new longest document)
    out = varlen_attn(q, k, v, cu, cu, max_len, max_len, scale=scaling, **_CAUSAL)
    return out.to(dtype).unsqueeze(0), None


def _causal_kwargs() -> dict[str, Any]:
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return {}
    params = inspect.signature(varlen_attn).parameters
    if "is_causal" in params:
        return {"is_causal": True}
    return {"window_size": (-1, 0)}


_CAUSAL: dict[str, Any] = {}


def register() -> None:
    """Make ``attn_implementation="llmjobs_varlen"`` known to transformers."""
    from transformers import AttentionInterface

    _CAUSAL.update(_causal_kwargs())
    AttentionInterface.register(VARLEN, _varlen_forward)
