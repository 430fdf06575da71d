"""The ``python`` kind: call ``params.function`` (``module:function``) as ``function(ctx, **other_params)``.

At submit the function is checked without importing anything: the module must be findable on this Python's
path (the job runs with the submitter's environment), and when it is a plain source file the name before the
first dot of the attribute path must be defined at its top level. Importing the module could be slow or have
side effects (torch, CUDA, a training script), so that is left to the job; a module that defines names
dynamically (``__getattr__``, ``from x import *``) is only checked for being findable.
"""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.util
import sys

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmjobs import jobs
from llmjobs.jobs.context import StepContext

FUNCTION = r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"


class PythonParams(BaseModel):
    model_config = ConfigDict(extra="allow")
    function: str = Field(..., pattern=FUNCTION, description="'package.module:function'")

    @field_validator("function")
    @classmethod
    def _findable(cls, v: str) -> str:
        if "${" not in v:
            check_function(v)
        return v


def _spec(module: str):
    """The module's spec, found without executing any package's ``__init__``; None if it is not there."""
    parts = module.split(".")
    if parts[0] in sys.modules or parts[0] in sys.builtin_module_names:
        try:
            spec = importlib.util.find_spec(parts[0])
        except (ImportError, ValueError):
            return None
    else:
        spec = importlib.machinery.PathFinder.find_spec(parts[0], sys.path)
    for i, part in enumerate(parts[1:], 1):
        if spec is None or not spec.submodule_search_locations:
            return None
        spec = importlib.machinery.PathFinder.find_spec(".".join(parts[: i + 1]), spec.submodule_search_locations)
    return spec


def _top_level_names(body: list[ast.stmt]) -> set[str] | None:
    """Names a module defines at its top level (also inside top-level ``if``/``try``/``with`` blocks, e.g. an
    optional import); None when it may define others dynamically (``__getattr__``, ``import *``)."""
    names: set[str] = set()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name == "__getattr__":
                return None
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name == "*":
                    return None
                names.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                names.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
            blocks = [getattr(node, "body", []), getattr(node, "orelse", []), getattr(node, "finalbody", [])]
            blocks += [h.body for h in getattr(node, "handlers", [])]
            for block in blocks:
                inner = _top_level_names(block)
                if inner is None:
                    return None
                names |= inner
    return names


def check_function(target: str) -> None:
    """Raises ``ValueError`` (pydantic reports it on the field) when ``module:function`` cannot be right."""
    module, _, attr = target.partition(":")
    if module in sys.modules:  # already imported (the standard library, llmjobs): look the name up
        obj = sys.modules[module]
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise ValueError(f"module {module!r} has no attribute path {attr!r}")
            obj = getattr(obj, part)
        return
    spec = _spec(module)
    if spec is None:
        raise ValueError(f"module {module!r} is not importable here (not on sys.path / PYTHONPATH); the job "
                         "imports it with the same environment, so install it or add its folder to PYTHONPATH")
    origin = spec.origin or ""
    if not origin.endswith(".py"):
        return
    try:
        with open(origin, "rb") as f:
            tree = ast.parse(f.read(), origin)
    except SyntaxError as e:
        raise ValueError(f"module {module!r} ({origin}) has a syntax error at line {e.lineno}: {e.msg}") from None
    except (OSError, ValueError):
        return
    names = _top_level_names(tree.body)
    first = attr.split(".")[0]
    if names is not None and first not in names:
        raise ValueError(f"module {module!r} ({origin}) defines no {first!r} at its top level")


def run(ctx: StepContext):
    params = dict(ctx.params)
    fn = jobs.load(params.pop("function"))
    return fn(ctx, **params)
