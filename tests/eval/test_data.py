"""Loading problems: the three shared data files with their presets, every format, and clear errors."""

from __future__ import annotations

import json

import pytest

from llmjobs.errors import UserError
from llmjobs.jobs.eval.data import FieldMap, load_problems

from .conftest import shared_data


def test_mgsm_ja_preset_reads_the_headerless_tsv():
    path = shared_data("mgsm_ja.tsv")
    problems = load_problems(path, preset="mgsm_ja")
    assert len(problems) == 250
    first = problems[0]
    assert first.id == "0" and first.problem.startswith("ジャネットのアヒル") and first.answer == "18"
    # The file writes some answers with thousands separators; the preset stores plain numbers.
    raw = [line.rstrip("\n").split("\t")[1] for line in path.read_text(encoding="utf-8").splitlines()]
    with_commas = [i for i, a in enumerate(raw) if "," in a]
    assert with_commas, "the file has comma answers (see its README)"
    for i in with_commas:
        assert problems[i].answer == raw[i].replace(",", "")
    assert all(p.answer.lstrip("-").replace(".", "").isdigit() for p in problems)
    assert len({p.id for p in problems}) == 250


def test_math500_preset_maps_id_and_category():
    problems = load_problems(shared_data("math500_test.jsonl"), preset="math500")
    assert len(problems) == 500
    p = problems[0]
    assert p.id.startswith("test/") and p.id.endswith(".json")
    assert p.category == "Precalculus" and p.answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert "\\boxed" in p.extra["solution"] and "level" in p.extra
    assert len({q.category for q in problems}) == 7


def test_gsm8k_preset_takes_the_number_after_the_hashes():
    path = shared_data("gsm8k_test.jsonl")
    problems = load_problems(path, preset="gsm8k", limit=1319)
    assert len(problems) == 1319
    raw = [json.loads(line)["answer"] for line in path.read_text(encoding="utf-8").splitlines()]
    assert problems[0].answer == "18"
    for p, text in zip(problems, raw):
        assert p.answer == text.split("####")[-1].strip().replace(",", "")
        assert "####" not in p.answer


def test_limit_and_field_override(tmp_path):
    problems = load_problems(shared_data("gsm8k_test.jsonl"), preset="gsm8k", limit=3)
    assert [p.id for p in problems] == ["0", "1", "2"]
    # A field map replaces the preset's: here the whole solution text is the "answer".
    problems = load_problems(
        shared_data("math500_test.jsonl"), fields=FieldMap(id="unique_id", answer="solution"), limit=2
    )
    assert "\\boxed" in problems[0].answer and problems[0].category is None


def test_formats_jsonl_json_tsv_and_datasets_dir(tmp_path):
    rows = [{"qid": "a", "q": "1+1?", "gold": 2, "cat": "中1"}, {"qid": "b", "q": "2+2?", "gold": "4", "cat": "中2"}]
    fields = FieldMap(id="qid", problem="q", answer="gold", category="cat")
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    (tmp_path / "p.json").write_text(json.dumps(rows, ensure_ascii=False), "utf-8")
    (tmp_path / "p.tsv").write_text("qid\tq\tgold\tcat\n" + "".join(
        f"{r['qid']}\t{r['q']}\t{r['gold']}\t{r['cat']}\n" for r in rows), "utf-8")
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list([{**r, "gold": str(r["gold"])} for r in rows]).save_to_disk(str(tmp_path / "ds"))
    datasets.DatasetDict({"test": datasets.Dataset.from_list([{**r, "gold": str(r["gold"])} for r in rows])}) \
        .save_to_disk(str(tmp_path / "dsd"))
    for name in ("p.jsonl", "p.json", "p.tsv", "ds", "dsd"):
        problems = load_problems(tmp_path / name, fields)
        got = [(p.id, p.problem, p.answer, p.category) for p in problems]
        assert got == [("a", "1+1?", "2", "中1"), ("b", "2+2?", "4", "中2")], name


def test_default_ids_use_an_id_field_when_present(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": 7, "problem": "x", "answer": "1"}\n{"id": 9, "problem": "y", "answer": "2"}\n')
    assert [p.id for p in load_problems(path)] == ["7", "9"]
    path.write_text('{"problem": "x", "answer": "1"}\n{"problem": "y", "answer": "2"}\n')
    assert [p.id for p in load_problems(path)] == ["0", "1"]


def test_errors_name_the_file_and_the_field(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"question": "x", "answer": "1"}\n')
    with pytest.raises(UserError) as e:
        load_problems(path)
    assert str(path) in str(e.value) and "'problem'" in str(e.value) and "question" in str(e.value)

    path.write_text('{"id": 1, "problem": "x", "answer": "1"}\n{"id": 1, "problem": "y", "answer": "2"}\n')
    with pytest.raises(UserError, match="duplicate id '1'"):
        load_problems(path)

    path.write_text('{"problem": "x", "answer": "1"}\nnot json\n')
    with pytest.raises(UserError, match=r"p\.jsonl:2"):
        load_problems(path)

    with pytest.raises(UserError, match="unknown data preset 'mgsm'"):
        load_problems(path, preset="mgsm")
    with pytest.raises(UserError, match="not found"):
        load_problems(tmp_path / "missing.jsonl")
    (tmp_path / "p.csv").write_text("a,b\n")
    with pytest.raises(UserError, match="unknown data format"):
        load_problems(tmp_path / "p.csv")

    bad_tsv = tmp_path / "p.tsv"
    bad_tsv.write_text("problem\tanswer\nx\t1\ty\n")
    with pytest.raises(UserError, match=r"p\.tsv:2: 3 tab-separated columns, expected 2"):
        load_problems(bad_tsv)

    gsm = tmp_path / "g.jsonl"
    gsm.write_text('{"question": "x", "answer": "no hashes here"}\n')
    with pytest.raises(UserError, match="'#### N'"):
        load_problems(gsm, preset="gsm8k")
