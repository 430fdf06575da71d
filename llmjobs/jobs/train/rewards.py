"""Reward functions of ``train.grpo``, in the shape TRL's GRPOTrainer calls them:
``fn(prompts, completions, completion_ids, **columns) -> list[float | None]`` (``answer`` is a column).

- ``accuracy``: 1.0 when the completion's final answer equals the gold, else 0.0. The answer is found by the
  eval kind's extractor (``</think>`` split, last ``\\boxed{}``, Japanese ``最終的な回答：`` lines, NFKC) and
  graded by its math-verify ``Grader``: each pair runs in a process pool with a hard per-item timeout (a
  runaway expression has its worker killed and scores 0), so it works from any thread, where math-verify's
  own ``signal.alarm`` timeouts do not.
- ``format``: 1.0 when a ``<think>`` block is closed and the answer part holds exactly one non-empty
  ``\\boxed{}`` (a policy rewarded for empty boxes learns to write them: seen in the tests).
- ``length``: DAPO's soft over-long penalty: 0 up to ``max_completion_length - cache`` tokens, then falling
  linearly to -1 at ``max_completion_length`` (a truncated completion).
- anything else: a custom ``module:function`` with the same signature.
"""

from __future__ import annotations

import importlib
import re
import unicodedata
from collections.abc import Callable
from typing import Any

from llmjobs.jobs.eval.answers import extract_answer, last_boxed

_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")


def _text(completion: Any) -> str:
    """A completion is a string (standard prompts) or a list of messages (conversational prompts)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion:
        return str(completion[-1].get("content", ""))
    return ""


def _expects_think(prompt: Any) -> bool:
    """The prompt already opened <think> (chat templates of reasoning models do)."""
    text = prompt if isinstance(prompt, str) else (_text(prompt) if isinstance(prompt, list) else "")
    return text.rstrip().endswith("<think>")


class Accuracy:
    """Picklable and lazy: the grading pool starts at the first call, in the training process."""

    def __init__(self, timeout_s: float = 5.0, workers: int | None = 2, grade_unclosed: bool = False) -> None:
        self.timeout_s = timeout_s
        self.workers = workers
        self.grade_unclosed = grade_unclosed
        self._grader = None
        self.__name__ = "accuracy"

    @property
    def grader(self) -> Any:
        if self._grader is None:
            from llmjobs.jobs.eval.grading import Grader

            self._grader = Grader(workers=self.workers, timeout_s=self.timeout_s)
        return self._grader

    def __call__(self, prompts: list[Any] | None = None, completions: list[Any] = (), answer: list[str] = (),
                 **_: Any) -> list[float]:
        prompts = prompts or [None] * len(completions)
        found = [extract_answer(_text(c), grade_unclosed=self.grade_unclosed, expect_think=_expects_think(p))
                 for p, c in zip(prompts, completions)]
        verdicts = self.grader.grade_many([(str(g), e.answer) for g, e in zip(answer, found)])
        return [1.0 if v.correct else 0.0 for v in verdicts]

    def close(self) -> None:
        if self._grader is not None:
            self._grader.close()
            self._grader = None


def format_reward(prompts: list[Any] | None = None, completions: list[Any] = (), require_think: bool = False,
                  **_: Any) -> list[float]:
    """1.0: ``<think>`` (if opened, or required) is closed, and exactly one boxed answer follows it."""
    prompts = prompts or [None] * len(completions)
    out = []
    for p, c in zip(prompts, completions):
        text = unicodedata.normalize("NFKC", _text(c))
        opened = "<think>" in text or _expects_think(p) or require_think
        _head, sep, tail = text.rpartition("</think>")
        if opened and not sep:
            out.append(0.0)
            continue
        answer_part = tail if sep else text
        boxes = len(_BOX.findall(answer_part))
        out.append(1.0 if boxes == 1 and last_boxed(answer_part) else 0.0)  # an empty \boxed{} is no answer
    return out


def length_reward(completion_ids: list[list[int]] = (), max_completion_length: int = 512,
                  cache: int | None = None, **_: Any) -> list[float]:
    """DAPO's soft over-long punishment over the completion's token count."""
    cache = cache if cache is not None else max(1, max_completion_length // 4)
    start = max_completion_length - cache
    out = []
    for ids in completion_ids:
        n = len(ids)
        if n <= start:
            out.append(0.0)
        elif n < max_completion_length:
            out.append((start - n) / cache)
        else:
            out.append(-1.0)
    return out


def build(specs: list[Any], max_completion_length: int) -> tuple[list[Callable[..., Any]], list[float]]:
    """Reward functions (each with the ``__name__`` TRL logs it under) and their weights, from the params."""
    funcs: list[Callable[..., Any]] = []
    weights: list[float] = []
    for spec in specs:
        opts = dict(spec.options)
        if spec.name == "accuracy":
            fn: Any = Accuracy(**opts)
        elif spec.name == "format":
            fn = _bound(format_reward, "format", opts)
        elif spec.name == "length":
            fn = _bound(length_reward, "length", {"max_completion_length": max_completion_length, **opts})
        else:
            module, _, attr = spec.name.partition(":")
            target = getattr(importlib.import_module(module), attr, None)
            if not callable(target):
                raise ValueError(f"reward {spec.name!r}: {module} has no function {attr!r}")
            fn = _bound(target, attr, opts) if opts else target
        funcs.append(fn)
        weights.append(float(spec.weight))
    return funcs, weights


def _bound(target: Callable[..., Any], name: str, opts: dict[str, Any]) -> Callable[..., Any]:
    """``target`` with the recipe's options, under the name TRL logs it as (``rewards/NAME/mean``)."""

    def reward(*args: Any, **kwargs: Any) -> Any:
        return target(*args, **{**kwargs, **opts})

    reward.__name__ = reward.__qualname__ = name
    return reward


def close(funcs: list[Any]) -> None:
    for fn in funcs:
        if hasattr(fn, "close"):
            fn.close()
