"""synth.distill end to end: vLLM's CPU build with a tiny model, both filters over one generation, kill and
resume mid-sampling, and bad params refused at submit.

The tiny model's outputs are noise (it never boxes an answer), so the problems whose samples must be kept are
answered by hand-written samples placed in the generation directory first, as a finished earlier run of the
step would have left them: the step must use them as they are and sample only the missing pairs.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmjobs.jobs.context import StepContext

pytest.importorskip("math_verify")

PROBLEMS = [
    {"id": "half", "problem": "What is one half?", "answer": "\\frac{1}{2}"},
    {"id": "seven", "problem": "3 + 4 = ?", "answer": "7"},
    {"id": "n1", "problem": "2 + 2 = ?", "answer": "4"},
    {"id": "n2", "problem": "10 - 1 = ?", "answer": "9"},
]
WRITTEN = {  # (problem, sample) -> output, in the generation files before the step starts
    ("half", 0): "<think>half of one</think>The answer is \\boxed{0.5}.",
    ("half", 1): "<think>one over two</think>\\boxed{1/2}",
    ("half", 2): "<think>guess</think>\\boxed{3}",
    ("half", 3): "<think>never closed \\boxed{1/2}",
    ("seven", 0): "<think>3+4\n$3 + 4$\n$= 7$</think>\\boxed{7}",
    ("seven", 1): "<think>count\n$3 + 4$\n$= 8$</think>\\boxed{7}",  # right answer, wrong step
    ("seven", 2): "<think>again</think>\\boxed{7.0}",
    ("seven", 3): "<think>off by one</think>\\boxed{8}",
}


def _ctx(out: Path, params: dict) -> StepContext:
    return StepContext(run_id="r1", step="distill", shard=0, num_shards=1, output_dir=out,
                       checkpoint_dir=out / ".ckpt", params=params)


def _raw_pairs(gen: Path) -> list[tuple[str, int]]:
    """Every (problem, sample) line in every generation file: a pair generated twice shows up twice."""
    return [(str(r["id"]), int(r["sample"])) for f in sorted(gen.glob("*.jsonl"))
            for r in map(json.loads, f.read_text().splitlines())]


@pytest.mark.vllm
@pytest.mark.slow
def test_distill_with_vllm_both_filters(tiny_llama, vllm_options, tmp_path):
    pytest.importorskip("vllm")
    from llmjobs.jobs.synth.distill import run

    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    out = tmp_path / "out"
    gen = out / "generations"
    gen.mkdir(parents=True)
    (gen / "earlier.jsonl").write_text("".join(
        json.dumps({"id": pid, "sample": k, "output": text, "tokens": 10 + k}) + "\n"
        for (pid, k), text in WRITTEN.items()))
    params = {"model": str(tiny_llama), "data": str(data), "samples": 4, "max_tokens": 8, "temperature": 1.0,
              "template": "{problem}", "engine": "vllm", "engine_options": vllm_options, "grade_workers": 1,
              "filter": "ground_truth", "keep_per_problem": 1}
    summary = run(_ctx(out, params))
    assert summary["generated_samples"] == 8  # only n1 and n2 were sampled
    pairs = _raw_pairs_safe(gen)
    assert len(pairs) == len(set(pairs)) == 16

    rows = [json.loads(x) for x in (out / "dataset.jsonl").read_text().splitlines()]
    assert [(r["id"], r["sample"]) for r in rows] == [("half", 0), ("seven", 0)]
    assert rows[0]["messages"] == [
        {"role": "user", "content": "What is one half?"},
        {"role": "assistant", "content": "<think>\nhalf of one\n</think>\n\n\\boxed{\\frac{1}{2}}"}]
    report = json.loads((out / "report.json").read_text())
    assert report["problems"] == 4 and report["problems_kept"] == 2 and report["samples_kept"] == 2
    assert report["problems_dropped"] == {"no_correct_sample": 2}
    assert sum(report["samples_dropped"].values()) + report["samples_kept"] == 16
    lineage = {(r["id"], r["sample"]): r for r in map(json.loads, (out / "samples.jsonl").read_text().splitlines())}
    assert {k: r["reason"] for k, r in lineage.items() if k[0] in ("half", "seven")} == {
        ("half", 0): None, ("half", 1): "over_keep_per_problem", ("half", 2): "wrong",
        ("half", 3): "unclosed_think", ("seven", 0): None, ("seven", 1): "over_keep_per_problem",
        ("seven", 2): "over_keep_per_problem", ("seven", 3): "wrong"}
    assert lineage[("half", 1)]["answer"] == "1/2" and lineage[("half", 1)]["correct"]
    assert not any(r["kept"] for k, r in lineage.items() if k[0] in ("n1", "n2"))  # the model's noise
    assert [b["problems"] for b in report["pass_rate_histogram"]][5] == 1  # half: 2 of 4 correct
    assert report["tokens"]["kept"] == 10 + 10
    assert "| problem | no_correct_sample | 2 |" in (out / "report.md").read_text()

    # majority over the same samples: nothing is generated again; seven has 3 of 4 equal answers (7, 7, 7.0)
    summary = run(_ctx(out, {**params, "filter": "majority", "theta": 0.75, "keep_per_problem": None,
                             "answer_format": "最終的な回答：{answer}"}))
    assert summary["generated_samples"] == 0 and len(_raw_pairs_safe(gen)) == 16
    rows = [json.loads(x) for x in (out / "dataset.jsonl").read_text().splitlines()]
    assert [(r["id"], r["sample"], r["answer"]) for r in rows] == [("seven", 0, "7"), ("seven", 1, "7"),
                                                                   ("seven", 2, "7")]
    assert rows[2]["messages"][1]["content"] == "<think>\nagain\n</think>\n\n最終的な回答：7"
    assert rows[0]["agreement"] == 0.75
    report = json.loads((out / "report.json").read_text())
    assert report["problems_dropped"]["below_theta"] >= 1  # half: 2 of 4 agree
    lineage = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert {(r["id"], r["sample"]): r["reason"] for r in lineage if r["id"] == "seven"} == {
        ("seven", 0): None, ("seven", 1): None, ("seven", 2): None, ("seven", 3): "not_in_majority"}

    # the process check over the same samples: of seven's correct samples only the one whose shown steps hold
    summary = run(_ctx(out, {**params, "check_steps": True, "keep_per_problem": None}))
    assert summary["generated_samples"] == 0
    rows = [json.loads(x) for x in (out / "dataset.jsonl").read_text().splitlines()]
    assert [(r["id"], r["sample"]) for r in rows] == [("seven", 0)]
    report = json.loads((out / "report.json").read_text())
    assert report["rules"]["check_steps"] is True
    assert report["samples_dropped"]["wrong_step"] == 1 and report["samples_dropped"]["no_checkable_step"] == 3
    assert sum(report["samples_dropped"].values()) + report["samples_kept"] == 16
    assert "| sample | wrong_step | 1 |" in (out / "report.md").read_text()


EQUATION = "<think>\n$5x + 3 = 38$\n$5x = {}$\n$x = 7$\n</think>\n\n\\boxed{{7}}"
ARITHMETIC = "<think>\n$\\left(-8\\right) - 8$\n$= -8 {} 8$\n$= -16$\n</think>\n\n\\boxed{{-16}}"
JUDGED = {  # (problem, sample) -> (output, reason with check_steps under ground_truth and keep_per_problem 1)
    ("eq", 0): (EQUATION.format("35"), None),
    ("eq", 1): (EQUATION.format("36"), "wrong_step"),
    ("eq", 2): ("<think>five x is 35</think>\\boxed{7}", "no_checkable_step"),
    ("eq", 3): ("<think>\n$x = 8$\n</think>\\boxed{8}", "wrong"),
    ("eq", 4): (EQUATION.format("38 - 3"), "over_keep_per_problem"),
    ("sum", 0): (ARITHMETIC.format("+"), "wrong_step"),
    ("sum", 1): (ARITHMETIC.format("-"), None),
}


def test_check_steps_with_the_real_grader_under_both_filters(tmp_path):
    """judge() with hand-written outputs (no model): the step pairs of the samples that pass the filter are
    graded, a wrong line or no shown step drops a correct sample, and the report and lineage say so."""
    pytest.importorskip("pebble")
    from llmjobs.jobs.eval.data import Problem
    from llmjobs.jobs.synth.distill import DistillParams, _markdown, _report, _write_lineage, judge

    problems = [Problem("eq", "5x + 3 = 38", "7"), Problem("sum", "(-8) - 8", "-16")]
    records = [{"id": pid, "sample": k, "output": text, "tokens": 5} for (pid, k), (text, _) in JUDGED.items()]
    data = tmp_path / "problems.jsonl"  # the params check that the data file exists
    data.write_text("".join(json.dumps({"id": pr.id, "problem": pr.problem, "answer": pr.answer}) + "\n"
                            for pr in problems))
    p = DistillParams(model="m", data=str(data), template="{problem}", grade_workers=1, samples=5, check_steps=True,
                      keep_per_problem=1)
    decisions, samples, _ = judge(records, problems, p)
    reasons = {(pr.id, s.index): decisions[pr.id].dropped.get(s.index) for pr in problems for s in samples[pr.id]}
    assert reasons == {k: reason for k, (_, reason) in JUDGED.items()}
    failed = {(pr.id, s.index): s.failed_step for pr in problems for s in samples[pr.id] if s.failed_step}
    assert set(failed) == {("eq", 1), ("sum", 0)} and failed[("eq", 1)][0] == "36"

    report = _report(p, problems, decisions, samples, {}, 2, 10, True)
    assert report["samples_dropped"]["wrong_step"] == 2 and report["rules"]["check_steps"] is True
    assert sum(report["samples_dropped"].values()) + report["samples_kept"] == len(JUDGED)
    assert "| sample | wrong_step | 2 |" in _markdown(report)
    _write_lineage(tmp_path / "samples.jsonl", problems, decisions, samples)
    lineage = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert sum(r["failed_step"] is not None for r in lineage) == 2

    # majority: the winning class is checked at the majority label; eq's "8" is outside it
    p = p.model_copy(update={"filter": "majority", "theta": 0.6, "keep_per_problem": None})
    decisions, samples, _ = judge(records, problems, p)
    assert decisions["eq"].kept == [0, 4] and decisions["eq"].dropped == {
        1: "wrong_step", 2: "no_checkable_step", 3: "not_in_majority"}
    assert decisions["sum"].kept == [1] and decisions["sum"].dropped == {0: "wrong_step"}
    # without the check, the same samples are all kept
    decisions, _, _ = judge(records, problems, p.model_copy(update={"check_steps": False}))
    assert decisions["eq"].kept == [0, 1, 2, 4] and decisions["sum"].kept == [0, 1]


_CHILD = """
import json, sys
from pathlib import Path
from llmjobs.jobs.context import StepContext
from llmjobs.jobs.synth.distill import run
out, params = Path(sys.argv[1]), json.loads(sys.argv[2])
run(StepContext(run_id="r", step="d", shard=0, num_shards=1, output_dir=out, checkpoint_dir=out / ".c",
                params=params))
"""


@pytest.mark.slow
def test_kill_mid_sampling_then_resume(tiny_llama, tmp_path):
    """Killed while sampling (transformers engine: it starts in seconds), then run again: every (problem,
    sample) pair is generated exactly once over both runs, and the dataset and report are written."""
    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "problem": f"{i} + {i} = ?", "answer": str(2 * i)}) + "\n"
                            for i in range(8)))
    out = tmp_path / "out"
    gen = out / "generations"
    params = {"model": str(tiny_llama), "data": str(data), "samples": 3, "max_tokens": 16, "temperature": 1.0,
              "template": "{problem}", "engine": "hf", "chunk": 1, "grade_workers": 1, "filter": "majority",
              "theta": 0.5}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(out), json.dumps(params)],
                             start_new_session=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and child.poll() is None:
            if gen.exists() and len(_raw_pairs_safe(gen)) >= 3:  # one problem's samples are on disk
                break
            time.sleep(0.05)
        assert child.poll() is None, "the step finished before it could be killed"
        os.killpg(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    before = set(_raw_pairs_safe(gen))
    assert 3 <= len(before) < 24 and not (out / "dataset.jsonl").exists()

    from llmjobs.jobs.synth.distill import run

    summary = run(_ctx(out, params))
    assert summary["generated_samples"] == 24 - len(before)
    pairs = _raw_pairs_safe(gen)
    assert collections.Counter(pairs).most_common(1)[0][1] == 1 and len(pairs) == 24
    report = json.loads((out / "report.json").read_text())
    assert report["samples"] == 24 and report["generation"]["already_on_disk"] == len(before)


def _raw_pairs_safe(gen: Path) -> list[tuple[str, int]]:
    out = []
    for f in sorted(gen.glob("*.jsonl")):
        for line in f.read_text().splitlines(keepends=True):
            if line.endswith("\n"):
                rec = json.loads(line)
                out.append((rec["id"], rec["sample"]))
    return out


RECIPE = """
name: d
steps:
  teach:
    kind: synth.distill
    params: {{model: /nonexistent/model, data: {data}, filter: majority, theta: {theta}}}
"""


@pytest.mark.parametrize("theta", [0, 1.5, -0.2])
def test_theta_outside_zero_one_is_refused_at_submit(theta, cli, home, tmp_path):
    data = tmp_path / "problems.jsonl"  # the data file is checked at submit too: give a real one
    data.write_text('{"id": "p1", "problem": "1+1?", "answer": "2"}\n')
    path = tmp_path / "distill.yaml"
    path.write_text(RECIPE.format(theta=theta, data=data))
    r = cli("submit", path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    message = " ".join(r.stderr.split())
    assert "distill.yaml" in message and "step 'teach'" in message and "theta must be in (0, 1]" in message
    assert "Traceback" not in r.stderr
    assert not (home / "registry.db").exists() or _runs(home) == 0


def _runs(home: Path) -> int:
    import sqlite3

    con = sqlite3.connect(home / "registry.db")
    try:
        return con.execute("SELECT count(*) FROM runs").fetchone()[0]
    finally:
        con.close()
