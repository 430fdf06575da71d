"""Fixtures of the scoring tests: one grading pool per module (starting one costs about a second)."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def shared_data(name: str) -> Path:
    """The public data files kept beside the repository (see the data README); tests skip without them."""
    import os

    root = Path(os.environ.get("LLMJOBS_TEST_DATA", DATA))
    path = root / name
    if not path.exists():
        if os.environ.get("CI") == "true":  # in CI missing data is a failure, not a skip
            pytest.fail(f"{path} not found (set LLMJOBS_TEST_DATA)")
        pytest.skip(f"{path} not found (set LLMJOBS_TEST_DATA to the folder holding the shared data files)")
    return path


@pytest.fixture(scope="module")
def grader():
    pytest.importorskip("math_verify")
    pytest.importorskip("pebble")
    from llmjobs.jobs.eval.grading import Grader

    with Grader(workers=2, timeout_s=10.0) as g:
        yield g
