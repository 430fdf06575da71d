"""Prompt rendering: built-in and custom templates, with and without the model's chat template.

The chat-template case uses a real transformers tokenizer built in the test (a word-level vocabulary made with
`tokenizers`, and a Jinja chat template), not a stand-in object.
"""

from __future__ import annotations

import pytest

from llmjobs.errors import UserError
from llmjobs.jobs.eval.data import Problem
from llmjobs.jobs.eval.prompts import TEMPLATES, render_prompt

PROBLEM = Problem(id="p1", problem="Compute $\\frac{1}{2} + {x}$.", answer="1", category="中1")


def test_builtin_templates_plain_text():
    text = render_prompt(PROBLEM, "think_boxed")
    assert text.startswith(PROBLEM.problem) and "<think>" in text and "\\boxed{}" in text

    ja = render_prompt("3+4は？", "ja_instruction")
    assert ja.startswith("以下は、タスクを説明する指示です。要求を適切に満たす応答を書きなさい。\n\n### 指示:\n3+4は？\n")
    assert ja.endswith("### 応答:\n") and "最終的な回答：" in ja


def test_custom_template_fills_placeholders_literally():
    text = render_prompt(PROBLEM, "[{id}/{category}] {problem} -> \\boxed{}")
    assert text == "[p1/中1] Compute $\\frac{1}{2} + {x}$. -> \\boxed{}"
    # A problem that itself contains a placeholder is not filled again.
    assert render_prompt("say {id}", "Q: {problem}") == "Q: say {id}"
    with pytest.raises(UserError, match="placeholder"):
        render_prompt(PROBLEM, "no placeholder here")


def test_system_prompt_without_chat_template():
    assert render_prompt("2+2", "{problem}", system="Be brief.") == "Be brief.\n\n2+2"


def _tokenizer(chat_template: str | None):
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(WordLevel({"<unk>": 0, "hello": 1}, unk_token="<unk>"))
    tok.pre_tokenizer = Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")
    if chat_template is not None:
        fast.chat_template = chat_template
    return fast


CHAT = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def test_chat_template_wraps_the_filled_prompt():
    tok = _tokenizer(CHAT)
    text = render_prompt(PROBLEM, "think_boxed", tokenizer=tok, system="S")
    user = TEMPLATES["think_boxed"].replace("{problem}", PROBLEM.problem)
    assert text == f"<|system|>S<|end|><|user|>{user}<|end|><|assistant|>"


def test_tokenizer_without_chat_template_gives_plain_text():
    tok = _tokenizer(None)
    assert render_prompt("2+2", "Q: {problem}", tokenizer=tok) == "Q: 2+2"


def test_only_a_chat_template_that_opens_think_expects_it():
    """The think_boxed instruction names <think> </think> but opens nothing; a template whose assistant turn
    starts with <think> (DeepSeek-R1, Qwen3 style) does."""
    from llmjobs.jobs.eval.prompts import opens_think

    assert not opens_think(render_prompt(PROBLEM, "think_boxed"))
    plain = _tokenizer("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"
                       "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    assert not opens_think(render_prompt(PROBLEM, "think_boxed", plain))
    thinking = _tokenizer("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"
                          "{% if add_generation_prompt %}<|assistant|><think>\n{% endif %}")
    assert opens_think(render_prompt(PROBLEM, "think_boxed", thinking))
    assert opens_think(render_prompt(PROBLEM, "ja_instruction", thinking))
