"""Fixtures of the generation tests: a tiny Llama with its tokenizer, built on disk once per test session
(no downloads), and one engine of each kind shared by the session.

The tokenizer is a byte-level BPE trained on the shared MGSM-ja questions (so Japanese text round-trips),
with a chat template; the model has random weights, 2 layers, 2 heads of dimension 64 (vLLM's CPU attention
wants head_dim >= 64). Its outputs are noise, which is all the generation tests need: counts and keys.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

DATA = Path(os.environ.get("LLMJOBS_TEST_DATA", Path(__file__).resolve().parents[4] / "shared" / "data"))

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

# vLLM's CPU engine takes about a minute to start, so one engine serves every test of the session.
# enforce_eager skips torch.compile, which would add another half minute for a model this small.
VLLM_TEST_OPTIONS = {"max_model_len": 512, "llm_options": {"enforce_eager": True}}


def _corpus(mgsm: Path) -> list[str]:
    with open(mgsm, newline="", encoding="utf-8") as f:
        rows = [r[0] for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if r]
    extra = ["Solve the problem. Put the final answer in \\boxed{}.", "<think> Let me think. </think>",
             "The answer is 42.", "最終的な回答：", "以下は、タスクを説明する指示です。", "### 指示:", "### 応答:"]
    return rows + extra * 20


def build_tiny_llama(path: Path, mgsm: Path) -> Path:
    """Train the tokenizer, make the model, save both with save_pretrained; returns ``path``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1024, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(mgsm), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", model_max_length=1024)
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                         bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                         pad_token_id=fast.pad_token_id, tie_word_embeddings=False)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def mgsm_ja() -> Path:
    path = DATA / "mgsm_ja.tsv"
    if not path.exists():
        pytest.skip(f"{path} not found (set LLMJOBS_TEST_DATA to the folder holding the shared data files)")
    return path


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, mgsm_ja) -> Path:
    pytest.importorskip("transformers")
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), mgsm_ja)


@pytest.fixture(scope="session")
def mgsm_prompts(tiny_llama, mgsm_ja) -> list[tuple[str, str]]:
    """(id, prompt) for the first problems of MGSM-ja, rendered with the tiny model's chat template."""
    from transformers import AutoTokenizer

    from llmjobs.jobs.eval.data import load_problems
    from llmjobs.jobs.eval.prompts import render_prompt

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    problems = load_problems(mgsm_ja, preset="mgsm_ja", limit=12)
    return [(p.id, render_prompt(p, "ja_instruction", tokenizer)) for p in problems]


@pytest.fixture(scope="session")
def vllm_engine(tiny_llama):
    pytest.importorskip("vllm")
    from llmjobs.jobs.engines import make_engine

    engine = make_engine("vllm", str(tiny_llama), **VLLM_TEST_OPTIONS)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def hf_engine(tiny_llama):
    from llmjobs.jobs.engines import make_engine

    engine = make_engine("hf", str(tiny_llama))
    yield engine
    engine.close()
