"""The browser station's sequence library and its checks of typed input (bench/ui/catalog.py)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from bench.errors import LoadError
from bench.station import load_station
from bench.ui.catalog import LibraryEntry, check_parameters, check_serial, library
from tests.conftest import OVERCHARGE, ROOT, SIM_STATION, bench
from tests.report_support import SHORT_SEQUENCE, station_copy

SEQUENCES = ROOT / "sequences"


@pytest.fixture(scope="module")
def sim_library() -> list[LibraryEntry]:
    return library(SIM_STATION)


def _yaml(path: Path) -> dict:  # type: ignore[type-arg]
    data: dict = YAML(typ="safe").load(path.read_text(encoding="utf-8"))  # type: ignore[type-arg]
    return data


def test_the_library_is_every_sequence_of_the_station_s_folder(sim_library: list[LibraryEntry]) -> None:
    files = sorted(p.resolve() for p in SEQUENCES.rglob("*.yaml") if "steps" in _yaml(p))
    assert len(files) >= 25
    assert sorted(e.path for e in sim_library) == files
    assert [e.id for e in sim_library] == sorted(e.id for e in sim_library)
    for e in sim_library:
        raw = _yaml(e.path)
        assert (e.id, e.title, e.version) == (raw["id"], raw["title"], str(raw["version"]))
        assert (e.standard, e.clause) == (raw["basis"]["standard"], raw["basis"]["clause"])
        assert e.requires == raw["requires"]
        assert e.sha256 == hashlib.sha256(e.path.read_bytes()).hexdigest()
        assert [p.name for p in e.parameters] == list(raw.get("parameters", {}))
        assert e.runnable is None, (e.id, e.runnable)  # the simulated station has every device they use


def test_parameters_come_with_default_unit_limits_and_doc(sim_library: list[LibraryEntry]) -> None:
    oc = next(e for e in sim_library if e.path == OVERCHARGE.resolve())
    raw = _yaml(OVERCHARGE)["parameters"]
    fields = {p.name: p for p in oc.parameters}
    cc = fields["charge_current"]
    assert (cc.default, cc.unit, cc.minimum, cc.maximum) == (raw["charge_current"]["default"], "A", "1 A", None)
    assert cc.doc == raw["charge_current"].get("doc", "")
    assert fields["max_duration"].unit in ("h", "min", "s")
    assert {p.origin for p in oc.parameters} <= {"regulation", "item", "lab", None}
    assert oc.prompts == 0


def test_check_parameters_says_what_bench_run_p_says(sim_library: list[LibraryEntry]) -> None:
    oc = next(e for e in sim_library if e.path == OVERCHARGE.resolve())
    bad = {"charge_current": "40 V", "charge_curent": "40 A", "max_duration": "0.5 A"}
    errors = check_parameters(oc, SIM_STATION, bad)
    assert set(errors) == set(bad)
    for name, value in bad.items():
        r = bench("run", OVERCHARGE, "--station", SIM_STATION, "-p", f"{name}={value}", "--reports", "/nonexistent")
        assert r.rc == 2, r.err
        assert r.err.strip() == f"error: {errors[name]}"
    assert "wrong unit, expected A" in errors["charge_current"]
    assert "did you mean 'charge_current'" in errors["charge_curent"]
    below = check_parameters(oc, SIM_STATION, {"charge_current": "0.5 A"})
    assert below == {"charge_current": "-p charge_current=0.5 A: 0.5 A is below the minimum 1 A"}
    # Good values, another unit of the same kind, and an empty field (the default) are taken.
    assert check_parameters(oc, SIM_STATION, {"charge_current": "40 A", "max_duration": "90 min"}) == {}
    assert check_parameters(oc, SIM_STATION, {"charge_current": "40000 mA", "max_duration": ""}) == {}
    assert check_parameters(oc, SIM_STATION, {}) == {}


def test_broken_files_are_left_out_and_a_sequence_for_other_devices_says_why(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "short.yaml").write_text(SHORT_SEQUENCE)
    (lib / "broken.yaml").write_text("id: BROKEN\nsteps: [\n")
    (lib / "answers.yaml").write_text("answers: {identify: BMS-SN-0000012345}\n")
    (lib / "fuel.yaml").write_text(
        SHORT_SEQUENCE.replace("TEST-REPORT-SHORT", "NEEDS-FCCU").replace("[psu, bms]", "[psu, fccu]")
    )
    station = station_copy(tmp_path, replace={"library: [../sequences]": f"library: [{lib}]"})
    station.write_text(_without_fuel_cell(station.read_text()))
    entries = library(station)
    assert [e.id for e in entries] == ["NEEDS-FCCU", "TEST-REPORT-SHORT"]
    needs, short = entries
    assert short.runnable is None and [p.name for p in short.parameters] == ["hold"]
    assert needs.runnable is not None and "device 'fccu' is not on station" in needs.runnable
    assert "\n" not in needs.runnable
    # Nothing is taken for a sequence that does not build here: each field says why.
    assert check_parameters(needs, station, {"hold": "2 s"}) == {"hold": needs.runnable}


def _without_fuel_cell(text: str) -> str:
    """The station without its fuel-cell devices and their plant."""
    data = YAML(typ="rt")
    doc = data.load(text)
    for dev in ("fccu", "fcio", "h2x"):
        del doc["devices"][dev]
    doc["simulators"] = [s for s in doc["simulators"] if s["kind"] != "fccu"]
    out = io.StringIO()
    data.dump(doc, out)
    return out.getvalue()


def test_a_station_without_a_library_offers_nothing(tmp_path: Path) -> None:
    station = station_copy(tmp_path, replace={"lab:\n  library: [../sequences]\n": ""})
    assert library(station) == []


def test_the_serial_pattern_takes_the_simulated_dut_serials_whole() -> None:
    assert load_station(SIM_STATION).model.ui.serial_pattern
    assert check_serial(SIM_STATION, "BMS-SN-0000012345") is None
    assert check_serial(SIM_STATION, "FCCU-SN-000004711") is None
    for bad in ("BMS-SN-12", "xBMS-SN-0000012345", "BMS-SN-0000012345 ", "bms-sn-0000012345", ""):
        msg = check_serial(SIM_STATION, bad)
        assert msg is not None and "\n" not in msg, bad


def test_without_a_pattern_any_serial_but_none_is_taken(tmp_path: Path) -> None:
    station = station_copy(tmp_path, replace={"ui:\n  serial_pattern:": "ui:\n  listen: 127.0.0.1:8081\n  accounts:"})
    assert check_serial(station, "anything 42") is None
    assert check_serial(station, "  ") == "no DUT serial given"


@pytest.mark.parametrize(
    ("ui", "message"),
    [
        ("ui: {serial_pattern: '(BMS'}", "is not a regular expression"),
        ("ui: {listen: localhost}", "is not HOST:PORT"),
        ("ui: {listen: '127.0.0.1:99999'}", "is not HOST:PORT"),
        ("ui: {pattern: x}", "pattern"),
    ],
)
def test_a_bad_ui_section_is_one_line(tmp_path: Path, ui: str, message: str) -> None:
    station = station_copy(tmp_path)
    text = station.read_text()
    start = text.index("\nui:\n")
    end = text.index("\n\n", start + 1)
    station.write_text(text[: start + 1] + ui + text[end:])
    with pytest.raises(LoadError) as info:
        load_station(station)
    assert "\n" not in str(info.value) and message in str(info.value) and "ui" in str(info.value)
