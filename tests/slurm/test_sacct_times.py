"""sacct prints times in the local zone of the machine running it (TZ honoured); they are stored as UTC.
Needs no Slurm: one sacct row as the backend reads it."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from llmjobs.cluster.backends.slurm import job_status


def test_sacct_times_are_read_in_the_local_zone(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        status = job_status("COMPLETED", "None", "0:0", "n1", "2026-11-22T18:43:59", "2026-11-22T18:44:09")
    finally:
        monkeypatch.undo()
        time.tzset()
    assert status.started_at == datetime(2026, 11, 22, 9, 43, 59, tzinfo=UTC)
    assert status.ended_at == datetime(2026, 11, 22, 9, 44, 9, tzinfo=UTC)
    assert job_status("PENDING", "Priority", "0:0", "", "Unknown", "Unknown").started_at is None
