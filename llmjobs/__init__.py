"""llmjobs: run the life of math-reasoning LLMs on clusters, with a registry that resumes.

The core (this package minus ``llmjobs.jobs.*`` engines) imports only light libraries, so the CLI runs on
a login node without torch, vLLM or Ray.
"""

__version__ = "0.1.0"
