"""The scoring modules and the grade/report commands import nothing heavy until they run: the CLI imports them
on a login node, where the heavy libraries are missing or slow to load."""

import subprocess
import sys

HEAVY = ("torch", "vllm", "ray", "transformers", "sympy", "math_verify", "matplotlib", "datasets", "pebble")


def test_scoring_modules_import_light():
    body = (
        "import sys\n"
        "import llmjobs.jobs.eval.cli, llmjobs.jobs.eval.score, llmjobs.jobs.eval.data, llmjobs.jobs.eval.prompts\n"
        "import llmjobs.jobs.eval.answers, llmjobs.jobs.eval.grading, llmjobs.jobs.eval.voting\n"
        "import llmjobs.jobs.eval.metrics, llmjobs.jobs.eval.report, llmjobs.jobs.eval.compare\n"
        f"print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", body], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
