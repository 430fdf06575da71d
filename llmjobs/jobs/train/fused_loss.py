"""Cross-entropy through the output projection in chunks, without the full-vocabulary logits.

With a 99k vocabulary, a 16k-token micro-batch has 1.6 G logits: 3 GiB in bf16, then 6 GiB again for each fp32
copy the plain ``cross_entropy(logits.float())`` path keeps (upcast, log-softmax saved for backward, its
gradient). Here the projection, the loss and both gradients are computed chunk by chunk in the forward pass
(the gradients of a sum of losses need nothing but the softmax), so only one chunk's logits ever exist; the
backward pass only scales the stored gradients. The arithmetic is the plain path's: logits from a bf16 (or
the weights') matmul, log-sum-exp in fp32, gradients cast back to the matmul dtype.
"""

from __future__ import annotations

from typing import Any

IGNORE = -100
CHUNK_ELEMENTS = 2**28  # logits per chunk (1 GiB in fp32): big matmuls, little memory


def _chunk_rows(vocab: int) -> int:
    return max(256, CHUNK_ELEMENTS // max(1, vocab) // 256 * 256)


def chunk_loss_and_grad(logits: Any, target: Any, dtype: Any) -> tuple[Any, Any]:
    """One chunk: the summed loss and d(loss)/d(logits) = softmax - one_hot(target) (zero on ignored rows),
    in ``dtype``. Compiled on GPUs, where it becomes one fused kernel over the bf16 logits (a dozen passes
    over an fp32 copy in eager mode)."""
    import torch

    x = logits.float()
    lse = torch.logsumexp(x, dim=-1)
    valid = target != IGNORE
    safe = torch.where(valid, target, 0)
    picked = x.gather(1, safe[:, None])[:, 0]
    loss = ((lse - picked) * valid).sum()
    hit = torch.arange(x.shape[1], device=x.device)[None, :] == safe[:, None]
    g = (x - lse[:, None]).exp() - hit.to(x.dtype)
    return loss, (g * valid[:, None]).to(dtype)


_COMPILED: Any = None


def _chunk_function(compiled: bool) -> Any:
    global _COMPILED
    if not compiled:
        return chunk_loss_and_grad
    if _COMPILED is None:
        import torch

        # the last chunk of each micro-batch is shorter: dynamo's automatic dynamic shapes make the row count
        # symbolic on the second shape it sees (one more graph), the vocabulary stays static
        _COMPILED = torch.compile(chunk_loss_and_grad)
    return _COMPILED


def _make_function() -> Any:
    import torch

    class LinearCrossEntropy(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, hidden: Any, weight: Any, target: Any, dtype: Any, compiled: bool) -> Any:
            rows = _chunk_rows(weight.shape[0])
            chunk = _chunk_function(compiled)
            w = weight.to(dtype)
            want_w = ctx.needs_input_grad[1]
            want_h = ctx.needs_input_grad[0]
            grad_h = torch.empty(hidden.shape, dtype=dtype, device=hidden.device) if want_h else None
            grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_w else None
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            for a in range(0, hidden.shape[0], rows):
                h = hidden[a:a + rows].to(dtype)
                loss, g = chunk(h @ w.T, target[a:a + rows], dtype)
                total += loss
                if grad_h is not None:
                    grad_h[a:a + rows] = g @ w
                if grad_w is not None:
                    grad_w += g.T @ h  # accumulated over chunks in fp32
            ctx.save_for_backward(grad_h, grad_w)
            ctx.dtypes = (hidden.dtype, weight.dtype)
            return total

        @staticmethod
        def backward(ctx: Any, grad_out: Any) -> Any:
            grad_h, grad_w = ctx.saved_tensors
            dh = (grad_h * grad_out).to(ctx.dtypes[0]) if grad_h is not None else None
            dw = (grad_w * grad_out).to(ctx.dtypes[1]) if grad_w is not None else None
            return dh, dw, None, None, None

    return LinearCrossEntropy


_FUNCTION: Any = None


def linear_cross_entropy_sum(hidden: Any, weight: Any, target: Any, dtype: Any = None, compiled: bool = False) -> Any:
    """Sum over tokens of cross_entropy(hidden @ weight.T, target), ignoring IGNORE targets.

    ``hidden`` (tokens, hidden), ``weight`` (vocab, hidden), ``target`` (tokens,); ``dtype``: the matmul dtype
    (the autocast dtype under autocast, else the weights'); ``compiled``: the per-chunk loss and gradient
    through torch.compile. Returns an fp32 scalar.
    """
    global _FUNCTION
    if _FUNCTION is None:
        _FUNCTION = _make_function()
    return _FUNCTION.apply(hidden, weight, target, dtype or weight.dtype, compiled)


class projection_skipped:
    """Inside this context the model's output projection hands back its input (the final hidden states), so
    the forward pass computes no logits; the loss then goes through ``linear_cross_entropy_sum``."""

    def __init__(self, head: Any) -> None:
        self.head = head

    def __enter__(self) -> Any:
        self.head.forward = _identity
        return self.head

    def __exit__(self, *a: object) -> None:
        del self.head.forward  # back to the class's forward


def _identity(x: Any) -> Any:
    return x


def fusable_head(model: Any) -> Any:
    """The output projection when the fused loss applies to it (a plain bias-free Linear), else None."""
    import torch

    get = getattr(model, "get_output_embeddings", None)
    head = get() if get is not None else None
    if type(head) is not torch.nn.Linear or head.bias is not None:
        return None
    return head
