"""`llmjobs compare`: results.json files written by the evaluation's own grader and report writer, runs
recorded in a real registry, through the real command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmjobs.registry import Registry
from tests.recorded_runs import record_run

pytest.importorskip("math_verify")
pytest.importorskip("matplotlib")

from llmjobs.jobs.eval.score import grade_file


def _grade(tmp: Path, name: str, outputs: dict[str, list[str]]) -> Path:
    """A report directory graded from these samples: problem id -> its outputs (golds: p1 2, p2 5, p3 9)."""
    gold = {"p1": "2", "p2": "5", "p3": "9"}
    cat = {"p1": "algebra", "p2": "algebra", "p3": "geometry"}
    path = tmp / f"{name}.jsonl"
    path.write_text("".join(json.dumps({"id": pid, "answer": gold[pid], "category": cat[pid], "output": o}) + "\n"
                            for pid, outs in outputs.items() for o in outs), "utf-8")
    out = tmp / name
    grade_file(path, out, category_field="category", workers=1)
    return out


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("reports")
    b = "</think>\\boxed{%s}"
    return {
        # N = 4; p1 right by majority (2 of 4), p2 wrong (5 once), p3 wrong; one unclosed think
        "sft": _grade(tmp, "sft", {"p1": [b % 2, b % 2, b % 3, b % 4], "p2": [b % 1, b % 1, b % 5, b % 6],
                                   "p3": [b % 1, b % 1, b % 1, "<think>9"]}),
        # N = 3; p1 and p2 right by majority, p3 right once
        "distill": _grade(tmp, "distill", {"p1": [b % 2, b % 2, b % 2], "p2": [b % 5, b % 5, b % 7],
                                           "p3": [b % 1, b % 9, b % 1]}),
    }


def _record(reg: Registry, run_id: str, steps: list[tuple[str, str, str]], home: Path) -> None:
    """A finished run: (step name, kind, output dir), one shard each."""
    record_run(reg, run_id, steps, run_dir=str(home / "runs" / run_id), name="cmp")


@pytest.fixture
def runs(home, reports) -> None:
    home.mkdir(parents=True)
    reg = Registry(f"sqlite:///{home / 'registry.db'}", create=True)
    _record(reg, "first-aaa111", [("eval", "eval.self_consistency", str(reports["sft"]))], home)
    _record(reg, "second-bbb222", [("train", "shell", str(home / "none")),
                                   ("eval_a", "eval.self_consistency", str(reports["sft"])),
                                   ("eval_b", "eval.self_consistency", str(reports["distill"]))], home)
    _record(reg, "shell-ccc333", [("work", "shell", str(home / "work"))], home)
    _record(reg, "pending-ddd444", [("eval", "eval.self_consistency", str(home / "not-yet"))], home)
    reg.close()


def test_compare_json_holds_each_evaluations_figures(cli, runs, reports, tmp_path):
    plot = tmp_path / "cmp" / "maj.png"
    r = cli("compare", "first", "second-bbb222:eval_b", str(reports["distill"] / "results.json"), "--json",
            "--plot", str(plot))
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [x["label"] for x in rows] == ["first-aaa111", "second-bbb222:eval_b",
                                          str(reports["distill"] / "results.json")]
    sft, distill, path_row = rows
    assert (sft["problems"], sft["samples_per_problem"], distill["samples_per_problem"]) == (3, 4, 3)
    assert sft["mean_at_1"] == pytest.approx((2 / 4 + 1 / 4 + 0) / 3)
    assert sft["majority_accuracy"] == pytest.approx(1 / 3)
    assert sft["pass_at_k"] == {"k": 4, "value": pytest.approx(2 / 3)}
    assert sft["reasoning_failure_rate"] == pytest.approx(1 / 12)
    assert distill["mean_at_1"] == pytest.approx((1 + 2 / 3 + 1 / 3) / 3)
    assert distill["majority_accuracy"] == pytest.approx(2 / 3)
    assert distill["maj_at_k"] == {k: pytest.approx(2 / 3) for k in ("1", "2", "3")}
    assert distill["per_category"]["geometry"] == {"problems": 1, "majority_accuracy": 0.0,
                                                   "mean_at_1": pytest.approx(1 / 3)}
    assert {k: v for k, v in path_row.items() if k not in ("label", "path")} == \
        {k: v for k, v in distill.items() if k not in ("label", "path")}
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 5000
    assert str(plot) in r.stderr


def test_compare_table_lists_runs_side_by_side(cli, runs, tmp_path):
    r = cli("compare", "second-bbb222", "--plot", str(tmp_path / "p.png"))  # both evaluation steps of one run
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    header = next(x for x in lines if "second-bbb222:eval_a" in x)
    assert header.index("eval_a") < header.index("eval_b")

    def row(metric: str) -> list[str]:
        line = next(x for x in lines if x.strip("│ ").startswith(metric))
        return [c.strip() for c in line.split("│")[2:-1]]

    assert row("mean@1") == ["25.0%", "66.7%"]
    assert row("maj@N") == ["33.3%", "66.7%"]
    assert row("maj@3 (k all share)") == ["33.3%", "66.7%"]  # N differs (4, 3): the shared k is 3
    assert row("pass@N") == ["66.7% (k=4)", "100.0% (k=3)"]
    assert row("</think> never closed") == ["8.3%", "0.0%"]
    assert row("geometry") == ["0.0% / 0.0%", "0.0% / 33.3%"]
    assert (tmp_path / "p.png").is_file()


@pytest.mark.parametrize(("target", "message"), [
    ("no-such-run", "unknown run id 'no-such-run'"),
    ("shell-ccc333", "run shell-ccc333 has no evaluation step (steps: work)"),
    ("second-bbb222:nope", "run second-bbb222 has no step 'nope'; its evaluation steps: eval_a, eval_b"),
    ("second-bbb222:train", "step 'train' of run second-bbb222 is a shell step, not an evaluation"),
    ("pending-ddd444", "pending-ddd444: no results yet"),
])
def test_compare_refuses_what_is_not_an_evaluation_in_one_line(cli, runs, target, message, tmp_path):
    r = cli("compare", "first", target, "--plot", str(tmp_path / "p.png"))
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and message in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "p.png").exists()
