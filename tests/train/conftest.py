"""Fixtures of the training tests: the tiny Llama and tokenizer of the generation tests (built on disk, no
downloads), a tokenizer-only directory for from-scratch models, and a small chat dataset the model can learn
(arithmetic with a <think> block and a final answer line)."""

from __future__ import annotations

import importlib.util
import json
import random
import shutil
from pathlib import Path

import pytest

_GEN = Path(__file__).resolve().parents[1] / "eval" / "generation" / "conftest.py"
_spec = importlib.util.spec_from_file_location("_generation_fixtures", _GEN)
_gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_gen)  # type: ignore[union-attr]

build_tiny_llama = _gen.build_tiny_llama
DATA = _gen.DATA

# hidden 128 with 2 heads: head_dim 64, what vLLM's CPU attention needs
TINY_CONFIG = {"model_type": "llama", "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
               "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 1024,
               "tie_word_embeddings": False}


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
def tokenizer_dir(tmp_path_factory, tiny_llama) -> Path:
    """The tokenizer alone, for ``init: {config, tokenizer}``."""
    d = tmp_path_factory.mktemp("tokenizer")
    for f in tiny_llama.iterdir():
        if "token" in f.name or f.name.endswith(".jinja"):
            shutil.copy(f, d / f.name)
    return d


def chat_records(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        steps = " ".join(["Let me add."] * rng.randint(0, 6))
        out.append({"messages": [
            {"role": "user", "content": f"What is {a} + {b}?"},
            {"role": "assistant", "content": f"<think> {steps} {a} + {b} = {a + b} </think> The answer is {a + b}."},
        ]})
    return out


@pytest.fixture(scope="session")
def chat_data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("chat") / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in chat_records(96)))
    return path
