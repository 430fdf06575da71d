"""The ``shell`` kind: run ``params.command`` with bash in the step's output directory.

The command sees ``LLMJOBS_SHARD``, ``LLMJOBS_NUM_SHARDS``, ``LLMJOBS_OUTPUT`` (and the rest of the
context) and every other param as ``LLMJOBS_PARAM_<NAME>`` (upper case; non-strings as JSON).
"""

from __future__ import annotations

import json
import os
import subprocess

from pydantic import BaseModel, ConfigDict, Field

from llmjobs.jobs.context import StepContext


class ShellParams(BaseModel):
    model_config = ConfigDict(extra="allow")
    command: str = Field(..., min_length=1)


class ShellCommandFailed(RuntimeError):
    def __init__(self, code: int) -> None:
        super().__init__(f"command exited with code {code}")
        self.code = code


def param_env(params: dict) -> dict[str, str]:
    env = {}
    for key, value in params.items():
        if key == "command":
            continue
        name = "LLMJOBS_PARAM_" + "".join(c if c.isalnum() else "_" for c in key).upper()
        env[name] = value if isinstance(value, str) else json.dumps(value)
    return env


def run(ctx: StepContext) -> dict:
    params = ShellParams.model_validate(ctx.params)
    ctx.output_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **ctx.env(), **param_env(ctx.params)}
    # stdout/stderr are inherited: they land in the attempt's log files
    code = subprocess.call(["bash", "-c", params.command], cwd=ctx.output_dir, env=env)
    if code != 0:
        raise ShellCommandFailed(code)
    return {"exit_code": 0}
