"""The MF4 archive of a run decodes (asammdf ``extract_bus_logging``) to the values the record holds,
carries the DBC, and a crash mid-run leaves the BLF written so far readable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, Completed, bench
from tests.report_support import short_sequence, station_copy


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Completed:
    tmp = tmp_path_factory.mktemp("mf4")
    r = bench(
        "run", short_sequence(tmp), "--station", station_copy(tmp), "--reports", tmp / "reports", "-q",
        "-p", "hold=60 s",
        env={"BENCH_REPORT_PDF": "0", "BENCH_KEY_DIR": str(tmp / "nokey")},
    )  # fmt: skip
    assert r.rc == 0, r.out + r.err
    return r


def test_mf4_has_every_frame_and_the_dbc(run: Completed) -> None:
    from asammdf import MDF

    d = run.run_dir()
    ended = json.loads((d / "events.jsonl").read_text().splitlines()[-1])
    with MDF(str(d / "can.mf4")) as mdf:
        frames = mdf.get("CAN_DataFrame.ID")
        assert len(frames.samples) == ended["frames"] > 500
        names = [Path(str(a.file_name)).name for a in mdf.attachments]
        assert "bms.dbc" in names
        data, _path, _md5 = mdf.extract_attachment(names.index("bms.dbc"))
        assert bytes(data) == (d / "inputs" / "bms.dbc").read_bytes()


def test_mf4_decodes_to_the_values_of_the_record(run: Completed) -> None:
    import can
    import cantools
    from asammdf import MDF

    d = run.run_dir()
    dbc = d / "inputs" / "bms.dbc"
    with MDF(str(d / "can.mf4")) as mdf:
        decoded = mdf.extract_bus_logging(database_files={"CAN": [(str(dbc), 0)]})
        sig = decoded.get("cell_v_max")
        t_mf4, v_mf4 = np.asarray(sig.timestamps), np.asarray(sig.samples, dtype=float)
    # The raw record: the BLF, decoded frame by frame with cantools.
    db = cantools.database.load_file(str(dbc))
    msg = db.get_message_by_name("BMS_CellStats")
    with can.BLFReader(str(d / "can.blf")) as reader:
        start = reader.start_timestamp
        raw = [
            (m.timestamp - start, msg.decode(m.data)["cell_v_max"]) for m in reader if m.arbitration_id == msg.frame_id
        ]
    assert len(raw) == len(v_mf4) > 100
    for i in range(0, len(raw), 37):  # a sample through the whole run
        t, v = raw[i]
        assert t_mf4[i] == pytest.approx(t, abs=1e-6)
        assert v_mf4[i] == pytest.approx(float(v), abs=1e-9)
    # And the measurement in result.json: max of bms.cell_v_max since the 'hold' step.
    result = json.loads((d / "result.json").read_text())
    hold = next(s for s in result["steps"] if s["name"] == "hold")
    meas = next(m for m in result["measurements"] if m["name"] == "cell_voltage")
    window = (t_mf4 >= hold["started"] - 1e-6) & (t_mf4 <= meas["t"] + 1e-6)
    assert float(v_mf4[window].max()) == pytest.approx(meas["value"], abs=1e-9)


CRASH = """
import os, sys, can
w = can.BLFWriter(sys.argv[1])
for i in range(60000):
    w.on_message_received(can.Message(timestamp=1000.0 + i * 0.001, arbitration_id=0x100 + i % 5, data=bytes([i % 256] * 8), is_extended_id=False))
os._exit(1)  # the controller dies: no stop(), no flush of the writer's buffer
"""


def test_crash_leaves_the_blf_readable(tmp_path: Path) -> None:
    from bench.record.mf4 import blf_to_mf4, read_blf

    blf = tmp_path / "crash.blf"
    subprocess.run([sys.executable, "-c", CRASH, str(blf)], cwd=ROOT, check=False)
    frames = read_blf(blf)
    # Whole containers written before the crash are there; only the unflushed tail is lost.
    assert 30000 < len(frames) <= 60000
    assert np.all(np.diff(frames.t) > 0)
    assert frames.arbitration_id[7] == 0x100 + 7 % 5 and frames.data[7, 0] == 7
    assert blf_to_mf4(blf, tmp_path / "crash.mf4") == len(frames)
