"""data.prepare on a mix of the shared evaluation sets: weights, the length filter, exact and near duplicate
removal, and n-gram decontamination, each with counts that are known in advance."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("datasketch")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))
from conftest import shared_data

from llmjobs.jobs.data.params import PrepareParams
from llmjobs.jobs.data.prepare import prepare


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_mix_weights_filters_dedup_and_decontamination(tmp_path):
    math500, gsm8k, mgsm = (shared_data(n) for n in ("math500_test.jsonl", "gsm8k_test.jsonl", "mgsm_ja.tsv"))
    # a training file: 100 GSM8K rows, 20 of them twice, 10 with a word changed (near duplicates), and 7
    # MGSM problems copied in (contamination)
    gsm = [json.loads(x) for x in gsm8k.read_text().splitlines()[:100]]
    mg = [line.split("\t") for line in mgsm.read_text().splitlines()[:7]]
    rows = gsm + gsm[:20] + [{**r, "question": r["question"].replace(" ", "  ", 1) + " ok"} for r in gsm[20:30]]
    rows += [{"question": q, "answer": f"... #### {a}"} for q, a in mg]
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    p = PrepareParams.model_validate({
        "sources": [
            {"path": str(mixed), "name": "mixed", "language": "en", "weight": 1.0,
             "fields": {"prompt": "question", "response": "answer"}},
            {"path": str(math500), "name": "math500", "language": "en", "weight": 2.0, "limit": 200,
             "fields": {"prompt": "problem", "reasoning": "solution", "answer": "answer"}},
            {"path": str(mgsm), "name": "mgsm", "language": "ja", "weight": 0.5, "columns": ["question", "answer"],
             "fields": {"prompt": "question", "answer": "answer"}},
        ],
        "decontaminate": [{"path": str(mgsm), "preset": "mgsm_ja"}],
        "max_chars": 1500, "template": "think", "seed": 1})
    stats = prepare(p, tmp_path / "out")
    d = stats["dropped"]
    assert stats["read"] == {"mixed": 137, "math500": 200, "mgsm": 250}
    assert d["mixed"]["duplicate"] == 20 and d["mixed"]["contaminated"] == 7
    assert d["mixed"]["near_duplicate"] >= 8  # MinHash estimates: most of the 10 edited copies
    assert d["mgsm"] == {"contaminated": 250}  # the protected set itself never reaches training
    math = [json.loads(x) for x in math500.read_text().splitlines()[:200]]
    long_math = sum(1 for r in math if len(f"{r['problem'].strip()}\n<think>\n{r['solution'].strip()}\n</think>\n\n"
                                           f"\\boxed{{{r['answer'].strip()}}}") > 1500)
    assert d["math500"].get("too_long", 0) == long_math > 0
    train = _rows(tmp_path / "out" / "train.jsonl")
    kept_math = 200 - sum(d["math500"].values())
    assert stats["train_by_source"]["math500"] == 2 * kept_math  # weight 2: every row twice
    assert stats["train_by_source"]["mixed"] == 137 - sum(d["mixed"].values())
    assert all(len("\n".join(m["content"] for m in r["messages"])) <= 1500 for r in train)
    think = next(r for r in train if r["source"] == "math500")["messages"][-1]["content"]
    assert think.startswith("<think>\n") and "\n</think>\n\n\\boxed{" in think
    md = (tmp_path / "out" / "stats.md").read_text()
    assert "| mixed | 137 |" in md and "contaminated" in md and "mgsm_ja.tsv (250 problems)" in md


def test_ja_instruction_template_dev_split_and_downsampling(tmp_path):
    mgsm = shared_data("mgsm_ja.tsv")
    p = PrepareParams.model_validate({
        "sources": [{"path": str(mgsm), "name": "mgsm", "language": "ja", "weight": 0.5,
                     "columns": ["question", "answer"], "fields": {"prompt": "question", "answer": "answer"}}],
        "template": "ja_instruction", "dev_fraction": 0.2, "dedup": "exact", "seed": 2})
    stats = prepare(p, tmp_path)
    train, dev = _rows(tmp_path / "train.jsonl"), _rows(tmp_path / "dev.jsonl")
    assert 30 <= len(dev) <= 70 and len(dev) == stats["dev_rows"]
    kept_train = stats["kept_unique"] - len(dev)
    assert 0.3 * kept_train < len(train) < 0.7 * kept_train  # weight 0.5: about half, seeded
    user, reply = train[0]["messages"][0]["content"], train[0]["messages"][1]["content"]
    assert "### 指示:" in user and user.rstrip().endswith("### 応答:") and reply.startswith("最終的な回答：")
    dev_text = {json.dumps(r["messages"]) for r in dev}
    assert not dev_text & {json.dumps(r["messages"]) for r in train}


@pytest.mark.slow
def test_token_length_filter_with_a_local_tokenizer(tmp_path):
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    math500 = shared_data("math500_test.jsonl")
    texts = [json.loads(x)["problem"] for x in math500.read_text().splitlines()[:100]]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["<unk>"]))
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>").save_pretrained(tmp_path / "tok")
    p = PrepareParams.model_validate({
        "sources": [{"path": str(math500), "limit": 100, "fields": {"prompt": "problem", "answer": "answer"}}],
        "tokenizer": str(tmp_path / "tok"), "max_tokens": 30, "dedup": "none"})
    stats = prepare(p, tmp_path / "out")
    fast = PreTrainedTokenizerFast.from_pretrained(tmp_path / "tok")
    too_long = sum(1 for t, x in zip(texts, math500.read_text().splitlines()[:100])
                   if len(fast(t.strip() + "\n" + f"<think>\n\n</think>\n\n\\boxed{{{json.loads(x)['answer']}}}"
                               .strip())["input_ids"]) > 30)
    assert stats["length_unit"] == "tokens"
    assert stats["dropped"]["math500_test.jsonl"].get("too_long", 0) == too_long > 0
