"""CLI-wide policies: run files private to the user, run ids never cut, log headers on one line, a light
start-up (``--help`` imports no registry, controller or backend)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_run_files_holding_the_environment_are_private(cli, home, tmp_path):
    """A profile's env (a token) reaches job pickles and gate files: none of them, and no folder on the way,
    is open to group or others, whatever the caller's umask."""
    token = "hf_TESTTOKEN_0123456789"
    deep = tmp_path / ("w" * 70) / "runs"  # a long path, for the log header below
    profile = tmp_path / "tok.yaml"
    profile.write_text(f"backend: local\nwork_dir: {deep}\nenv: {{HF_TOKEN: {token}}}\n")
    recipe = tmp_path / "t.yaml"
    recipe.write_text("name: tok\nsteps:\n  a: {kind: shell, params: {command: 'echo token-seen-$HF_TOKEN'}}\n")
    old = os.umask(0o022)  # the usual default: what the CLI must not inherit for run files
    try:
        r = cli("submit", recipe, "--cluster", profile, "--wait")
    finally:
        os.umask(old)
    assert r.returncode == 0, r.stderr
    run_id = r.stdout.split()[0]
    run_dir = deep / run_id
    holding = []
    for path in [deep, *run_dir.rglob("*")]:
        mode = path.lstat().st_mode
        if stat.S_ISDIR(mode):
            assert mode & 0o077 == 0, f"{path} is {oct(mode & 0o777)}"
        elif stat.S_ISREG(mode) and token.encode() in path.read_bytes():
            holding.append(path.name)
            assert mode & 0o077 == 0, f"{path} holds the token and is {oct(mode & 0o777)}"
    assert holding  # the check above saw the files that carry the environment

    # `logs` at 80 columns: the header names the whole (long) path on one line
    cli.env["COLUMNS"] = "80"
    r = cli("logs", run_id, "a")
    assert r.returncode == 0 and "token-seen-" in r.stdout
    headers = [line for line in r.stderr.splitlines() if line.startswith("==> ")]
    assert headers and all(line.endswith(" <==") and str(deep) in line for line in headers), r.stderr


def test_runs_never_cuts_run_ids(cli, home):
    from llmjobs.registry import Registry, Run

    ids = [f"a-long-recipe-name-for-an-evaluation-sweep-{i:02d}-{'%06x' % (i * 7919)}" for i in range(3)]
    reg = Registry()
    with reg.session() as s:
        for rid in ids:
            s.add(Run(id=rid, name="a-long-recipe-name-for-an-evaluation-sweep-of-many-models", status="succeeded",
                      recipe={}, profile={}, backend="local", run_dir=f"/x/{rid}", version="0"))
    reg.close()
    cli.env["COLUMNS"] = "80"
    r = cli("runs")
    assert r.returncode == 0, r.stderr
    assert max(map(len, r.stdout.splitlines())) <= 80
    for rid in ids:
        assert rid in r.stdout, r.stdout  # whole, on one line: other columns fold first


def test_help_imports_no_registry_or_backend():
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "llmjobs.cli", "--help"], capture_output=True,
                       text=True, cwd=ROOT, check=True)
    loaded = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    heavy = {m for m in loaded if m.split(".")[0] in ("sqlalchemy", "alembic", "submitit", "pydantic", "yaml")
             or m.startswith(("llmjobs.cluster", "llmjobs.registry"))}
    assert not heavy, sorted(heavy)
    assert "submit" in r.stdout
