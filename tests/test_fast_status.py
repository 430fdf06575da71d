"""`llmjobs status` of a finished run on SQLite runs without SQLAlchemy, typer or the controller, and prints
exactly what the full command prints; a run that is not finished is still synced."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmjobs import fast_status
from llmjobs.jobs.task import done_marker, write_done
from llmjobs.registry import Registry
from llmjobs.views import run_summary, run_view

from .conftest import ROOT
from .recorded_runs import end_attempts
from .test_registry_scale import make_run

FAST = [sys.executable, "-m", "llmjobs"]  # what the installed `llmjobs` command runs
# the typer command itself, past the fast path: the reference output
FULL = [sys.executable, "-c", "import sys; from llmjobs.cli import app; sys.argv[0] = 'llmjobs'; app()"]


def _fail_some(reg: Registry, run_id: str) -> None:
    """Shards 0-2 of step b end failed (with a reason), so the status shows shards that need attention."""
    end_attempts(reg, run_id, [("failed", "exit 3: [bold]not markup[/]")], step="b", shards=range(3))


@pytest.fixture
def registry(home, tmp_path) -> Path:
    home.mkdir(parents=True)
    db = home / "registry.db"
    reg = Registry(f"sqlite:///{db}", create=True)
    make_run(reg, "done-aaa111", shards=30)
    make_run(reg, "failed-bbb222", shards=30)
    _fail_some(reg, "failed-bbb222")
    make_run(reg, "live-ccc333", shards=4, attempts=1, finished=False, run_dir=str(tmp_path / "live"))
    reg.close()
    return db


def _run(cmd: list[str], cli, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=cli.env, cwd=ROOT, timeout=120,
                          check=False)


@pytest.mark.parametrize("args", [("done-aaa111",), ("failed-bbb222",), ("failed-bbb222", "--shards"),
                                  ("--json", "failed-bbb222"), ("fail",), ()])
def test_finished_run_prints_what_the_full_command_prints(cli, registry, args):
    fast, full = _run(FAST, cli, "status", *args), _run(FULL, cli, "status", *args)
    assert fast.returncode == full.returncode == 0, (fast.stderr, full.stderr)
    assert fast.stdout == full.stdout and fast.stderr == full.stderr == ""
    if not args:  # the latest run is the live one: the full command answered
        assert "live-ccc333" in fast.stdout
    if "--json" in args:
        steps = json.loads(fast.stdout)["steps"]
        assert steps[1]["counts"] == {"failed": 3, "succeeded": 27}
    elif "failed-bbb222" in args:
        assert "exit 3: [bold]not markup[/]" in fast.stdout  # escaped, as the full command prints it


def test_fast_path_loads_no_registry_machinery_and_reads_like_the_views(cli, registry):
    probe = ("import runpy, sys; sys.argv = ['llmjobs', 'status', sys.argv[1]]\n"
             "try:\n    runpy.run_module('llmjobs', run_name='__main__')\nexcept SystemExit:\n    pass\n"
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'sqlalchemy', 'typer', 'pydantic', "
             "'submitit', 'yaml'}), 'llmjobs.cluster.controller' in sys.modules, file=sys.stderr)")
    fin = _run([sys.executable, "-c", probe], cli, "failed-bbb222")
    assert fin.stderr.strip() == "[] False", fin.stderr
    live = _run([sys.executable, "-c", probe], cli, "live-ccc333")
    assert live.stderr.strip().endswith("True"), live.stderr  # synced by the controller

    reg = Registry(f"sqlite:///{registry}")
    summary, full = fast_status.read(registry, "failed-bbb222", full=True, summary=True)
    assert summary == run_summary(reg, "failed-bbb222")
    assert full == run_view(reg, "failed-bbb222")
    assert fast_status.read(registry, "live-ccc333", full=True, summary=True) is None


def test_unfinished_run_is_still_synced(cli, registry, tmp_path):
    """The live run's jobs wrote their DONE markers: `status` must sync them in, as before."""
    for step in ("a", "b"):
        for i in range(4):
            write_done(done_marker(tmp_path / "live" / ".llmjobs" / step, i), {"attempt": 1})
    r = _run(FAST, cli, "status", "live-ccc333")
    assert r.returncode == 0, r.stderr
    assert "live-ccc333 (scale): succeeded" in r.stdout and "4/4" in r.stdout
    again = _run(FAST, cli, "status", "live-ccc333")  # now finished: the fast path, the same table
    assert again.stdout == r.stdout


@pytest.mark.parametrize("argv", [["status", "--watch", "x"], ["status", "a", "b"], ["runs"], ["--help"],
                                  ["--registry"], ["status", "--help"], ["--verbose", "status"]])
def test_other_command_lines_go_to_the_full_command(argv):
    assert fast_status._parse(argv) is None


def test_registry_the_fast_path_cannot_read_goes_to_the_full_command(cli, registry, tmp_path):
    assert fast_status._parse(["--registry", "sqlite:///x.db", "--debug", "status", "r", "--json"]) == \
        ("sqlite:///x.db", "r", True, False)
    for url in ("postgresql+psycopg://u@h/db", "sqlite:///:memory:", f"sqlite:///{tmp_path}/none.db",
                f"sqlite:///{registry}?mode=ro", "sqlite+pysqlite:///x.db"):
        assert fast_status.sqlite_file(url) is None
    assert fast_status.sqlite_file(f"sqlite:///{registry}") == registry
    # an unknown id is worded by the full command
    r = _run(FAST, cli, "status", "nope")
    assert r.returncode == 2 and r.stderr.startswith("error: unknown run id 'nope'")
