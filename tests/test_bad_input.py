"""Every bad input gets one clear message naming the file, step and field, exit code 2, registry unchanged."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

GOOD_STEPS = """
steps:
  a: {kind: shell, params: {command: "true"}}
  b: {kind: shell, after: [a], params: {command: "true"}}
"""

CASES = {
    "malformed_yaml": ("name: x\nsteps:\n  a: {kind: shell, params: {command: 'true'}\n", ["malformed YAML"]),
    "unknown_kind": ("name: x\nsteps:\n  a: {kind: shel, params: {command: 'true'}}\n",
                     ["step 'a'", "field 'kind'", "unknown kind 'shel'", "allowed:", "shell", "python"]),
    "cycle": ("name: x\nsteps:\n  a: {kind: shell, after: [c], params: {command: 'true'}}\n"
              "  b: {kind: shell, after: [a], params: {command: 'true'}}\n"
              "  c: {kind: shell, after: [b], params: {command: 'true'}}\n",
              ["dependency cycle", "a -> c -> b -> a"]),
    "after_missing": ("name: x\nsteps:\n  a: {kind: shell, after: [nope], params: {command: 'true'}}\n",
                      ["step 'a'", "field 'after'", "no step 'nope'"]),
    "ref_missing": ("name: x\nsteps:\n  a: {kind: shell, params: {command: 'cat ${steps.gone.output}/x'}}\n",
                    ["step 'a'", "field 'params'", "${steps.gone.output}", "no step 'gone'"]),
    "bad_walltime": ("name: x\nsteps:\n  a: {kind: shell, resources: {walltime: '1 hour'}, params: {command: 'true'}}\n",
                     ["step 'a'", "resources.walltime", "hours:minutes:seconds", "days-hours:minutes"]),
    "bad_resources": ("name: x\nsteps:\n  a: {kind: shell, resources: {gpus_per_node: -1}, params: {command: 'true'}}\n",
                      ["step 'a'", "resources.gpus_per_node", "greater than or equal to 0"]),
    "unknown_resource": ("name: x\nsteps:\n  a: {kind: shell, resources: {gpu: 1}, params: {command: 'true'}}\n",
                         ["step 'a'", "resources.gpu", "unknown field", "gpus_per_node"]),
    "missing_command": ("name: x\nsteps:\n  a: {kind: shell, params: {cmd: 'true'}}\n",
                        ["step 'a'", "field 'params'", "params.command"]),
    "bad_function": ("name: x\nsteps:\n  a: {kind: python, params: {function: 'no colon'}}\n",
                     ["step 'a'", "params.function"]),
    "no_steps": ("name: x\nsteps: {}\n", ["field 'steps'"]),
    "not_a_mapping": ("- a\n- b\n", ["a recipe is a mapping"]),
}


def _counts(home: Path) -> tuple[int, ...]:
    db = home / "registry.db"
    if not db.exists():
        return (0, 0, 0, 0)
    con = sqlite3.connect(db)
    try:
        return tuple(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                     for t in ("runs", "steps", "attempts", "events"))
    finally:
        con.close()


@pytest.fixture
def seeded(home):
    """A registry that already holds a run with history, so 'unchanged' means something."""
    from llmjobs.registry import Registry, Run, Shard, Step

    reg = Registry()
    with reg.session() as s:
        run = Run(id="seed-000001", name="seed", status="pending", recipe={}, profile={}, backend="local",
                  run_dir=str(home / "runs" / "seed-000001"), version="0")
        step = Step(name="a", position=0, kind="shell", params={"command": "true"}, resources={}, after=[],
                    num_shards=1, fingerprint="f", status="pending", output_dir="/nonexistent/a")
        step.shards = [Shard(index=0, status="pending")]
        run.steps.append(step)
        s.add(run)
        s.flush()
        reg.transition(s, run, "failed", "seeded")
    reg.close()
    return "seed-000001"


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_recipe(case, cli, home, tmp_path, seeded):
    text, expected = CASES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    before = _counts(home)
    r = cli("submit", path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    message = " ".join(r.stderr.split())  # Rich may wrap long lines
    assert str(path.name) in message
    for part in expected:
        assert part in message, (part, r.stderr)
    assert "Traceback" not in r.stderr
    assert _counts(home) == before


def test_bad_override(cli, home, tmp_path, seeded):
    good = tmp_path / "good.yaml"
    good.write_text("name: good\n" + GOOD_STEPS)
    before = _counts(home)
    r = cli("submit", good, "--set", "steps.zzz.params.x=1")
    assert r.returncode == 2 and "no step 'zzz'" in r.stderr and "steps are: a, b" in r.stderr
    r = cli("submit", good, "--set", "novalue")
    assert r.returncode == 2 and "KEY=VALUE" in r.stderr
    r = cli("submit", good, "--set", "steps.a.resources.walltime=soon")
    assert r.returncode == 2 and "walltime" in r.stderr
    assert _counts(home) == before


def test_unknown_cluster_profile(cli, home, tmp_path, seeded):
    good = tmp_path / "good.yaml"
    good.write_text("name: good\n" + GOOD_STEPS)
    before = _counts(home)
    r = cli("submit", good, "--cluster", "nosuchcluster")
    assert r.returncode == 2 and "unknown cluster profile 'nosuchcluster'" in r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("backend: lsf\n")
    r = cli("submit", good, "--cluster", bad)
    assert r.returncode == 2 and "unknown backend 'lsf'" in r.stderr and "bad.yaml" in r.stderr
    assert _counts(home) == before


def test_resources_the_local_machine_lacks(cli, home, tmp_path, seeded):
    recipe = tmp_path / "gpu.yaml"
    recipe.write_text("name: g\nsteps:\n  t: {kind: shell, resources: {gpus_per_node: 8}, params: {command: 'true'}}\n")
    before = _counts(home)
    cli.env["CUDA_VISIBLE_DEVICES"] = ""
    r = cli("submit", recipe)
    assert r.returncode == 2 and "asks for 8 GPU(s)" in r.stderr
    assert _counts(home) == before


@pytest.mark.parametrize("command", [["status", "nope"], ["resume", "nope"], ["cancel", "nope"],
                                     ["logs", "nope", "a"]])
def test_unknown_run_id(command, cli, home, seeded):
    before = _counts(home)
    r = cli(*command)
    assert r.returncode == 2 and "unknown run id 'nope'" in r.stderr
    assert _counts(home) == before


def test_missing_recipe_file(cli, home, tmp_path):
    r = cli("submit", tmp_path / "absent.yaml")
    assert r.returncode == 2 and "absent.yaml" in r.stderr
    assert _counts(home) == (0, 0, 0, 0)
