"""The ``eval.self_consistency`` kind, for the built-in kinds table (``llmjobs.jobs``)."""

from llmjobs.jobs import Kind

SELF_CONSISTENCY = Kind(
    "eval.self_consistency",
    "llmjobs.jobs.eval.step:run",
    "llmjobs.jobs.eval.step:EvalParams",
    "sample N answers per problem (vLLM or transformers, a Ray pool over every GPU of the step), "
    "grade with math-verify, majority-vote, report maj@k / pass@k",
)
