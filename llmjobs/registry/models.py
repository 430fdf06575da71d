"""SQLAlchemy models: run -> step -> shard -> attempt, with an append-only event log and artifacts.

Schema changes go through Alembic migrations in ``migrations/versions``; never edit a released revision.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(dt: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every one the registry stores is UTC."""
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: DateTime(timezone=True)}  # noqa: RUF012


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), index=True)
    recipe_path: Mapped[str | None] = mapped_column(Text)
    recipe: Mapped[dict[str, Any]]  # resolved recipe, overrides applied
    profile: Mapped[dict[str, Any]]  # resolved cluster profile
    backend: Mapped[str] = mapped_column(String(32))
    run_dir: Mapped[str] = mapped_column(Text)
    version: Mapped[str] = mapped_column(String(32))  # llmjobs version that submitted it
    # who submitted from where: a group sharing one PostgreSQL registry needs to tell runs apart (rev 0002)
    owner: Mapped[str | None] = mapped_column(String(100), index=True)
    submit_host: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    steps: Mapped[list[Step]] = relationship(back_populates="run", order_by="Step.position",
                                             cascade="all, delete-orphan")


class Step(Base):
    __tablename__ = "steps"
    __table_args__ = (UniqueConstraint("run_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    position: Mapped[int] = mapped_column(Integer)  # topological order
    kind: Mapped[str] = mapped_column(String(100))
    params: Mapped[dict[str, Any]]
    resources: Mapped[dict[str, Any]]
    after: Mapped[list[Any]]
    num_shards: Mapped[int] = mapped_column(Integer)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    requeues: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # rev 0003
    container: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    output_dir: Mapped[str] = mapped_column(Text)
    # a finished step's attempt count and first start / last end, stored when it settles so `status` of a
    # big finished run reads no attempt rows; None while the step is live or its attempts changed (rev 0004)
    attempts_count: Mapped[int | None] = mapped_column(Integer)
    first_started_at: Mapped[datetime | None]
    last_ended_at: Mapped[datetime | None]

    run: Mapped[Run] = relationship(back_populates="steps")
    shards: Mapped[list[Shard]] = relationship(back_populates="step", order_by="Shard.index",
                                               cascade="all, delete-orphan")


class Shard(Base):
    __tablename__ = "shards"
    # (step_id, status): status counts per step without reading every shard (rev 0004)
    __table_args__ = (UniqueConstraint("step_id", "index"), Index("ix_shards_step_id_status", "step_id", "status"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    step_id: Mapped[int] = mapped_column(ForeignKey("steps.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))

    step: Mapped[Step] = relationship(back_populates="shards")
    attempts: Mapped[list[Attempt]] = relationship(back_populates="shard", order_by="Attempt.number",
                                                   cascade="all, delete-orphan")


class Attempt(Base):
    """One scheduler job (or array task) that ran, or was meant to run, one shard."""

    __tablename__ = "attempts"
    __table_args__ = (UniqueConstraint("shard_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shard_id: Mapped[int] = mapped_column(ForeignKey("shards.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    backend: Mapped[str] = mapped_column(String(32))
    job_id: Mapped[str | None] = mapped_column(String(100), index=True)
    folder: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    nodes: Mapped[str | None] = mapped_column(Text)
    stdout: Mapped[str | None] = mapped_column(Text)
    stderr: Mapped[str | None] = mapped_column(Text)
    submitted_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    # who is submitting it: an attempt still "submitting" whose submitter process is gone was cut off (rev 0004)
    submitter_host: Mapped[str | None] = mapped_column(String(200))
    submitter_pid: Mapped[int | None] = mapped_column(Integer)

    shard: Mapped[Shard] = relationship(back_populates="attempts")


class Event(Base):
    """Append-only history of every status transition."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64), index=True)
    entity: Mapped[str] = mapped_column(String(16))  # run | step | shard | attempt
    entity_id: Mapped[str] = mapped_column(String(64))
    old: Mapped[str | None] = mapped_column(String(16))
    new: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class Artifact(Base):
    """A step's output: what it is, how big, its checksum and small metadata (row counts, metrics)."""

    __tablename__ = "artifacts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    step_id: Mapped[int] = mapped_column(ForeignKey("steps.id", ondelete="CASCADE"), index=True)
    shard_index: Mapped[int | None] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(32))
    size: Mapped[int | None] = mapped_column(Integer)
    checksum: Mapped[str | None] = mapped_column(String(80))
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
