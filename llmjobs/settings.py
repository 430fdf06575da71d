"""Where llmjobs keeps its state: ``$LLMJOBS_HOME`` (default ``~/.llmjobs``) and the registry URL."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("LLMJOBS_HOME") or Path.home() / ".llmjobs").expanduser()


def registry_url(explicit: str | None = None) -> str:
    """``--registry`` wins, then ``$LLMJOBS_REGISTRY``, then SQLite under ``$LLMJOBS_HOME``."""
    url = explicit or os.environ.get("LLMJOBS_REGISTRY")
    if url:
        return url
    return f"sqlite:///{home() / 'registry.db'}"
