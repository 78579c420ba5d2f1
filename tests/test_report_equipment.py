"""Equipment register at connect: calibration due dates and identities refuse a run, or are overridden
with a reason that the report states as a deviation."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import bench
from tests.report_support import physical, plain_text, short_sequence, station_copy

EXPIRED = {"due: 2027-01-15": "due: 2020-01-15"}
NOPDF = {"BENCH_REPORT_PDF": "0"}


def test_out_of_cal_refuses_a_physical_station(tmp_path: Path) -> None:
    station = station_copy(tmp_path, replace=EXPIRED)
    physical(station)
    r = bench("run", short_sequence(tmp_path), "--station", station, "--reports", tmp_path / "reports", env=NOPDF)
    assert r.rc == 2, r.out + r.err
    assert "SIM-PSU-01" in r.err and "calibration due 2020-01-15 has passed" in r.err
    assert "--allow-out-of-cal" in r.err
    assert not (tmp_path / "reports").exists() or not any((tmp_path / "reports").iterdir()), "nothing ran"


def test_out_of_cal_override_proceeds_with_a_deviation(tmp_path: Path) -> None:
    station = station_copy(tmp_path, replace=EXPIRED)
    physical(station)
    r = bench(
        "run", short_sequence(tmp_path), "--station", station, "--reports", tmp_path / "reports", "-q",
        "--allow-out-of-cal", "calibration lab backlog, approved by QM",
        env=NOPDF,
    )  # fmt: skip
    assert r.rc == 0, r.out + r.err
    result = r.result()
    assert not result["station"]["virtual_time"], "a physical station runs on the wall clock"
    dev = [d for d in result["deviations"] if "out of calibration" in d]
    assert dev and "calibration lab backlog, approved by QM" in dev[0] and "SIM-PSU-01" in dev[0]
    html = plain_text((r.run_dir() / "report.html").read_text())
    assert "calibration lab backlog, approved by QM" in html
    assert "calibration due 2020-01-15 has passed" in html


def test_out_of_cal_on_a_simulated_station_only_warns(tmp_path: Path) -> None:
    station = station_copy(tmp_path, replace=EXPIRED)
    r = bench("run", short_sequence(tmp_path), "--station", station, "--reports", tmp_path / "reports", "-q", env=NOPDF)
    assert r.rc == 0, r.out + r.err
    assert "warning:" in r.err and "not refused" in r.err
    assert any("simulated station (not refused)" in d for d in r.result()["deviations"])


def test_identity_mismatch_refuses_the_run(tmp_path: Path) -> None:
    station = station_copy(tmp_path, replace={"    serial: SIM0000001\n": "    serial: PSB-REAL-4711\n"})
    r = bench("run", short_sequence(tmp_path), "--station", station, "--reports", tmp_path / "reports", "-q", env=NOPDF)
    assert r.rc == 3, r.out + r.err
    result = r.result()
    assert result["verdict"] == "ERROR"
    assert "identity does not match the equipment register (SIM-PSU-01)" in result["reason"]
    assert "serial: register says 'PSB-REAL-4711', the device reported 'SIM0000001'" in result["reason"]
    assert all(s["outcome"] != "PASS" for s in result["steps"] if s["phase"] == "steps"), "no step ran"
    assert {s["device"]: s["safe"] for s in result["safe_state"]}.get("psu") is True


def test_item_identity_from_uds_is_checked(tmp_path: Path) -> None:
    station = station_copy(
        tmp_path, replace={"identity: {vin: WDB9634031L000001,": "identity: {vin: WDB0000000L999999,"}
    )
    r = bench("run", short_sequence(tmp_path), "--station", station, "--reports", tmp_path / "reports", "-q", env=NOPDF)
    assert r.rc == 3, r.out + r.err
    assert "device bms: identity does not match the item identity" in r.result()["reason"]
    assert "vin: register says 'WDB0000000L999999'" in r.result()["reason"]


def test_identity_mismatch_override_proceeds_with_a_deviation(tmp_path: Path) -> None:
    station = station_copy(tmp_path, replace={"    serial: SIM0000001\n": "    serial: PSB-REAL-4711\n"})
    r = bench(
        "run", short_sequence(tmp_path), "--station", station, "--reports", tmp_path / "reports", "-q",
        "--allow-identity-mismatch", "supply swapped for repair, same model",
        env=NOPDF,
    )  # fmt: skip
    assert r.rc == 0, r.out + r.err
    dev = [d for d in r.result()["deviations"] if "identity does not match" in d]
    assert dev and "supply swapped for repair, same model" in dev[0]
    assert "supply swapped for repair, same model" in plain_text((r.run_dir() / "report.html").read_text())
