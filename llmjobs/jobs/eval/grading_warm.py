"""Imported by the grading pool's forkserver: warms math-verify's LaTeX parser once for every worker."""

from llmjobs.jobs.eval.grading import warm_up

warm_up()
