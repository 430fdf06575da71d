"""Recipe loading: defaults, overrides, references, ordering, walltime forms."""

from __future__ import annotations

import pytest

from llmjobs.errors import UserError
from llmjobs.recipes import interpolate, plan_from_dict
from llmjobs.resources import Resources, format_walltime, parse_walltime

BASE = {
    "name": "r",
    "defaults": {"resources": {"walltime": "2:00:00", "cpus": 4}, "params": {"seed": 1}, "retries": 2},
    "steps": {
        "gen": {"kind": "shell", "shards": 8, "params": {"command": "gen ${run.id}", "samples": 4}},
        "grade": {"kind": "shell", "resources": {"cpus": 1},
                  "params": {"command": "grade ${steps.gen.output} > ${run.dir}/x; echo ${HOME}"}},
        "first": {"kind": "shell", "params": {"command": "true"}},
    },
}


def test_defaults_merge_and_step_values_win():
    plan = plan_from_dict(BASE, "r.yaml")
    gen, grade = plan.step("gen"), plan.step("grade")
    assert (gen.resources.cpus, gen.resources.walltime, gen.retries) == (4, "02:00:00", 2)
    assert (grade.resources.cpus, grade.resources.walltime) == (1, "02:00:00")
    assert gen.params == {"seed": 1, "command": "gen ${run.id}", "samples": 4}


def test_output_reference_implies_dependency_and_order():
    plan = plan_from_dict(BASE, "r.yaml")
    assert plan.deps["grade"] == ["gen"]
    assert plan.order.index("gen") < plan.order.index("grade")
    assert set(plan.order) == {"gen", "grade", "first"}


def test_overrides_are_typed_and_reach_nested_fields():
    plan = plan_from_dict(BASE, "r.yaml", ["steps.gen.params.samples=20", "steps.gen.shards=2",
                                           "steps.gen.params.tags=[a, b]", "steps.first.resources.walltime=30"])
    gen = plan.step("gen")
    assert gen.params["samples"] == 20 and gen.shards == 2 and gen.params["tags"] == ["a", "b"]
    assert plan.step("first").resources.walltime == "00:30:00"  # a bare number is minutes
    assert BASE["steps"]["gen"]["params"]["samples"] == 4  # the input is not mutated


def test_override_of_defaults_applies_to_every_step():
    plan = plan_from_dict(BASE, "r.yaml", ["defaults.resources.mem_gb=64"])
    assert {plan.step(s).resources.mem_gb for s in plan.order} == {64}


def test_interpolation_leaves_shell_variables_alone():
    plan = plan_from_dict(BASE, "r.yaml")
    out = interpolate(plan.step("grade").params, {"gen": "/runs/r1/gen"}, {"dir": "/runs/r1", "id": "r1"})
    assert out["command"] == "grade /runs/r1/gen > /runs/r1/x; echo ${HOME}"


def test_self_reference_and_unknown_run_field():
    bad = {"name": "r", "steps": {"a": {"kind": "shell", "params": {"command": "ls ${steps.a.output}"}}}}
    with pytest.raises(UserError, match="cannot use its own output"):
        plan_from_dict(bad, "r.yaml")
    bad = {"name": "r", "steps": {"a": {"kind": "shell", "params": {"command": "ls ${run.home}"}}}}
    with pytest.raises(UserError, match=r"\$\{run.home\} is unknown"):
        plan_from_dict(bad, "r.yaml")


@pytest.mark.parametrize("text,seconds", [
    ("45", 2700), (90, 5400),                                   # minutes
    ("05:30", 330), ("90:00", 5400),                            # minutes:seconds
    ("01:00:00", 3600), ("1:30:00", 5400), ("168:00:00", 604800), ("00:00:20", 20),  # hours:minutes:seconds
    ("1-02", 93600),                                            # days-hours
    ("1-02:00", 93600), ("1-02:30", 95400),                     # days-hours:minutes (not minutes:seconds)
    ("2-00:00:00", 172800), ("0-00:00:20", 20),                 # days-hours:minutes:seconds
])
def test_walltime_forms(text, seconds):
    """Slurm's documented --time forms, read as Slurm reads them (sbatch(1))."""
    assert parse_walltime(text) == seconds


@pytest.mark.parametrize("text", ["1h", "00:61:00", "", "0", "-5", "1:2:3:4", "1-", "1-2:3:4:5", "0:00", "1.5",
                                  "05:60", "1-00:00:60", True, [1]])
def test_bad_walltimes(text):
    with pytest.raises(ValueError) as e:
        parse_walltime(text)
    if text not in ("0", "0:00"):
        assert "days-hours:minutes" in str(e.value) and "minutes:seconds" in str(e.value)


@pytest.mark.parametrize("seconds,text", [(20, "00:00:20"), (3661, "01:01:01"), (93600, "26:00:00")])
def test_format_walltime_keeps_seconds(seconds, text):
    assert format_walltime(seconds) == text
    assert parse_walltime(text) == seconds
    assert Resources(walltime="00:00:20").walltime_seconds == 20


def test_python_function_is_checked_without_importing(tmp_path, monkeypatch):
    """The module is found on sys.path and its source read, never executed (it would raise here)."""
    (tmp_path / "jobmod.py").write_text("raise RuntimeError('imported')\ntry:\n    import numpy as np\n"
                                        "except ImportError:\n    np = None\ndef work(ctx):\n    pass\n"
                                        "if __name__ == '__main__':\n    work(None)\n")
    (tmp_path / "broken.py").write_text("def work(ctx:\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    def plan(function: str):
        return plan_from_dict({"name": "r", "steps": {"p": {"kind": "python", "params": {"function": function}}}},
                              "r.yaml")

    assert plan("jobmod:work").order == ["p"]
    assert plan("jobmod:np").order == ["p"]
    with pytest.raises(UserError, match=r"(?s)step 'p'.*defines no 'wrok'"):
        plan("jobmod:wrok")
    with pytest.raises(UserError, match="syntax error at line 1"):
        plan("broken:work")
    with pytest.raises(UserError, match="'jobmodd' is not importable"):
        plan("jobmodd:work")
    assert plan("os.path:join").order == ["p"]  # already imported: looked up directly


def test_override_reaches_a_list_element_by_index():
    raw = {"name": "r", "steps": {"a": {"kind": "shell", "params": {"command": "true",
                                                                     "sources": [{"path": "x"}, {"path": "y"}]}}}}
    plan = plan_from_dict(raw, "r.yaml", ["steps.a.params.sources.1.path=/data/z.jsonl",
                                          "steps.a.params.sources.0={path: w, weight: 2}"])
    assert plan.step("a").params["sources"] == [{"path": "w", "weight": 2}, {"path": "/data/z.jsonl"}]
    for bad, message in [("steps.a.params.sources.2.path=q", r"sources is a list of 2 .* index, 0 to 1"),
                         ("steps.a.params.sources.x=q", "name an element by its index"),
                         ("steps.a.params.command.x=q", "command is not a mapping")]:
        with pytest.raises(UserError, match=message):
            plan_from_dict(raw, "r.yaml", [bad])
