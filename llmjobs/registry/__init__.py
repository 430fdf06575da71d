"""The registry: every run, step, shard, scheduler attempt, event and artifact, in SQLite or PostgreSQL."""

from llmjobs.registry.models import Artifact, Attempt, Event, Run, Shard, Step
from llmjobs.registry.store import Registry

__all__ = ["Artifact", "Attempt", "Event", "Registry", "Run", "Shard", "Step"]
