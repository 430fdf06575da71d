"""The core must import on a login node that has no torch, vLLM, Ray or transformers."""

import subprocess
import sys

HEAVY = ("torch", "vllm", "ray", "transformers")

PROBE = """
import sys
{body}
heavy = sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r})
print(','.join(heavy))
"""


def _imported(body: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(body=body, heavy=HEAVY)], capture_output=True,
                         text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_import_llmjobs_pulls_in_no_heavy_library():
    assert _imported("import llmjobs, llmjobs.cli, llmjobs.recipes, llmjobs.registry, llmjobs.jobs") == []


def test_help_and_recipe_validation_pull_in_no_heavy_library():
    body = """
import sys
from typer.testing import CliRunner
from llmjobs.cli import app
from llmjobs import jobs
for args in (["--help"], ["submit", "--help"], ["kinds"]):
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, (args, r.output)
for kind in jobs.kinds().values():   # every kind's params model must load without heavy imports
    jobs.load(kind.params)
"""
    assert _imported(body) == []
