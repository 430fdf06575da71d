"""CLI start-up time: ``llmjobs --help`` and ``llmjobs status`` (empty registry) against bare ``python -c pass``.

Run: ``python bench/cli_startup.py [--runs 5] [--source DIR]``; ``--source`` puts another checkout of llmjobs
first on the path (e.g. an older commit exported with ``git archive``) to compare before/after in one run.
Prints the median of each command and its ratio to the bare interpreter measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _median(cmd: list[str], env: dict[str, str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, env=env, cwd=env["LLMJOBS_HOME"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=False)  # cwd: `-m` puts it first on sys.path
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--source", action="append", default=[], help="llmjobs checkout to compare (repeatable)")
    args = ap.parse_args()
    sources = [str(Path(__file__).resolve().parents[1]), *args.source]
    with tempfile.TemporaryDirectory() as home:
        base_env = {**os.environ, "LLMJOBS_HOME": home}
        base_env.pop("LLMJOBS_REGISTRY", None)
        bare = _median([sys.executable, "-c", "pass"], base_env, args.runs)
        print(f"python -c pass: {bare * 1000:.0f} ms (baseline)")
        for src in sources:
            env = {**base_env, "PYTHONPATH": src}
            for name, argv in (("import llmjobs.cli", ["-c", "import llmjobs.cli"]),
                               ("llmjobs --help", ["-m", "llmjobs.cli", "--help"]),
                               ("llmjobs status", ["-m", "llmjobs.cli", "status"])):
                t = _median([sys.executable, *argv], env, args.runs)
                print(f"{src}: {name}: {t * 1000:.0f} ms = {t / bare:.1f}x baseline")


if __name__ == "__main__":
    main()
