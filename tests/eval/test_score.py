"""grade_samples / grade_file end to end: every report file, both unclosed policies, the CLI functions."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from llmjobs.errors import UserError

from .conftest import shared_data

pytest.importorskip("math_verify")
pytest.importorskip("matplotlib")

from llmjobs.jobs.eval.cli import app
from llmjobs.jobs.eval.score import grade_file, grade_samples


def _samples():
    # p1 (gold 1/2, 中1): 0.5 / 1/2 right, 3 wrong, one unclosed whose reasoning holds the right answer
    # p2 (gold 7, 中2): 6 and 6.0 wrong, 7 right, one without an answer
    out = []
    for i, text in enumerate(["<think>a</think>\\boxed{0.5}", "<think>b</think>最終的な回答：1/2",
                              "<think>c</think>\\boxed{3}", "<think>d \\boxed{\\frac{1}{2}} and more"]):
        out.append({"qid": "p1", "gold": "\\frac{1}{2}", "cat": "中1", "text": text, "tokens": 10 + i})
    for text in ["</think>\\boxed{6}", "</think>\\boxed{6.0}", "</think>\\boxed{7}", "I give up"]:
        out.append({"qid": "p2", "gold": "7", "cat": "中2", "text": text, "tokens": 20})
    return out


def test_grade_file_writes_every_report_file(tmp_path):
    path = tmp_path / "gen.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in _samples()), "utf-8")
    out = tmp_path / "report"
    res = grade_file(path, out, id_field="qid", gold_field="gold", output_field="text", category_field="cat",
                     workers=2)
    assert sorted(p.name for p in out.iterdir()) == ["plot.png", "problems.jsonl", "report.md", "results.json",
                                                      "samples.jsonl"]
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(res))

    assert (res["problems"], res["samples_per_problem"], res["samples"]) == (2, 4, 8)
    assert res["majority_accuracy"] == 0.5  # p1: 0.5 class (2) beats 3; p2: 6 class (2) beats 7
    assert res["mean_at_1"] == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert res["maj_at_k"] == {"1": 0.5, "2": 0.5, "3": 0.5, "4": 0.5}
    assert res["pass_at_k"]["1"] == pytest.approx(0.375) and res["pass_at_k"]["4"] == 1.0
    assert res["reasoning_failure_rate"] == pytest.approx(1 / 8)
    assert res["per_category"]["中1"] == {"problems": 1, "majority_accuracy": 1.0, "mean_at_1": 0.5}
    assert res["mean_output_tokens"] == pytest.approx((10 + 11 + 12 + 13 + 80) / 8)
    assert res["tokens_per_second"] is None  # no generation time given
    # the other policy: the unclosed sample graded from its reasoning is right
    assert res["unclosed_policy"] == "count_wrong"
    assert res["policies"]["grade_reasoning"]["mean_at_1"] == pytest.approx((3 / 4 + 1 / 4) / 2)
    assert res["policies"]["count_wrong"]["majority_accuracy"] == res["majority_accuracy"]

    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [(r["id"], r["sample"], r["answer"], r["correct"]) for r in rows] == [
        ("p1", 0, "0.5", True), ("p1", 1, "1/2", True), ("p1", 2, "3", False), ("p1", 3, None, False),
        ("p2", 0, "6", False), ("p2", 1, "6.0", False), ("p2", 2, "7", True), ("p2", 3, None, False),
    ]
    assert rows[3]["closed"] is False and rows[3]["reasoning_answer"] == "\\frac{1}{2}" and rows[3]["reasoning_correct"]
    assert rows[0]["class"] == rows[1]["class"] != rows[2]["class"] and rows[3]["class"] is None
    assert all(r["output"] for r in rows)

    problems = [json.loads(line) for line in (out / "problems.jsonl").read_text().splitlines()]
    assert [(p["majority_answer"], p["votes"], p["correct_samples"]) for p in problems] == [("0.5", 2, 2), ("6", 2, 1)]

    report = (out / "report.md").read_text()
    assert "| maj@4 (majority accuracy) | 50.0% |" in report and "| 中1 | 1 | 100.0% | 50.0% |" in report
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_grade_reasoning_policy_and_generation_time(tmp_path):
    res = grade_samples(_samples(), None, None, id_field="qid", gold_field="gold", output_field="text",
                        unclosed="grade_reasoning", generation_seconds=4.0, meta={"model": "tiny"})
    assert res["mean_at_1"] == pytest.approx(0.5)
    assert res["tokens_per_second"] == pytest.approx(126 / 4.0)
    assert res["meta"] == {"model": "tiny"} and res["per_category"] == {}


def test_golds_from_a_data_file_with_a_preset(tmp_path):
    data = shared_data("mgsm_ja.tsv")
    from llmjobs.jobs.eval.data import load_problems

    problems = load_problems(data, preset="mgsm_ja", limit=3)
    path = tmp_path / "s.jsonl"
    # ids as the generation step writes them (row indices); answers with units and full-width digits
    lines = []
    for p in problems:
        wide = p.answer.translate(str.maketrans("0123456789", "０１２３４５６７８９"))
        lines += [{"id": p.id, "sample": 1, "output": f"最終的な回答：{wide}円"},
                  {"id": p.id, "sample": 0, "output": "最終的な回答：0"}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines), "utf-8")
    res = grade_file(path, data=data, preset="mgsm_ja", workers=1)
    assert res["problems"] == 3 and res["problems_without_samples"] == 247
    assert (path.parent / "s.graded" / "results.json").exists()
    # samples sorted by their index: sample 0 is wrong, so maj@1 is 0 and maj@2 a tie the wrong one wins
    assert res["maj_at_k"] == {"1": 0.0, "2": 0.0} and res["mean_at_1"] == 0.5 and res["ties"] == 3


def test_blank_answers_do_not_vote_and_string_sample_indices_order_samples():
    recs = [{"id": "q", "answer": "4", "sample": "1", "output": "</think>\\boxed{4}"},
            {"id": "q", "answer": "4", "sample": "0", "output": "</think>\\boxed{}"},
            {"id": "q", "answer": "4", "sample": "2", "output": "</think>最終的な回答：。"}]
    res = grade_samples(recs, None, None, workers=1)
    assert res["majority_accuracy"] == 1.0 and res["no_answer_rate"] == pytest.approx(2 / 3)
    assert res["maj_at_k"] == {"1": 0.0, "2": 1.0, "3": 1.0}  # sample 0 (blank) comes first


def test_bad_input_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no gold field 'answer'"):
        grade_samples([{"id": 1, "output": "x"}], None, None)
    with pytest.raises(UserError, match="no id field 'qid'"):
        grade_samples([{"id": 1, "output": "x"}], None, None, id_field="qid")
    with pytest.raises(UserError, match="no output field 'text'"):
        grade_samples([{"id": 1, "answer": "1", "output": "x"}], None, None, output_field="text")
    with pytest.raises(UserError, match="same sample index twice"):
        grade_samples([{"id": 1, "answer": "1", "output": "x", "sample": 0}] * 2, None, None)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\n[1]\n')
    with pytest.raises(UserError, match=r"bad\.jsonl:2"):
        grade_file(bad)


def test_cli_grade_then_report(tmp_path):
    path = tmp_path / "gen.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in _samples()), "utf-8")
    runner = CliRunner()
    out = tmp_path / "graded"
    r = runner.invoke(app, ["grade", str(path), "--id-field", "qid", "--gold-field", "gold", "--output-field", "text",
                            "--category-field", "cat", "--out", str(out), "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert "maj@4 (majority accuracy)" in r.output and "50.0%" in r.output
    r = runner.invoke(app, ["report", str(out / "results.json")])
    assert r.exit_code == 0, r.output
    assert "mean@1" in r.output and "37.5%" in r.output and "中2" in r.output
