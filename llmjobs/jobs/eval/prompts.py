"""Prompt templates, rendered with the model's own chat template when it has one.

A template is a built-in name or any string with the placeholder ``{problem}`` (``{id}`` and ``{category}`` are
filled too). Placeholders are replaced literally, not with ``str.format``, so LaTeX braces such as
``\\boxed{}`` need no escaping.
"""

from __future__ import annotations

import logging
from typing import Any

from llmjobs.jobs.eval.data import Problem

log = logging.getLogger("llmjobs.eval")


def chat_tokenizer(model: str):
    """The model's tokenizer, for its chat template; None (prompts go unwrapped) where transformers is absent."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        log.warning("transformers is not installed: prompts are not wrapped in the model's chat template")
        return None
    return AutoTokenizer.from_pretrained(model)

TEMPLATES: dict[str, str] = {
    # Reasoning models think in <think>...</think> and box the final answer.
    "think_boxed": (
        "{problem}\n\n"
        "Think step by step inside <think> </think> tags, then give the final answer "
        "within \\boxed{}."
    ),
    # The Japanese instruction format; the response ends with a "最終的な回答：" line.
    "ja_instruction": (
        "以下は、タスクを説明する指示です。要求を適切に満たす応答を書きなさい。\n\n"
        "### 指示:\n{problem}\n"
        "段階的に考え、最後に「最終的な回答：」に続けて答えだけを書きなさい。\n\n"
        "### 応答:\n"
    ),
}


def template_text(template: str) -> str:
    """A built-in template by name, else the string itself (which must contain ``{problem}``)."""
    if template in TEMPLATES:
        return TEMPLATES[template]
    if "{problem}" not in template:
        from llmjobs.errors import UserError

        raise UserError(
            f"prompt template {template[:60]!r} is neither a built-in ({', '.join(TEMPLATES)}) "
            "nor a string with the placeholder {problem}"
        )
    return template


def fill(problem: Problem | str, template: str) -> str:
    text = template_text(template)
    if isinstance(problem, Problem):
        values = {"problem": problem.problem, "id": problem.id, "category": problem.category or ""}
    else:
        values = {"problem": problem, "id": "", "category": ""}
    # One pass, so a problem text containing "{id}" is left alone.
    import re

    return re.sub(r"\{(problem|id|category)\}", lambda m: values[m.group(1)], text)


def render_prompt(
    problem: Problem | str, template: str, tokenizer: Any = None, system: str | None = None
) -> str:
    """The prompt string given to the engine: the filled template as the user turn of the model's chat
    template (with the generation prompt appended), or the plain filled text when there is no chat template."""
    user = fill(problem, template)
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        return user if system is None else f"{system}\n\n{user}"
    messages = [{"role": "user", "content": user}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def opens_think(prompt: str) -> bool:
    """Whether the rendered prompt leaves a ``<think>`` open for the model to close (a chat template that
    starts the assistant turn with ``<think>``). The ``think_boxed`` instruction names both tags, so it alone
    opens nothing: a model that does not think is not expected to write ``</think>``."""
    return prompt.rfind("<think>") > prompt.rfind("</think>")
