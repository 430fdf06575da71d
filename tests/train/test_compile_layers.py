"""torch.compile of the decoder layers (``torch_compile``, on by default on GPUs): the compiled layers compute
what the eager ones do on packed rows (same loss, same gradients), every layer shares one compiled graph
whatever the row's length after the first (a graph per layer or per length would hit dynamo's recompile limit on a 24-layer
model and silently fall back to eager), and ``auto`` means compiled on GPUs only, never over a quantized base.

On this CPU-only machine inductor compiles C++ kernels; on a GPU it emits Triton kernels from the same graph
(the GPU path is measured by bench/train_throughput.py on the lent H200)."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from llmjobs.jobs.train import modeling
from llmjobs.jobs.train.params import LoraParams, SFTParams


def _packed(lengths: list[int], vocab: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (1, sum(lengths)), generator=g)
    pos = torch.cat([torch.arange(n) for n in lengths])[None]
    return ids, pos


def test_compiled_layers_match_eager_with_one_graph_for_all_layers_and_lengths():
    # a first graph for the first length, then one with the token dimension symbolic for every other
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    config = transformers.LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    torch.manual_seed(0)
    eager = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    compiled = copy.deepcopy(eager)
    assert modeling.compile_layers(compiled) == 3
    for k, lengths in enumerate(([40, 25, 63], [17, 90], [33, 33, 33, 12], [5, 70])):
        ids, pos = _packed(lengths, config.vocab_size, k)
        losses, grads = [], []
        for model in (eager, compiled):
            model.zero_grad()
            loss = model(input_ids=ids, position_ids=pos, labels=ids, use_cache=False).loss
            loss.backward()
            losses.append(float(loss.detach()))
            grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
        assert losses[1] == pytest.approx(losses[0], rel=1e-5), lengths
        assert torch.allclose(grads[1], grads[0], rtol=1e-4, atol=1e-6), lengths
    assert counters["stats"]["unique_graphs"] <= 2, dict(counters["stats"])


def test_compile_defaults():
    init = {"config": {"hidden_size": 8}, "tokenizer": "tok"}
    sft = SFTParams.model_construct(init=init, data=[])
    assert modeling.compile_wanted(sft, "cuda") and not modeling.compile_wanted(sft, "cpu")
    # padded rows with an attention mask ran slower compiled on the H200: auto leaves them eager
    assert not modeling.compile_wanted(SFTParams.model_construct(init=init, data=[], packing=False), "cuda")
    assert modeling.compile_wanted(SFTParams.model_construct(init=init, data=[], torch_compile=True), "cpu")
    assert not modeling.compile_wanted(SFTParams.model_construct(init=init, data=[], torch_compile=False), "cuda")
    assert modeling.compile_wanted(LoraParams.model_construct(model="m", data=[]), "cuda")
    assert not modeling.compile_wanted(SFTParams.model_construct(init=init, data=[], deepspeed={"zero": 3}), "cuda")
    # bitsandbytes' 4-bit layers are not traceable: a QLoRA base stays eager unless asked
    assert not modeling.compile_wanted(LoraParams.model_construct(model="m", data=[], quantize="4bit"), "cuda")


def test_the_decoder_stack_is_found_in_a_peft_model():
    peft = pytest.importorskip("peft")
    config = transformers.LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=2)
    model = transformers.AutoModelForCausalLM.from_config(config)
    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules="all-linear"))
    layers = modeling.decoder_layers(wrapped)
    assert len(layers) == 2 and type(layers[0]).__name__ == "LlamaDecoderLayer"


def test_compiled_chunk_loss_matches_eager_with_at_most_two_graphs():
    # the chunked cross-entropy compiles its per-chunk loss and gradient on GPUs; the last chunk of each
    # micro-batch is shorter, so the row count must become symbolic instead of a graph per length
    from torch._dynamo.utils import counters

    from llmjobs.jobs.train import fused_loss

    torch._dynamo.reset()
    counters.clear()
    compiled = fused_loss._chunk_function(True)
    assert compiled is not fused_loss.chunk_loss_and_grad
    g = torch.Generator().manual_seed(0)
    for rows in (64, 37, 64, 11, 50):
        logits = (torch.randn(rows, 301, generator=g) * 3).to(torch.bfloat16)
        target = torch.randint(0, 301, (rows,), generator=g)
        target[::4] = fused_loss.IGNORE
        want_loss, want_grad = fused_loss.chunk_loss_and_grad(logits, target, torch.bfloat16)
        loss, grad = compiled(logits, target, torch.bfloat16)
        assert float(loss) == pytest.approx(float(want_loss), rel=1e-5), rows
        assert grad.dtype == torch.bfloat16 and not grad[::4].any()
        torch.testing.assert_close(grad.float(), want_grad.float(), atol=1e-2, rtol=1e-2)
        # the gradient of the summed loss: softmax minus one-hot on the kept rows
        ref = torch.softmax(logits.float(), -1) - torch.nn.functional.one_hot(target.clamp(min=0), 301)
        ref[target == fused_loss.IGNORE] = 0
        torch.testing.assert_close(grad.float(), ref, atol=1e-2, rtol=1e-2)
    assert counters["stats"]["unique_graphs"] <= 2, dict(counters["stats"])
