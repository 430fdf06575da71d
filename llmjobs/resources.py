"""Abstract resources a step asks for, and walltime parsing shared by recipes and profiles."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

_WALLTIME = re.compile(r"^(?:(\d+)-)?(\d+):([0-5]?\d):([0-5]?\d)$|^(?:(\d+)-)?(\d+):([0-5]?\d)$|^(\d+)$")


def parse_walltime(value: str | int) -> int:
    """Seconds from ``HH:MM:SS``, ``D-HH:MM:SS``, ``MM:SS``... (Slurm/PBS forms) or plain minutes.

    An int, or a string of digits alone, means minutes (as Slurm's ``--time=30``).
    """
    if isinstance(value, bool):  # YAML's yes/no: a ValueError so pydantic reports it on the field
        raise ValueError("walltime must be HH:MM:SS, D-HH:MM:SS or minutes")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError("walltime must be positive")
        return value * 60
    text = str(value).strip()
    m = _WALLTIME.match(text)
    if not m:
        raise ValueError(f"walltime {value!r} is not HH:MM:SS, D-HH:MM:SS, H:MM or a number of minutes")
    d1, h, mi, s, d2, mi2, s2, minutes = m.groups()
    if minutes is not None:
        seconds = int(minutes) * 60
    elif h is not None:
        seconds = int(d1 or 0) * 86400 + int(h) * 3600 + int(mi) * 60 + int(s)
    else:
        seconds = int(d2 or 0) * 86400 + int(mi2) * 60 + int(s2)
    if seconds <= 0:
        raise ValueError("walltime must be positive")
    return seconds


def format_walltime(seconds: int) -> str:
    """``HH:MM:SS`` with hours past 24 kept as hours (what PBS and Slurm both accept)."""
    h, rest = divmod(int(seconds), 3600)
    m, s = divmod(rest, 60)
    return f"{h:02d}:{m:02d}:{s:02d}"


class Resources(BaseModel):
    """What one shard needs. The cluster profile maps this onto what its scheduler sells."""

    model_config = ConfigDict(extra="forbid")

    nodes: int = Field(1, ge=1, description="nodes per shard; one task per node")
    gpus_per_node: int = Field(0, ge=0)
    cpus: int = Field(1, ge=1, description="CPU cores per node")
    mem_gb: float | None = Field(None, gt=0, description="memory per node in GB; None = scheduler default")
    walltime: str = Field("01:00:00", description="HH:MM:SS, D-HH:MM:SS or minutes")

    @field_validator("walltime", mode="before")
    @classmethod
    def _check_walltime(cls, v: object) -> str:
        return format_walltime(parse_walltime(v))  # type: ignore[arg-type]

    @property
    def walltime_seconds(self) -> int:
        return parse_walltime(self.walltime)
