"""qstat/qsub handling in ``llmjobs.cluster.pbs.commands``, with stand-in commands that replay the outputs
captured from a real PBS server (stdout, stderr and exit code of ``tests/pbs/captures``), for the cases the
emulator does not produce: an answer that stays unreadable after repair (forcing one query per id), and
a server that never answers."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from llmjobs.cluster.backends.base import JobState
from llmjobs.cluster.pbs import commands, tracking

CAPTURES = Path(__file__).parent / "captures"
FAST = commands.Retry(attempts=3, first_delay_s=0.01)


def _stub(tmp_path: Path, name: str, body: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def _replay(capture: str) -> str:
    """Shell lines printing a capture's stdout and stderr and exiting with its code."""
    base = CAPTURES / capture
    lines = [f"cat {base}"]
    if Path(f"{base}.stderr").exists():
        lines.append(f"cat {base}.stderr >&2")
    lines.append(f"exit $(cat {base}.rc)")
    return "\n".join(lines) + "\n"


@pytest.fixture
def on_path(monkeypatch):
    def put(bin_dir: Path) -> None:
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return put


def test_known_and_unknown_ids_in_one_call(tmp_path, on_path):
    calls = tmp_path / "calls"
    on_path(_stub(tmp_path, "qstat", f'echo "$@" >> {calls}\n' + _replay("63_qstat_x_f_json_known_and_unknown.json")))
    answer = commands.qstat(["14.vm", "99999.vm"], retry=FAST)
    assert set(answer.jobs) == {"14.vm"}
    assert answer.unknown == {"99999.vm"}
    assert answer.answered == {"14.vm", "99999.vm"}
    assert calls.read_text().splitlines() == ["-x -f -F json 14.vm 99999.vm"]  # one call, rc 153 accepted


def test_array_parents_are_asked_with_t(tmp_path, on_path):
    calls = tmp_path / "calls"
    on_path(_stub(tmp_path, "qstat", f'echo "$@" >> {calls}\n' + _replay("50_qstat_x_f_json_multi.json")))
    got = tracking.poll([tracking.JobKey("16[1].vm", str(tmp_path)), tracking.JobKey("18.vm", str(tmp_path)),
                         tracking.JobKey("20.vm", str(tmp_path))], retry=FAST)
    assert calls.read_text().splitlines() == ["-x -f -F json -t 16[].vm 18.vm 20.vm"]
    assert got["16[1].vm"].state == JobState.SUCCEEDED
    assert got["18.vm"].state == JobState.FAILED and got["18.vm"].exit_code == 3
    assert got["20.vm"].state == JobState.CANCELLED


def test_unreadable_answer_falls_back_to_one_id_at_a_time(tmp_path, on_path):
    calls = tmp_path / "calls"
    body = (f'echo "$@" >> {calls}\n'
            'if [ "$#" -gt 5 ]; then echo "{ \\"Jobs\\": { broken"; exit 0; fi\n'
            f'case "$5" in 14.vm) {_replay("25_qstat_x_f_json_finished_ok.json")};; '
            f'18.vm) {_replay("31_qstat_x_f_json_failed_exit3.json")};; esac\n')
    on_path(_stub(tmp_path, "qstat", body))
    answer = commands.qstat(["14.vm", "18.vm"], retry=FAST)
    assert set(answer.jobs) == {"14.vm", "18.vm"}
    assert answer.answered == {"14.vm", "18.vm"}
    assert len(calls.read_text().splitlines()) == 3


def test_server_down_concludes_nothing(tmp_path, on_path):
    calls = tmp_path / "calls"
    on_path(_stub(tmp_path, "qstat", f'echo x >> {calls}\n'
                                      'echo "qstat: cannot connect to server pbs1 (errno=15010)" >&2\nexit 255\n'))
    folder = tmp_path / "logs"
    got = tracking.poll([tracking.JobKey("14.vm", str(folder))], grace_s=0, retry=FAST)
    assert got == {}  # not lost, not failed: unknown this time
    assert len(calls.read_text().splitlines()) == FAST.attempts
    assert not folder.exists()  # nothing was recorded as missing either


def test_finished_without_x_is_an_answer(tmp_path, on_path):
    on_path(_stub(tmp_path, "qstat", _replay("44_qstat_f_json_deleted_without_x.json")))
    answer = commands.qstat(["20.vm"], retry=FAST)
    assert answer.answered == {"20.vm"} and answer.jobs == {}


def test_qsub_retries_only_what_never_reached_the_server(tmp_path, on_path):
    count = tmp_path / "count"
    count.write_text("0")
    on_path(_stub(tmp_path, "qsub", f'n=$(($(cat {count}) + 1)); echo $n > {count}\n'
                                     'if [ $n -lt 3 ]; then echo "qsub: cannot connect to server pbs1 '
                                     '(errno=15010)" >&2; exit 255; fi\n'
                                     f'cat {CAPTURES}/04_qsub_array_job.txt\n'))
    assert commands.qsub("job.sh", retry=FAST) == "16[].vm"
    assert count.read_text().strip() == "3"

    count.write_text("0")
    on_path(_stub(tmp_path, "qsub", f'n=$(($(cat {count}) + 1)); echo $n > {count}\n'
                                     'echo "qsub: Job violates queue and/or server resource limits" >&2; exit 38\n'))
    with pytest.raises(commands.PBSCommandError, match="violates queue"):
        commands.qsub("job.sh", retry=FAST)
    assert count.read_text().strip() == "1"


def test_a_job_qstat_never_prints_readably_ends_by_its_exit_file(tmp_path, on_path):
    on_path(_stub(tmp_path, "qstat", 'echo "{ \\"Jobs\\": { broken"\nexit 0\n'))
    folder = tmp_path / "logs"
    folder.mkdir()
    key = tracking.JobKey("21.pbs1", str(folder))
    assert tracking.poll([key], grace_s=0, retry=FAST) == {}  # no verdict, and never "lost"
    tracking.exit_path(folder, "21.pbs1").write_text("0\n")
    assert tracking.poll([key], grace_s=0, retry=FAST)["21.pbs1"].state == JobState.SUCCEEDED
