"""Every bad input gets one clear message naming the file, step and field, exit code 2, registry unchanged."""

from __future__ import annotations

import contextlib
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
    "cycle": (("name: x\nsteps:\n  a: {kind: shell, after: [c], params: {command: 'true'}}\n"
              "  b: {kind: shell, after: [a], params: {command: 'true'}}\n"
              "  c: {kind: shell, after: [b], params: {command: 'true'}}\n"),
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
    # a profile is read like a recipe: a key given twice is refused, not silently overwritten
    twice = tmp_path / "twice.yaml"
    twice.write_text("backend: local\nscheduler: {max_parallel: 1}\nscheduler: {max_parallel: 8}\n")
    r = cli("submit", good, "--cluster", twice)
    assert r.returncode == 2 and "twice.yaml" in r.stderr and "scheduler" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) <= 3
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


def _one_line(r) -> str:
    """The error is one message (Rich may wrap it at 80 columns), no traceback."""
    assert "Traceback" not in r.stderr and "File \"" not in r.stderr, r.stderr
    assert r.stderr.count("error:") == 1, r.stderr
    return " ".join(r.stderr.split())


SHELL_STEP = "  a: {kind: shell, params: {command: 'true'}}\n"
RECIPE_CASES = {
    # name: (recipe bytes, parts of the message)
    "not_utf8": (b"name: x\n# caf\xe9\nsteps:\n" + SHELL_STEP.encode(), ["not UTF-8", "line 2"]),
    "deep_list": (b"name: x\nsteps:\n" + SHELL_STEP.encode() + b"junk: " + b"[" * 20000 + b"]" * 20000 + b"\n",
                  ["nested"]),
    "duplicate_step": (f"name: x\nsteps:\n{SHELL_STEP}  a: {{kind: shell, params: {{command: 'false'}}}}\n".encode(),
                       ["duplicate key 'a' at line 4 (first at line 3)"]),
    "duplicate_name": (f"name: x\nsteps:\n{SHELL_STEP}name: y\n".encode(),
                       ["duplicate key 'name' at line 4 (first at line 1)"]),
    "alias_bomb": (("name: x\nsteps:\n" + SHELL_STEP + "l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n"
                    + "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 9))).encode(),
                   ["100,000 values", "alias"]),
    "too_large": (b"name: x\nsteps:\n" + SHELL_STEP.encode() + b"# " + b"y" * 1_100_000 + b"\n",
                  ["larger than 1 MB"]),
    "step_name_newline": (b'name: x\nsteps:\n  "a\\n": {kind: shell, params: {command: "true"}}\n',
                          ["step name 'a\\n'", "letters, digits"]),
    "python_no_module": (b"name: x\nsteps:\n  p: {kind: python, params: {function: 'no_such_mod_zz:main'}}\n",
                         ["step 'p'", "params.function", "'no_such_mod_zz' is not importable"]),
    "python_no_function": (b"name: x\nsteps:\n  p: {kind: python, params: {function: 'llmjobs.jobs.shell:nope'}}\n",
                           ["step 'p'", "params.function", "defines no 'nope'"]),
    "eval_no_data": (b"name: x\nsteps:\n  e: {kind: eval.self_consistency, params: {model: m, data: /nonexistent/d.jsonl}}\n",
                     ["step 'e'", "/nonexistent/d.jsonl: data file not found"]),
    "eval_bad_preset": ((b"name: x\nsteps:\n  e: {kind: eval.self_consistency, params: {model: m, data: d.jsonl, "
                        b"preset: nope}}\n"), ["step 'e'", "unknown data preset 'nope'"]),
}


@pytest.mark.parametrize("case", sorted(RECIPE_CASES))
def test_bad_recipe_file(case, cli, home, tmp_path, seeded):
    data, expected = RECIPE_CASES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_bytes(data)
    before = _counts(home)
    r = cli("submit", path, timeout=60)
    assert r.returncode == 2, (r.stdout, r.stderr[-3000:])
    message = _one_line(r)
    assert path.name in message
    for part in expected:
        assert part in message, (part, r.stderr)
    assert _counts(home) == before


def test_eval_field_mapping_checked_at_submit_unless_upstream(cli, home, tmp_path, seeded):
    data = tmp_path / "d.jsonl"
    data.write_text('{"question": "1+1?", "answer": "2"}\n')
    before = _counts(home)
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"name: x\nsteps:\n  e: {{kind: eval.self_consistency, params: {{model: m, data: {data}}}}}\n")
    r = cli("submit", bad)
    assert r.returncode == 2
    assert "no field 'problem'" in _one_line(r) and "fields present: question, answer" in _one_line(r)
    # the same file with the mapping that fits passes; an upstream output (${...}) is not required at submit
    good = tmp_path / "good.yaml"
    good.write_text(f"name: x\nsteps:\n  mk: {{kind: shell, params: {{command: 'true'}}}}\n"
                    f"  e: {{kind: eval.self_consistency, params: {{model: m, data: {data}, fields: {{problem: question}}}}}}\n"
                    "  e2: {kind: eval.self_consistency, params: {model: m, data: '${steps.mk.output}/d.jsonl'}}\n")
    r = cli("submit", good, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert _counts(home) == before


def test_registry_urls(cli, home, tmp_path, seeded):
    good = tmp_path / "good.yaml"
    good.write_text("name: good\n" + GOOD_STEPS)
    before = _counts(home)
    for url, part in [("bogus", "registry URL 'bogus' is not a SQLAlchemy URL"),
                      (f"sqlite:///{tmp_path}/typo/registry.db", "does not exist"),
                      ("sqlite:////proc/registry.db", "cannot open the registry"),  # unwritable, even for root
                      ("postgresql+psycopg://nobody@127.0.0.1:1/none", "cannot open the registry")]:
        r = cli("--registry", url, "runs", timeout=60)
        assert r.returncode == 2, (url, r.stderr)
        assert part in _one_line(r), (url, r.stderr)
    cli.env["LLMJOBS_REGISTRY"] = "bogus"  # the environment variable is checked the same way
    r = cli("submit", good, timeout=60)
    del cli.env["LLMJOBS_REGISTRY"]
    assert r.returncode == 2 and "registry URL 'bogus'" in _one_line(r)
    assert not (tmp_path / "typo").exists()  # no new empty registry
    assert _counts(home) == before


def test_messages_keep_square_brackets(cli, home, tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("name: good\n" + GOOD_STEPS)
    r = cli("submit", good, "--name", "llmjobs[postgres]\n")
    assert r.returncode == 2, r.stderr
    assert "--name 'llmjobs[postgres]\\n'" in _one_line(r) and "no newline" in _one_line(r)  # no markup eaten
    assert _counts(home) == (0, 0, 0, 0)


@pytest.mark.parametrize("work_dir", ["/proc/llmjobs-test/runs", "/etc/passwd/runs"])
def test_work_dir_that_cannot_exist_is_refused_before_recording(work_dir, cli, home, tmp_path, seeded):
    good = tmp_path / "good.yaml"
    good.write_text("name: good\n" + GOOD_STEPS)
    profile = tmp_path / "bad-dir.yaml"
    profile.write_text(f"backend: local\nwork_dir: {work_dir}\n")
    before = _counts(home)
    r = cli("submit", good, "--cluster", profile)
    assert r.returncode == 2 and f"work_dir {work_dir}" in _one_line(r)
    assert _counts(home) == before


def test_a_recorded_run_whose_folder_cannot_exist_does_not_crash_the_cli(cli, home):
    """Runs recorded by an older version with such a work_dir: status and cancel work, resume fails in one line."""
    from llmjobs.registry import Registry, Run, Shard, Step

    reg = Registry()
    with reg.session() as s:
        run = Run(id="broken-000001", name="b", status="pending", recipe={}, backend="local", version="0",
                  profile={"name": "x", "backend": "local", "work_dir": "/proc/llmjobs-test"},
                  run_dir="/proc/llmjobs-test/broken-000001")
        step = Step(name="a", position=0, kind="shell", params={"command": "true"}, resources={}, after=[],
                    num_shards=1, fingerprint="f", status="pending", output_dir="/proc/llmjobs-test/broken-000001/a")
        step.shards = [Shard(index=0, status="pending")]
        run.steps.append(step)
        s.add(run)
    reg.close()
    for command in (["status", "broken-000001"], ["cancel", "broken-000001"]):
        r = cli(*command)
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    r = cli("resume", "broken-000001")
    assert r.returncode == 1 and "/proc/llmjobs-test" in _one_line(r)
    r = cli("--debug", "resume", "broken-000001")
    assert r.returncode == 1 and "Traceback" in r.stderr  # --debug shows where it failed


def _tmpfs(path: Path, size: str) -> bool:
    import subprocess

    path.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, check=False).returncode == 0


def test_full_disk_is_one_line(cli, home, tmp_path):
    """A real full file system (a small tmpfs, filled): needs root to mount; skipped without."""
    import subprocess

    full = tmp_path / "full"
    if not _tmpfs(full, "256k"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        (full / "filler").write_bytes(b"\0" * 200_000)  # what is left cannot hold a registry
        cli.env["LLMJOBS_HOME"] = str(full / "home")
        good = tmp_path / "good.yaml"
        good.write_text("name: good\n" + GOOD_STEPS)
        r = cli("submit", good)
        assert r.returncode == 2 and "cannot open the registry" in _one_line(r) and "full" in _one_line(r)
        # a registry elsewhere, run folders on the full disk: the job files cannot be written (ENOSPC)
        cli.env["LLMJOBS_HOME"] = str(home)
        (full / "runs").mkdir()
        profile = tmp_path / "full.yaml"
        profile.write_text(f"backend: local\nwork_dir: {full / 'runs'}\n")
        with contextlib.suppress(OSError), open(full / "filler2", "wb") as f:  # fill it to the last byte
            while True:
                f.write(b"\0" * 4096)
                f.flush()
        r = cli("submit", good, "--cluster", profile)
        assert r.returncode == 1 and "No space left on device" in _one_line(r)
    finally:
        subprocess.run(["umount", str(full)], check=False)
