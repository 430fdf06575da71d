"""The registry: every run, step, shard, scheduler attempt, event and artifact, in SQLite or PostgreSQL.

The names below load on first use (PEP 562), so ``llmjobs.registry.migrate.HEAD`` is readable without
SQLAlchemy: ``llmjobs.fast_status`` checks a SQLite registry's revision with ``sqlite3`` alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmjobs.registry.models import Artifact, Attempt, Event, Run, Shard, Step
    from llmjobs.registry.store import Registry

__all__ = ["Artifact", "Attempt", "Event", "Registry", "Run", "Shard", "Step"]


def __getattr__(name: str):
    if name == "Registry":
        from llmjobs.registry.store import Registry

        return Registry
    if name in __all__:
        from llmjobs.registry import models

        return getattr(models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
