"""The real server's captured outputs (``tests/pbs/captures``), read by the PBS tests."""

from __future__ import annotations

from pathlib import Path

import pytest

CAPTURES = Path(__file__).parent / "captures"


def capture(name: str) -> str:
    return (CAPTURES / name).read_text()


def capture_rc(name: str) -> int:
    return int((CAPTURES / f"{name}.rc").read_text())


def capture_stderr(name: str) -> str:
    path = CAPTURES / f"{name}.stderr"
    return path.read_text() if path.exists() else ""


@pytest.fixture
def captures() -> Path:
    return CAPTURES
