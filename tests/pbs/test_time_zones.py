"""qstat prints times with the client's ctime(), in the local time zone of the machine running it (JST on
ABCI's login nodes): they are read in that zone (TZ honoured) and stored as UTC."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from llmjobs.cluster.pbs import state

CAPTURES = Path(__file__).parent / "captures"


@pytest.fixture
def tokyo(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_qstat_times_are_read_in_the_local_zone(tokyo):
    assert state.parse_time("Sun Nov 22 18:43:59 2026") == datetime(2026, 11, 22, 9, 43, 59, tzinfo=UTC)
    assert state.parse_time(1795373112) == datetime.fromtimestamp(1795373112, UTC)
    attrs = state.jobs_from_qstat((CAPTURES / "25_qstat_x_f_json_finished_ok.json").read_text())
    status = state.classify(next(iter(attrs.values())))
    assert status.started_at.tzinfo is not None and status.ended_at.tzinfo is not None
    assert status.started_at <= status.ended_at


def test_utc_client_reads_the_same_text_as_utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        assert state.parse_time("Sun Nov 22 18:43:59 2026") == datetime(2026, 11, 22, 18, 43, 59, tzinfo=UTC)
    finally:
        monkeypatch.undo()
        time.tzset()


RECIPE = """
name: tz
defaults: {resources: {walltime: "00:05:00"}}
steps:
  nap:
    kind: shell
    params: {command: "sleep 2"}
"""


@pytest.mark.timeout(180)
def test_times_of_a_run_under_jst_are_stored_as_utc(pbs_cli, tmp_path, pbs_profile):
    # the CLI and the emulated server both run in JST, as on an ABCI login node
    pbs_cli.env["TZ"] = "Asia/Tokyo"
    profile = pbs_profile()
    recipe = tmp_path / "tz.yaml"
    recipe.write_text(RECIPE)
    before = datetime.now(UTC) - timedelta(seconds=2)  # qstat prints whole seconds
    r = pbs_cli("submit", recipe, "--cluster", profile, "--wait")
    assert r.returncode == 0, r.stdout + r.stderr
    after = datetime.now(UTC) + timedelta(seconds=2)
    view = pbs_cli.status(r.stdout.split()[0])
    [attempt] = view["steps"][0]["shards"][0]["attempts"]
    started = datetime.fromisoformat(attempt["started_at"]).astimezone(UTC)
    ended = datetime.fromisoformat(attempt["ended_at"]).astimezone(UTC)
    assert before <= started <= ended <= after, (before, started, ended, after)
    assert (ended - started).total_seconds() >= 1  # the job slept 2 s
