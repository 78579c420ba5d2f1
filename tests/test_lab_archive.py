"""``bench lab archive``: finished jobs leave the broker for a file, and only once they are on disk.

The retained history grew without limit (every agent and every ``lab status`` read all of it).
The archive takes every job whose result counts, appends it as one JSON line, fsyncs, then clears
the job's retained record; a write that fails clears nothing.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from bench.errors import LoadError
from bench.lab import client
from bench.lab.archive import ArchivedJob, parse_older_than, read_archive
from tests.conftest import bench
from tests.labkit import (  # noqa: F401  (fixtures)
    SHORT,
    Mosquitto,
    finished_history,
    mosquitto_fixture,
    retained,
)


def _jobs_on_broker(m: Mosquitto) -> set[str]:
    got = asyncio.run(retained(m.broker(), ["lab/jobs/+"]))
    return {t.rsplit("/", 1)[1] for t, p in got.items() if p}


def test_finished_jobs_move_to_the_archive_and_open_ones_stay(mosquitto: Mosquitto, tmp_path: Path) -> None:
    url = mosquitto.url()
    finished = asyncio.run(finished_history(mosquitto, 50))
    ref = client.sequence_ref(str(SHORT))
    still_open = [client.make_job(ref, {"hold": "1 s"}, {}) for _ in range(2)]
    asyncio.run(client.submit(mosquitto.broker(), still_open, check=False))
    archive = tmp_path / "lab-archive.jsonl"

    # Jobs submitted a moment ago are not older than a day: nothing moves.
    out = bench("lab", "archive", "--to", archive, "--older-than", "1d", "--broker", url)
    assert out.rc == 0 and out.out.startswith("archived 0 finished jobs"), out
    assert not archive.exists()

    out = bench("lab", "archive", "--to", archive, "--broker", url)
    assert out.rc == 0, out.err
    assert out.out.startswith("archived 50 finished jobs"), out.out
    assert "2 open" in out.out, out.out
    lines = [ArchivedJob.model_validate_json(raw) for raw in archive.read_bytes().splitlines()]
    assert sorted(line.job.job for line in lines) == sorted(finished)
    assert all(line.result.verdict == "PASS" and line.claims == {1: ["bench-a"]} for line in lines)
    assert _jobs_on_broker(mosquitto) == {j.job for j in still_open}

    # Status reads the broker, and the archive for the history.
    live = bench("lab", "status", "--broker", url)
    assert live.rc == 0 and "2 open, 0 finished" in live.out, live.out
    both = bench("lab", "status", "--archive", archive, "--all", "--broker", url)
    assert both.rc == 0, both.err
    assert "2 open, 50 finished (50 of them from the archive)" in both.out, both.out
    assert both.out.count(" archived ") == 50

    # Archiving again finds nothing new.
    again = bench("lab", "archive", "--to", archive, "--broker", url)
    assert again.rc == 0 and again.out.startswith("archived 0 finished jobs"), again.out
    assert len(archive.read_bytes().splitlines()) == 50


def test_a_write_that_fails_clears_nothing(mosquitto: Mosquitto, tmp_path: Path) -> None:
    url = mosquitto.url()
    finished = asyncio.run(finished_history(mosquitto, 20))
    # /dev/full: every write fails with "No space left on device", as on a full disk.
    for target in (Path("/dev/full"), tmp_path / "no-such-folder" / "archive.jsonl"):
        out = bench("lab", "archive", "--to", target, "--broker", url)
        assert out.rc == 3, out
        lines = out.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: archive {target}"), out.err
        assert "nothing was cleared" in lines[0]
        assert _jobs_on_broker(mosquitto) == set(finished)


def test_a_torn_line_is_kept_apart_and_reported(mosquitto: Mosquitto, tmp_path: Path) -> None:
    archive = tmp_path / "archive.jsonl"
    archive.write_bytes(b'{"v": 1, "archived_utc": "2026-')  # an append cut short by a crash
    asyncio.run(finished_history(mosquitto, 3))
    out = bench("lab", "archive", "--to", archive, "--broker", mosquitto.url())
    assert out.rc == 0, out.err
    read = read_archive(archive)
    assert len(read.jobs) == 3 and read.damaged == [1]
    status = bench("lab", "status", "--archive", archive, "--broker", mosquitto.url())
    assert status.rc == 0 and "1 damaged lines skipped (line 1)" in status.err, status
    assert json.loads(archive.read_bytes().splitlines()[1])["result"]["verdict"] == "PASS"


def test_durations() -> None:
    assert parse_older_than("90 s") == 90 and parse_older_than("30 min") == 1800 and parse_older_than("7d") == 7 * 86400
    out = bench("lab", "archive", "--to", "x", "--older-than", "soon")
    assert out.rc == 2 and out.err.strip() == "error: --older-than soon: 'soon' is not a number with a unit"
    # 'm' is a metre, never a minute: refused, not read as 30 metres of age.
    with pytest.raises(LoadError) as refused:
        parse_older_than("30m")
    assert (
        str(refused.value) == "--older-than 30m: expected a duration > 0 with a unit of time (s, min, h, d), got '30m'"
    )
