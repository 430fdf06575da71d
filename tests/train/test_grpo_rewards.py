"""The rewards of train.grpo against hand-made completions, called as TRL calls them (keyword arguments,
the ``answer`` column), from a worker thread: the accuracy reward's hard timeout holds there too."""

from __future__ import annotations

import threading
import time

import pytest

from llmjobs.jobs.train import rewards
from llmjobs.jobs.train.grpo_params import RewardSpec

pytest.importorskip("math_verify")
pytest.importorskip("pebble")


def _in_thread(fn, **kwargs):
    box: list = []
    t = threading.Thread(target=lambda: box.append(fn(**kwargs)))
    t.start()
    t.join(60)
    assert not t.is_alive()
    return box[0]


def test_accuracy_format_length_from_a_worker_thread():
    specs = [RewardSpec(name="accuracy", options={"timeout_s": 3, "workers": 1}), RewardSpec(name="format"),
             RewardSpec(name="length", options={"cache": 4})]
    funcs, weights = rewards.build(specs, max_completion_length=12)
    assert [f.__name__ for f in funcs] == ["accuracy", "format", "length"] and weights == [1.0, 1.0, 1.0]
    accuracy, fmt, length = funcs
    completions = [
        "<think>3 plus 4</think> \\boxed{7}",  # correct
        "<think>3 plus 4</think> \\boxed{8}",  # wrong
        "<think>3 plus 4 is \\boxed{7}",  # never closes its reasoning: no answer
        "<think>考える</think>最終的な回答：７",  # full-width digit on the Japanese answer line
        "<think>x</think> 答えは 3分の2 です",  # Japanese fraction on an answer line
        "<think>x</think> \\boxed{1,000円}",  # thousands separator and a unit
        "\\boxed{9^{9^{9}}}",  # runaway SymPy tower: the hard timeout cuts it off
        "\\boxed{7} or \\boxed{7}",  # two boxes: right answer, wrong format
    ]
    golds = ["7", "7", "7", "7", "\\frac{2}{3}", "1000", "5", "7"]
    prompts = ["3+4="] * len(completions)
    start = time.monotonic()
    got = _in_thread(accuracy, prompts=prompts, completions=completions, answer=golds, completion_ids=[[0]] * 8)
    assert time.monotonic() - start < 40
    assert got == [1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0]
    assert accuracy.grader.stats.timeouts == 1
    accuracy.close()

    assert _in_thread(fmt, prompts=prompts, completions=completions) == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0]
    # a prompt that already opened <think>: the completion must close it
    assert fmt(prompts=["Q <think>"], completions=["\\boxed{7}"]) == [0.0]
    assert fmt(prompts=["Q <think>"], completions=["r </think> \\boxed{7}"]) == [1.0]
    assert fmt(prompts=["Q", "Q"], completions=["\\boxed{}", "\\boxed{ }"]) == [0.0, 0.0]  # empty boxes do not count
    # conversational completions (lists of messages) are read too
    assert fmt(prompts=None, completions=[[{"role": "assistant", "content": "\\boxed{1}"}]]) == [1.0]

    # soft over-long penalty: 0 up to 12 - 4 tokens, then down to -1 at 12
    assert length(completion_ids=[[0] * n for n in (3, 8, 10, 12)]) == [0.0, 0.0, -0.5, -1.0]


def test_custom_reward_by_import_path_with_options():
    funcs, weights = rewards.build([RewardSpec(name="tests.train.grpo_task:short_reward", weight=0.5,
                                               options={"limit": 3})], max_completion_length=8)
    (fn,) = funcs
    assert fn.__name__ == "short_reward" and weights == [0.5]
    assert fn(prompts=["p", "p"], completions=["ab", "abcd"], completion_ids=[[1], [1]]) == [1.0, 0.0]
