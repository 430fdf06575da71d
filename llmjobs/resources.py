"""Abstract resources a step asks for, and walltime parsing shared by recipes and profiles."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Slurm's documented --time forms, and nothing else (sbatch(1)): a bare number is minutes, two fields are
# minutes:seconds, three are hours:minutes:seconds; after "days-" come hours, hours:minutes or hours:minutes:seconds.
# The leading field is unbounded (e.g. 168:00:00); a later minutes or seconds field is 0-59.
WALLTIME_FORMS = ('"minutes", "minutes:seconds", "hours:minutes:seconds", "days-hours", "days-hours:minutes" '
                  'or "days-hours:minutes:seconds" (Slurm\'s forms; e.g. 90, 45:00, 04:00:00, 1-12, 2-00:30:00)')
_SUB = r"([0-5]?\d)"
_FORMS: list[tuple[re.Pattern[str], tuple[int, ...]]] = [  # pattern, seconds per captured field
    (re.compile(r"(\d+)"), (60,)),
    (re.compile(rf"(\d+):{_SUB}"), (60, 1)),
    (re.compile(rf"(\d+):{_SUB}:{_SUB}"), (3600, 60, 1)),
    (re.compile(r"(\d+)-(\d+)"), (86400, 3600)),
    (re.compile(rf"(\d+)-(\d+):{_SUB}"), (86400, 3600, 60)),
    (re.compile(rf"(\d+)-(\d+):{_SUB}:{_SUB}"), (86400, 3600, 60, 1)),
]


def parse_walltime(value: str | int) -> int:
    """Seconds from one of Slurm's time forms (see ``WALLTIME_FORMS``); an int is minutes, as in Slurm."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):  # YAML's yes/no, lists...: a ValueError
        raise ValueError(f"walltime {value!r} is not one of {WALLTIME_FORMS}")  # noqa: TRY004 (pydantic reports ValueError on the field)
    if isinstance(value, int):
        if value <= 0:
            raise ValueError("walltime must be positive")
        return value * 60
    text = value.strip()
    for pattern, units in _FORMS:
        m = pattern.fullmatch(text)
        if m:
            seconds = sum(int(g) * u for g, u in zip(m.groups(), units))
            if seconds <= 0:
                raise ValueError("walltime must be positive")
            return seconds
    raise ValueError(f"walltime {value!r} is not one of {WALLTIME_FORMS}")


def format_walltime(seconds: int) -> str:
    """``HH:MM:SS``, exact to the second, with hours past 24 kept as hours (what PBS and Slurm both accept)."""
    if seconds <= 0:
        raise ValueError("walltime must be positive")
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
    walltime: str = Field("01:00:00", description="hours:minutes:seconds, days-hours[:minutes[:seconds]], "
                          "minutes or minutes:seconds (Slurm's forms)")

    @field_validator("walltime", mode="before")
    @classmethod
    def _check_walltime(cls, v: object) -> str:
        return format_walltime(parse_walltime(v))  # type: ignore[arg-type]

    @property
    def walltime_seconds(self) -> int:
        return parse_walltime(self.walltime)
