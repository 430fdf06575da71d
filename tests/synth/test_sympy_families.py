"""Every SymPy family: problems parse with math-verify, grade correct against their own answer, pass the
family's second check, are deterministic for a seed, and repeat rarely; a check rejects a wrong answer."""

from __future__ import annotations

import json
import os
import random
import re
from collections import Counter

import pytest

pytest.importorskip("sympy")
pytest.importorskip("math_verify")

from llmjobs.jobs.synth.sympy import registry
from llmjobs.jobs.synth.sympy.generate import AnswerReader, generate_shard

# Problems per family (each in both languages). The issue asks for 1,000: LLMJOBS_SYMPY_TEST_N=1000 runs that
# (about 15 minutes on 2 cores: math-verify's ANTLR parser takes 10-50 ms per polynomial answer); CI runs 100
# per family to stay inside its time budget.
N = int(os.environ.get("LLMJOBS_SYMPY_TEST_N", "100"))
FAMILIES = sorted(registry.families())
_JA = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def reader():
    return AnswerReader()


def _generate(name: str) -> tuple[dict, list[dict], list[dict]]:
    """One family's N problems and, again from the same seed, its first 20 (in a worker process)."""
    fam = registry.families()[name]
    reader = AnswerReader()
    result = generate_shard([fam], N, seed=3, reader=reader)
    again = generate_shard([fam], 20, seed=3, reader=AnswerReader()).rows["train"]
    return result.stats, result.rows["train"], again


@pytest.fixture(scope="module")
def generated():
    """Every family generated once, over two processes (parsing the answers is the slow part)."""
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(2) as pool:
        return dict(zip(FAMILIES, pool.map(_generate, FAMILIES, chunksize=1)))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """Per-category distribution, filled by the family tests and written to a file at the end."""
    counts: dict[str, Counter] = {}
    yield counts
    path = tmp_path_factory.mktemp("report") / "distribution.json"
    path.write_text(json.dumps({c: dict(v) for c, v in counts.items()}, ensure_ascii=False, indent=1))
    print(f"\ndistribution per category ({path}):")
    for cat in registry.CATEGORIES:
        print(f"  {cat}: {dict(counts.get(cat, {}))}")


def test_registry_spans_the_curriculum():
    fams = registry.families()
    assert len(fams) >= 24
    assert {f.category for f in fams.values()} == set(registry.CATEGORIES)
    with pytest.raises(ValueError, match="unknown family or category 'nope'.*linear_equation"):
        registry.select(["nope"])
    assert {f.name for f in registry.select(["中1"])} >= {"linear_equation", "fraction_arithmetic"}
    assert "linear_equation" not in {f.name for f in registry.select(["all"], exclude=["中1"])}


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_family(name, generated, reader, report):
    fam = registry.families()[name]
    stats, rows, again = generated[name]
    counts = stats["by_family"][name]
    # every draw passed parse, self-grade and the second check; enough distinct problems exist
    assert stats["dropped"] == {}, stats["examples"]
    assert counts["kept"] == N, f"only {counts['kept']} distinct problems"
    # no two problems read the same (different parameters must not render one text); repeated draws are
    # skipped, and stay well below the exhaustion limit (max_draws per problem)
    for lang in ("ja", "en"):
        texts = [r["problem"] for r in rows if r["language"] == lang]
        assert len(set(texts)) == len(texts), Counter(texts).most_common(2)
    assert counts.get("duplicate", 0) < 10 * N, f"duplicates not rare: {counts}"
    by_lang = Counter(r["language"] for r in rows)
    assert by_lang == {"ja": N, "en": N}
    keys = {r["key"] for r in rows}
    assert len(keys) == N and len({r["id"] for r in rows}) == 2 * N
    for r in rows:
        assert r["category"] == fam.category and r["family"] == name and r["solution"]
        if r["language"] == "ja":
            assert _JA.search(r["problem"]), r["problem"]
    ja = {r["key"]: r["answer"] for r in rows if r["language"] == "ja"}
    assert all(ja[r["key"]] == r["answer"] for r in rows if r["language"] == "en")
    # deterministic for a seed: the first problems again (a fresh generator, a fresh parser cache), identical
    assert len(again) == 40 and again == rows[:len(again)]
    # the evaluation's grader says the gold answer is correct against itself (a few per family)
    from llmjobs.jobs.eval.grading import verify_pair

    for r in random.Random(0).sample(rows, 3):
        assert verify_pair(r["answer"], r["answer"]) == (True, "ok"), r["answer"]
    # the second check is not vacuous: it rejects a wrong answer
    draft = fam.draft(random.Random(1), 2)
    status, wrong = reader.read("987654321")
    assert status == "ok" and not draft.check(wrong)
    for r in rows:
        if r["language"] == "en":
            report.setdefault(fam.category, Counter())[name] += 1
