"""Cluster profiles: which scheduler, where runs live, container, setup lines and scheduler options.

A profile is found by ``--cluster``: a path to a YAML file, or a name looked up as
``$LLMJOBS_HOME/clusters/NAME.yaml``, then ``./clusters/NAME.yaml``; ``local`` is built in.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from llmjobs import settings
from llmjobs.cluster.container import ContainerSpec
from llmjobs.errors import UserError

BACKENDS = {
    "local": "llmjobs.cluster.backends.local:LocalBackend",
    "slurm": "llmjobs.cluster.backends.slurm:SlurmBackend",
    "pbs": "llmjobs.cluster.backends.pbs:PBSBackend",
}


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    backend: str = Field("local", description="local | slurm | pbs")
    work_dir: str | None = Field(None, description="shared directory for run outputs; default $LLMJOBS_HOME/runs")
    container: ContainerSpec | None = None
    setup: list[str] = Field(default_factory=list, description="shell lines run before each job")
    env: dict[str, str] = Field(default_factory=dict, description="environment of every job")
    scheduler: dict[str, Any] = Field(default_factory=dict, description="backend options (see README)")
    resources: dict[str, Any] = Field(default_factory=dict, description="resource map / limits (see README)")
    source: str | None = Field(None, description="file the profile came from", exclude=True)

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        if v not in BACKENDS:
            raise ValueError(f"unknown backend {v!r}; allowed: {', '.join(BACKENDS)}")
        return v

    def runs_dir(self) -> Path:
        if self.work_dir:
            return Path(os.path.expandvars(self.work_dir)).expanduser().absolute()
        return settings.home() / "runs"


LOCAL = Profile(name="local", backend="local")


def search_path() -> list[Path]:
    return [settings.home() / "clusters", Path.cwd() / "clusters"]


def load_profile(spec: str | None) -> Profile:
    if spec is None or spec == "local":
        return LOCAL
    path = Path(spec).expanduser()
    if not (path.suffix in (".yaml", ".yml") and path.exists()):
        candidates = [d / f"{spec}.yaml" for d in search_path()]
        found = [c for c in candidates if c.exists()]
        if not found:
            where = ", ".join(str(c) for c in candidates)
            raise UserError(f"unknown cluster profile {spec!r}: no file {where}; "
                            "pass a path to a profile YAML or one of the built-in names: local")
        path = found[0]
    return profile_from_file(path)


def profile_from_file(path: Path) -> Profile:
    from llmjobs.recipes import read_yaml_file  # recipes imports this module

    data = read_yaml_file(path, "cluster profile")  # unique keys, size limits, UTF-8: as for recipes
    if not isinstance(data, dict):
        raise UserError(f"{path}: a cluster profile is a mapping with at least 'backend'")
    data.setdefault("name", path.stem)
    try:
        profile = Profile.model_validate(data)
    except ValidationError as e:
        raise UserError(f"{path}: invalid cluster profile:\n{format_validation(e)}") from None
    profile.source = str(path)
    return profile


def format_validation(e: ValidationError, prefix: str = "") -> str:
    lines = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"])
        where = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "(top level)"
        lines.append(f"  {where}: {err['msg']}")
    return "\n".join(lines)


def backend_for(profile: Profile):
    from llmjobs import jobs

    cls = jobs.load(BACKENDS[profile.backend])
    return cls(profile)
