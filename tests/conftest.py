"""Shared fixtures: an isolated LLMJOBS_HOME, the real `llmjobs` command, and registry URLs.

The registry tests run against SQLite and against a real PostgreSQL server named by
LLMJOBS_TEST_POSTGRES_URL (`scripts/postgres-testbed.sh start` prints one). Without it they skip, except
under CI (CI=true), where a missing server is a failure, not a skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LLMJOBS = [sys.executable, "-m", "llmjobs.cli"]


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    h = tmp_path / "home"
    monkeypatch.setenv("LLMJOBS_HOME", str(h))
    monkeypatch.delenv("LLMJOBS_REGISTRY", raising=False)
    return h


class Cli:
    """Runs the real command in a subprocess, as a user would."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def __call__(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([*LLMJOBS, *map(str, args)], capture_output=True, text=True, env=self.env,
                              timeout=timeout, cwd=ROOT, check=False)

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([*LLMJOBS, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=self.env, cwd=ROOT)

    def status(self, run_id: str) -> dict:
        r = self("status", run_id, "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def wait_until(self, run_id: str, predicate, timeout: float = 120) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            view = self.status(run_id)
            if predicate(view):
                return view
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting; last status: {json.dumps(view, indent=1)[:3000]}")


@pytest.fixture
def cli(home) -> Cli:
    env = dict(os.environ)
    env["LLMJOBS_HOME"] = str(home)
    env.pop("LLMJOBS_REGISTRY", None)
    env["COLUMNS"] = "200"
    return Cli(env)


def _postgres_admin_url() -> str | None:
    url = os.environ.get("LLMJOBS_TEST_POSTGRES_URL")
    if not url and os.environ.get("CI") == "true":
        pytest.fail("CI=true but LLMJOBS_TEST_POSTGRES_URL is not set: .ci/run must start PostgreSQL "
                    "(scripts/postgres-testbed.sh start)")
    return url


@pytest.fixture
def postgres_url():
    """A fresh, empty database on the test server; dropped afterwards."""
    admin = _postgres_admin_url()
    if not admin:
        pytest.skip("no PostgreSQL: run `scripts/postgres-testbed.sh start` and set LLMJOBS_TEST_POSTGRES_URL")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"llmjobs_test_{uuid.uuid4().hex[:10]}"
    eng = create_engine(admin, isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    with eng.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    eng.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return request.getfixturevalue("postgres_url")
