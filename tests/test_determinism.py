"""Two runs with the same seed make the same record, apart from the run id and the wall clock.

What may differ between two runs of the same sequence, station, parameters and seed, and nothing
else (docs/lifecycle.md, "Identical reruns"):

* ``events.jsonl``: ``run_id`` and ``started_utc`` of ``run_started``, and what follows from them:
  the ``prev`` of every line (the hash chain runs through the first line) and, in ``run_ended``,
  the SHA-256 of each output file below that carries the run id or the wall clock;
* ``can.blf``: the start and stop times (SYSTEMTIME) in the file header; every byte of the
  frames after the header is the same (arbitration id, data, flags and each frame's time since
  the start);
* ``can.mf4``: the start time of its HD block and the time of each FH (file history) block;
* ``result.json``: ``run_id``, ``started_utc``, ``ended_utc`` and ``wall_duration_s``;
* ``junit.xml`` and ``report.html``: the run id and the start and end times (the date with them);
  the plain report of a fault-matrix cell also its "Duration (wall clock)" row.

The two runs are separate processes with different ``PYTHONHASHSEED``: an order that came from
hashing (a set of strings) would differ. The fault-matrix cells run twice in one process, so a
cache left warm by the first run must not change the second.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import can
import pytest

from bench.campaign import run_cell
from bench.record.chain import GENESIS, encode_line, line_hash
from tests.conftest import ROOT, SIM_STATION

# Short, with both plants' noise (the DAQ against the BMS), PASS.
SEQUENCE = ROOT / "sequences" / "verification" / "bms_measurement.yaml"
SEED = 7

# The wall-clock fields of the record, and its identity: the only fields allowed to differ.
RUN_STARTED_EXCEPTIONS = {"run_id", "started_utc"}
RESULT_EXCEPTIONS = {"run_id", "started_utc", "ended_utc", "wall_duration_s"}
# BLF file header (python-can's FILE_HEADER_STRUCT, 144 bytes): the start and stop times are two
# SYSTEMTIMEs (8 x uint16 each) at bytes 40..56 and 56..72.
BLF_HEADER_SIZE = 144
BLF_WALL_CLOCK = (40, 72)
# Outputs whose bytes carry the run id or the wall clock; each is compared below on its own.
OUTPUTS_WITH_WALL_CLOCK = {"can.blf", "can.mf4", "result.json", "junit.xml", "report.html"}
WALL_DURATION_ROW = re.compile(r"<tr><th>Duration \(wall clock\)</th><td>[^<]*</td></tr>")


def _run(reports: Path, hash_seed: str) -> Path:
    env = dict(os.environ, BENCH_REPORT_PDF="0", PYTHONHASHSEED=hash_seed)
    args = ["run", str(SEQUENCE), "--station", str(SIM_STATION), "--seed", str(SEED), "--reports", str(reports), "-q"]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run_dir,) = [p for p in reports.iterdir() if p.is_dir()]
    return run_dir


def _mf4_wall_clock(data: bytes) -> list[tuple[int, int]]:
    """Byte ranges of the MDF 4 times: the HD block's start time and every FH block's time."""
    hd = 64  # the HD block follows the 64-byte identification block
    assert data[hd : hd + 4] == b"##HD"
    links = struct.unpack_from("<6Q", data, hd + 24)  # dg, fh, ch, at, ev, md
    ranges = [(hd + 24 + 6 * 8, hd + 24 + 7 * 8)]
    fh = links[1]
    while fh:
        assert data[fh : fh + 4] == b"##FH"
        (link_count,) = struct.unpack_from("<Q", data, fh + 16)
        (next_fh,) = struct.unpack_from("<Q", data, fh + 24)
        time_at = fh + 24 + 8 * link_count
        ranges.append((time_at, time_at + 8))
        fh = next_fh
    return ranges


def _masked(data: bytes, ranges: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for lo, hi in ranges:
        out[lo:hi] = bytes(hi - lo)
    return bytes(out)


def _frames(path: Path) -> list[tuple[Any, ...]]:
    reader = can.BLFReader(str(path))
    start = reader.start_timestamp
    return [
        (
            round(m.timestamp - start, 6),
            m.arbitration_id,
            m.is_extended_id,
            m.is_remote_frame,
            m.is_error_frame,
            m.is_fd,
            m.bitrate_switch,
            m.error_state_indicator,
            m.is_rx,
            m.channel,
            m.dlc,
            bytes(m.data),
        )
        for m in reader
    ]


def _with_wall_clock_of(text: str, mine: dict[str, Any], theirs: dict[str, Any], other: str) -> str:
    """``text`` with this run's id, start and end times and wall duration written as the other run's
    (``other``: the other run's text, where its wall duration is read)."""
    for key in ("run_id", "started_utc", "ended_utc"):
        text = text.replace(mine[key], theirs[key])
    for key in ("started_utc", "ended_utc"):  # the dates shown on their own (date of issue)
        text = text.replace(mine[key][:10], theirs[key][:10])
    # The plain report (of a fault-matrix cell) shows the wall duration in a row of its own.
    theirs_wall = WALL_DURATION_ROW.search(other)
    if theirs_wall is not None:
        text = WALL_DURATION_ROW.sub(lambda _: theirs_wall.group(0), text)
    return text


def _compare_outputs(a: Path, b: Path, min_frames: int = 100) -> None:
    files_a = sorted(p.name for p in a.iterdir())
    assert files_a == sorted(p.name for p in b.iterdir())
    result_a = json.loads((a / "result.json").read_text())
    result_b = json.loads((b / "result.json").read_text())
    assert set(result_a) == set(result_b)
    differ = {k for k in result_a if result_a[k] != result_b[k]}
    assert differ <= RESULT_EXCEPTIONS, {k: (result_a[k], result_b[k]) for k in differ - RESULT_EXCEPTIONS}

    blf_a, blf_b = (a / "can.blf").read_bytes(), (b / "can.blf").read_bytes()
    assert blf_a[BLF_HEADER_SIZE:] == blf_b[BLF_HEADER_SIZE:], "CAN frames differ"
    assert _masked(blf_a[:BLF_HEADER_SIZE], [BLF_WALL_CLOCK]) == _masked(blf_b[:BLF_HEADER_SIZE], [BLF_WALL_CLOCK])
    frames = _frames(a / "can.blf")
    assert len(frames) > min_frames and frames == _frames(b / "can.blf")

    if "can.mf4" in files_a:  # a fault-matrix cell writes none, nor a rendered report
        mf4_a, mf4_b = (a / "can.mf4").read_bytes(), (b / "can.mf4").read_bytes()
        assert _masked(mf4_a, _mf4_wall_clock(mf4_a)) == _masked(mf4_b, _mf4_wall_clock(mf4_b))

    for name in ("junit.xml", "report.html"):
        if name not in files_a:
            continue
        text_a, text_b = (a / name).read_text(), (b / name).read_text()
        assert _with_wall_clock_of(text_a, result_a, result_b, text_b) == text_b, name


def _compare_events(a: Path, b: Path) -> None:
    """B's log, byte for byte, from A's with only the allowed fields taken from B, the chain redone."""
    lines_a = (a / "events.jsonl").read_bytes().splitlines()
    lines_b = (b / "events.jsonl").read_bytes().splitlines()
    assert len(lines_a) == len(lines_b) > 10
    prev = GENESIS
    for i, (line_a, line_b) in enumerate(zip(lines_a, lines_b, strict=True)):
        event_a, event_b = json.loads(line_a), json.loads(line_b)
        assert encode_line(event_b) == line_b  # decoding and encoding again gives the very bytes
        event_a["prev"] = prev
        if event_a["kind"] == "run_started":
            for key in RUN_STARTED_EXCEPTIONS:
                event_a[key] = event_b[key]
        if event_a["kind"] == "run_ended":
            outputs_a, outputs_b = event_a["outputs"], event_b["outputs"]
            assert set(outputs_a) == set(outputs_b)
            assert {f for f in outputs_a if outputs_a[f] != outputs_b[f]} <= OUTPUTS_WITH_WALL_CLOCK
            event_a["outputs"] = outputs_b
        assert encode_line(event_a) == line_b, f"events.jsonl line {i + 1} ({event_a['kind']}) differs"
        prev = line_hash(line_b)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    # Different hash seeds in the two processes: set and dict orders from hashing would show.
    reports = tmp_path_factory.mktemp("determinism")
    return _run(reports / "a", "1"), _run(reports / "b", "2")


def test_two_runs_with_the_same_seed_make_the_same_record(two_runs: tuple[Path, Path]) -> None:
    run_a, run_b = two_runs
    _compare_outputs(run_a, run_b)  # first: events.jsonl holds the hashes of these files
    _compare_events(run_a, run_b)


def test_the_comparison_allows_the_wall_clock_and_nothing_else(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    run_a, run_b = two_runs

    def changed(name: str, edit: Any) -> Path:
        copy = tmp_path / f"{name}-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(run_b, copy)
        data = (copy / name).read_bytes()
        (copy / name).write_bytes(edit(data))
        return copy

    def byte_flipped(at: int) -> Any:
        def edit(data: bytes) -> bytes:
            i = at % len(data)
            return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]

        return edit

    # The wall clock in the BLF header may differ (the start time's seconds) ...
    _compare_outputs(run_a, changed("can.blf", byte_flipped(BLF_WALL_CLOCK[0] + 12)))
    # ... any other byte of the header, or of the frames, may not.
    with pytest.raises(AssertionError):
        _compare_outputs(run_a, changed("can.blf", byte_flipped(BLF_WALL_CLOCK[1])))
    with pytest.raises(AssertionError, match="CAN frames differ"):
        _compare_outputs(run_a, changed("can.blf", byte_flipped(-1)))
    # A result field other than the run id and the wall clock.
    with pytest.raises(AssertionError):
        _compare_outputs(
            run_a, changed("result.json", lambda data: data.replace(b'"sim_duration_s": ', b'"sim_duration_s": 1'))
        )
    # One byte of one event (its chain then breaks on every later line as well).
    lines = (run_b / "events.jsonl").read_bytes().splitlines()
    middle = len(lines) // 2
    with pytest.raises(AssertionError, match=f"line {middle + 1} "):
        _compare_events(
            run_a,
            changed(
                "events.jsonl",
                lambda data: data.replace(lines[middle], lines[middle].replace(b'"t":', b'"t":1', 1)),
            ),
        )


# Cells of the fault matrix with each kind of verdict: PASS, FAIL, ABORTED.
CELLS = [
    ("iso26262/bms_message_lost.yaml", "nominal"),
    ("iso26262/bms_message_lost.yaml", "slow_reaction"),
    ("iso26262/bms_message_lost.yaml", "crc_corrupted"),
    ("iso26262/fccu_message_lost.yaml", "fc_command_timeout_ignored"),
    # The reference sequence, long enough for every plant (pack, supply, DAQ, analyzer) to matter.
    ("r100/overcharge.yaml", "slow_reaction"),
]


@pytest.mark.parametrize(("sequence", "fault"), CELLS)
def test_a_fault_matrix_cell_is_the_same_run_to_run(tmp_path: Path, sequence: str, fault: str) -> None:
    path = str(ROOT / "sequences" / sequence)
    params = {"observation": "1min"}  # the profile of tests/fault_matrix_expected.yaml
    first = run_cell(path, str(SIM_STATION), fault, params, str(tmp_path / "first"), SEED)
    second = run_cell(path, str(SIM_STATION), fault, params, str(tmp_path / "second"), SEED)
    assert first.verdict in ("PASS", "FAIL", "ABORTED"), first.reason
    assert first.run_id != second.run_id
    # Their records too, as for two runs of the command line.
    run_a, run_b = (tmp_path / run / "runs" / cell.run_id for run, cell in (("first", first), ("second", second)))
    _compare_outputs(run_a, run_b, min_frames=10)
    _compare_events(run_a, run_b)
    assert (first.verdict, first.reason, first.sim_s, first.unsafe_end, first.measurements) == (
        second.verdict,
        second.reason,
        second.sim_s,
        second.unsafe_end,
        second.measurements,
    )
