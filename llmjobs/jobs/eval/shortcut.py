"""The recipe behind ``llmjobs eval``: one ``eval.self_consistency`` step, built from command-line options.

Light on purpose (the CLI imports it on the login node): it only builds a dict, which the CLI submits like
any recipe (``recipes.plan_from_dict``), so ``--set`` overrides and validation work the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def eval_recipe(model: str, data: str, samples: int, *, adapter: str | None = None, preset: str | None = None,
                nodes: int = 1, gpus_per_node: int = 0, cpus: int | None = None, walltime: str | None = None,
                name: str | None = None, **params: Any) -> dict[str, Any]:
    """A one-step recipe. Paths are made absolute (the job runs elsewhere); ``params`` are any other
    ``eval.self_consistency`` params (template, temperature, max_tokens, engine, ...)."""
    step_params: dict[str, Any] = {"model": _abs(model), "data": _abs(data), "samples": samples}
    if adapter:
        step_params["adapter"] = _abs(adapter)
    if preset:
        step_params["preset"] = preset
    step_params.update({k: v for k, v in params.items() if v is not None})
    resources: dict[str, Any] = {"nodes": nodes, "gpus_per_node": gpus_per_node}
    if cpus:
        resources["cpus"] = cpus
    if walltime:
        resources["walltime"] = walltime
    stem = "".join(c if c.isalnum() or c in "_-" else "-" for c in Path(data).stem)[:40] or "data"
    return {"name": name or f"eval-{stem}",
            "steps": {"eval": {"kind": "eval.self_consistency", "params": step_params, "resources": resources}}}


def _abs(path: str) -> str:
    """A local path becomes absolute; anything that does not exist here (a hub name) is left alone."""
    p = Path(path).expanduser()
    return str(p.resolve()) if p.exists() else path
