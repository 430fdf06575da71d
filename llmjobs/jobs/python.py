"""The ``python`` kind: call ``params.function`` (``module:function``) as ``function(ctx, **other_params)``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from llmjobs import jobs
from llmjobs.jobs.context import StepContext


class PythonParams(BaseModel):
    model_config = ConfigDict(extra="allow")
    function: str = Field(..., pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$",
                          description="'package.module:function'")


def run(ctx: StepContext):
    params = dict(ctx.params)
    fn = jobs.load(params.pop("function"))
    return fn(ctx, **params)
