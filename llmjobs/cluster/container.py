"""Container specification (Singularity/Apptainer) for a profile or a step."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ContainerSpec(BaseModel):
    """``container: {runtime, image, binds, env, gpu}`` in a profile or a recipe step."""

    model_config = ConfigDict(extra="forbid")

    runtime: Literal["singularity", "apptainer"] = "singularity"
    image: str = Field(..., description="path of the .sif image on the shared filesystem")
    binds: list[str] = Field(default_factory=list, description="SRC[:DST[:OPTS]] bind mounts")
    env: dict[str, str] = Field(default_factory=dict, description="passed as SINGULARITYENV_*/APPTAINERENV_*")
    gpu: bool = Field(True, description="add --nv so the job sees the node's NVIDIA GPUs")


def env_prefix(spec: ContainerSpec) -> str:
    return "APPTAINERENV_" if spec.runtime == "apptainer" else "SINGULARITYENV_"


def container_env(spec: ContainerSpec | None, env: dict[str, str]) -> dict[str, str]:
    """Variables for the host side of ``singularity exec``: each becomes ``SINGULARITYENV_NAME``.

    The runtime strips the prefix inside the container, so the job sees ``NAME`` even where the image's
    own environment would shadow a plainly inherited variable.
    """
    if spec is None:
        return dict(env)
    merged = {**env, **spec.env}
    return {f"{env_prefix(spec)}{k}": v for k, v in merged.items()}


def exec_prefix(spec: ContainerSpec | None) -> list[str]:
    """argv that runs a command inside the image: ``singularity exec --nv --bind a,b IMAGE``."""
    if spec is None:
        return []
    argv = [spec.runtime, "exec"]
    if spec.gpu:
        argv.append("--nv")
    if spec.binds:
        argv += ["--bind", ",".join(spec.binds)]
    argv.append(spec.image)
    return argv


def python_command(spec: ContainerSpec | None, python: str = "python3") -> str:
    """The interpreter string for submitit's ``python=`` parameter, inside the container if any."""
    import shlex

    return shlex.join([*exec_prefix(spec), python])
