"""``bench signals``: the catalogue a sequence is checked against, listed for the people who write one.

The list must be the validator's own catalogue (every name ``bench validate`` accepts, no other),
and the pages under docs/signals/ must be what the command prints today: a signal added to a DBC
or a driver shows up in the docs, or this test fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.cli_signals import docs_page_path, markdown_page, signal_rows
from bench.plan import check_station
from bench.station import load_station
from tests.conftest import ROOT, bench

STATIONS = sorted((ROOT / "stations").glob("*.yaml"))


@pytest.mark.parametrize("path", STATIONS, ids=[p.stem for p in STATIONS])
def test_docs_page_is_current(path: Path) -> None:
    station = load_station(path)
    relative = path.relative_to(ROOT)
    page = ROOT / docs_page_path(station)
    want = markdown_page(relative, station, signal_rows(station))
    assert page.is_file(), f"missing {page.relative_to(ROOT)}: bench signals --station {relative} --markdown > it"
    assert page.read_text(encoding="utf-8") == want, (
        f"{page.relative_to(ROOT)} is out of date: bench signals --station {relative} --markdown > {page.relative_to(ROOT)}"
    )


def test_every_docs_page_has_its_station() -> None:
    ids = {load_station(p).model.id for p in STATIONS}
    pages = {p.stem for p in (ROOT / "docs" / "signals").glob("*.md")}
    assert pages == ids


def test_lists_every_signal_of_the_validators_catalogue() -> None:
    station = load_station(ROOT / "stations" / "sim.yaml")
    catalog = check_station(station).catalog
    names = {n for n, info in catalog.items() if n == info.name}
    # The two the reviewer had to find in the DBC.
    assert {"bms.charge_current_limit", "psu.sink_current_set"} <= names
    r = bench("signals")
    assert r.rc == 0, r.err
    listed = [line.split()[0] for line in r.out.splitlines()[1:]]
    assert len(listed) == len(set(listed))
    assert set(listed) == names


def test_a_row_says_unit_states_access_period_and_doc() -> None:
    r = bench("signals", "bms.charge_current_limit")
    assert r.rc == 0, r.err
    row = r.out.splitlines()[1].split()
    # Unit, read only, the BMS_Limits cycle time of the DBC (1000 ms), the DBC comment.
    assert row[:5] == ["bms.charge_current_limit", "A", "-", "read", "1"], r.out
    assert "Maximum allowed charge current" in r.out
    r = bench("signals", "--device", "psu", "psu.*")
    assert r.rc == 0, r.err
    lines = {line.split()[0]: line for line in r.out.splitlines()[1:]}
    assert "set" in lines["psu.sink_current_set"].split() and "when set" in lines["psu.sink_current_set"]
    # A measured value comes with every poll of the station's poll_interval (200 ms).
    assert "200 ms" in lines["psu.current"]
    r = bench("signals", "bms.contactors")
    assert "OPEN, PRECHARGE, CLOSED, WELDED" in r.out


def test_pattern_and_device_filter() -> None:
    r = bench("signals", "--device", "h2", "*")
    assert r.rc == 0, r.err
    names = [line.split()[0] for line in r.out.splitlines()[1:]]
    assert names and all(n.startswith("h2.") for n in names)
    r = bench("signals", "*charge_current_limit")
    assert [line.split()[0] for line in r.out.splitlines()[1:]] == [
        "bms.charge_current_limit",
        "bms.discharge_current_limit",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--station", "stations/missing.yaml"], "stations/missing.yaml:1: station file not found"),
        (["--device", "pus"], "device 'pus' is not on station 'sim'"),
        (["--device", "pus"], "did you mean 'psu'?"),
        (
            ["bms.cell_voltage_max"],
            "no signal of station 'sim' matches 'bms.cell_voltage_max'; did you mean 'bms.cell_v_max'?",
        ),
    ],
)
def test_bad_input_is_one_line(args: list[str], message: str) -> None:
    r = bench("signals", *args)
    assert r.rc == 2, r.out + r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.err
    assert "Traceback" not in r.err
