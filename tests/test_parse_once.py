"""Station, sequence and DBC files are parsed once per process for the same contents.

A fault-matrix worker connects the same station for every cell; the parse caches are keyed on
a file's whole contents, so an edited file is parsed again and a refused file is refused again.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench.device import ConfigError
from bench.errors import LoadError
from bench.station import load_station
from drivers.can_dbc import _load_dbc
from simulators.dbc import load_ecu_dbc

ROOT = Path(__file__).resolve().parent.parent


def test_an_edited_station_is_parsed_again(tmp_path: Path) -> None:
    station = tmp_path / "sim.yaml"
    shutil.copy(ROOT / "stations" / "sim.yaml", station)
    first = load_station(station)
    again = load_station(station)
    assert again.source.root is first.source.root  # the same text: parsed once
    station.write_text(station.read_text().replace(f"id: {first.model.id}", "id: edited-station", 1))
    edited = load_station(station)
    assert edited.model.id == "edited-station"
    station.write_text(station.read_text() + "\n  - [unclosed\n")
    for _ in range(2):  # a refused file is not remembered: refused the same way each time
        with pytest.raises(LoadError, match="invalid YAML"):
            load_station(station)


def test_an_edited_dbc_is_parsed_again(tmp_path: Path) -> None:
    dbc = tmp_path / "bms.dbc"
    text = (ROOT / "dbc" / "bms.dbc").read_text(encoding="cp1252")
    dbc.write_text(text, encoding="cp1252")
    first = _load_dbc(dbc, "bms.dbc")
    assert _load_dbc(dbc, "bms.dbc") is first
    dbc.write_text(text.replace("BMS_Status", "BMS_State"), encoding="cp1252")
    assert _load_dbc(dbc, "bms.dbc").get_message_by_name("BMS_State") is not None
    dbc.write_text(text.replace("BO_ 257 BMS_PackValues", "BO_ 256 BMS_PackValues"), encoding="cp1252")
    for _ in range(2):
        with pytest.raises(ConfigError, match="same frame id"):
            _load_dbc(dbc, "bms.dbc")


def test_the_simulated_ecus_share_one_parse_and_still_check_their_frames(tmp_path: Path) -> None:
    dbc = tmp_path / "bms.dbc"
    text = (ROOT / "dbc" / "bms.dbc").read_text(encoding="cp1252")
    dbc.write_text(text, encoding="cp1252")
    first = load_ecu_dbc(str(dbc), "bms_pack", ["BMS_Status"])
    assert load_ecu_dbc(str(dbc), "bms_pack", ["BMS_Status"]) is first
    with pytest.raises(ValueError, match=r"bms_pack config: dbc .* has no message BMS_Nothing"):
        load_ecu_dbc(str(dbc), "bms_pack", ["BMS_Nothing"])
    dbc.write_text("BO_ 1 broken", encoding="cp1252")
    with pytest.raises(ValueError, match="bms_pack config: cannot load dbc"):
        load_ecu_dbc(str(dbc), "bms_pack", ["BMS_Status"])
