"""``llmjobs eval``'s recipe: a valid one-step recipe whose params pass the kind's own validation."""

from __future__ import annotations

from llmjobs import jobs
from llmjobs.jobs.eval.shortcut import eval_recipe


def test_eval_recipe_is_a_valid_one_step_recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mgsm.tsv").write_text("q\t1\n")
    recipe = eval_recipe("org/model-on-hub", "mgsm.tsv", 8, preset="mgsm_ja", nodes=2, gpus_per_node=8,
                         walltime="2:00:00", max_tokens=1024, template=None)
    step = recipe["steps"]["eval"]
    assert recipe["name"] == "eval-mgsm" and step["kind"] == "eval.self_consistency"
    assert step["params"]["data"] == str(tmp_path / "mgsm.tsv")  # absolute: the job runs elsewhere
    assert step["params"]["model"] == "org/model-on-hub"  # not a local path: left as given
    assert "template" not in step["params"]  # unset options keep the kind's defaults
    assert step["resources"] == {"nodes": 2, "gpus_per_node": 8, "walltime": "2:00:00"}
    params = jobs.validate_params(jobs.get("eval.self_consistency"), step["params"])
    assert params.samples == 8 and params.max_tokens == 1024

    from llmjobs.recipes import plan_from_dict

    plan = plan_from_dict(recipe, "llmjobs eval")
    assert plan.order == ["eval"] and plan.step("eval").resources.nodes == 2
