"""Fixtures of the synthesis tests: the tiny Llama of the generation tests (built on disk, no downloads)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_GEN = Path(__file__).resolve().parents[1] / "eval" / "generation" / "conftest.py"


def _generation_fixtures():
    spec = importlib.util.spec_from_file_location("_generation_conftest", _GEN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    gen = _generation_fixtures()
    mgsm = gen.DATA / "mgsm_ja.tsv"
    if not mgsm.exists():
        pytest.skip(f"{mgsm} not found (set LLMJOBS_TEST_DATA to the folder holding the shared data files)")
    return gen.build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), mgsm)


@pytest.fixture(scope="session")
def vllm_options() -> dict:
    return dict(_generation_fixtures().VLLM_TEST_OPTIONS)
