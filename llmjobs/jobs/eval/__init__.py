"""Self-consistency evaluation: load problems, render prompts, extract and grade answers, vote, report.

The scoring modules (data, prompts, answers, grading, voting, metrics, report, score) import nothing heavy at
module level; math-verify, matplotlib and ``datasets`` are imported inside the functions that need them.
"""
