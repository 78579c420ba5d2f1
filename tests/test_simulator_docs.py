"""The pages under docs/simulators/ quote the simulators' own numbers, and name every fault mode.

A technician reads there that the BMS trips above 70 A charging, so a sequence's 65 A that does
not trip it is the item's behaviour, not the sequence's mistake. Each number in a table row that
names its source is compared with that source:

* ``sim: <plant> <key>`` - the plant's configuration in stations/sim.yaml (``bms.oc_threshold_a``),
  or the plant's default for a key the station does not set;
* ``code: <module>.<name>[.<attribute or key> ...]`` - a constant of the simulator's code;
* ``station: <path>`` - a value of stations/sim.yaml itself (``devices.psu.config.watchdog``), the
  number of a quantity such as ``2 s``.

A changed threshold in the station or the code fails here until the page says the same.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import pytest

from bench.device import fault_catalogue, load_plant_builder
from bench.station import SimulatorEntry, load_station
from tests.conftest import ROOT

PAGES = ROOT / "docs" / "simulators"
STATION = ROOT / "stations" / "sim.yaml"
# The table of a plant's configuration section: its defaults, for keys the station leaves out.
SECTION_SPECS = {
    ("bms_pack", ""): "_TOP",
    ("bms_pack", "bms"): "_BMS",
    ("bms_pack", "supply"): "_SUPPLY",
    ("bms_pack", "analyzer"): "_ANALYZER",
    ("bms_pack", "h2_sensor"): "_H2",
    ("bms_pack", "chamber"): "_CHAMBER",
    ("bms_pack", "fault_box"): "_FIB",
    ("bms_pack", "daq"): "_DAQ",
    ("fccu", ""): "_TOP",
    ("fccu", "exhaust_analyser"): "_EXHAUST",
}
SOURCE = re.compile(r"`(sim|code|station): ([^`]+)`")
NUMBER = re.compile(r"[-+−]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def _simulators() -> list[SimulatorEntry]:
    return load_station(STATION).model.simulators


def resolve(kind: str, ref: str) -> float:
    if kind == "code":
        return float(_code(ref))
    if kind == "station":
        node: Any = load_station(STATION).model.model_dump()
        for part in ref.split("."):
            node = node[part]
        number = NUMBER.search(str(node))
        assert number is not None, f"{ref}: '{node}' has no number"
        return float(number.group())
    plant, key = ref.split()
    return float(_sim(plant, key))


def _code(ref: str) -> Any:
    parts = ref.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name) if hasattr(obj, name) else obj[name]
        return obj
    raise AssertionError(f"no module in '{ref}'")


def _sim(plant: str, key: str) -> Any:
    config = next(s.config for s in _simulators() if s.kind == plant)
    section, _, name = key.rpartition(".")
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            break
        node = node[part]
    else:
        return node
    module = importlib.import_module(load_plant_builder(plant).__module__)
    spec = getattr(module, SECTION_SPECS[(plant, section)])
    default = spec[name][1]
    assert default is not None, f"{plant} {key}: not in stations/sim.yaml and no default"
    return default


def checked_rows(page: Path) -> list[tuple[str, float, str, str]]:
    """(row text, number quoted, source kind, source reference) of every table row naming its source."""
    rows = []
    for line in page.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        found = SOURCE.search(cells[-1])
        if found is None:
            continue
        number = NUMBER.search(cells[-2].replace(" ", "").replace(",", ""))
        assert number is not None, f"{page.name}: no number in '{cells[-2]}' ({line})"
        rows.append((line, float(number.group().replace("−", "-")), found.group(1), found.group(2).strip()))
    return rows


PAGE_FILES = sorted(p for p in PAGES.glob("*.md") if p.name != "README.md")


@pytest.mark.parametrize("page", PAGE_FILES, ids=[p.stem for p in PAGE_FILES])
def test_every_quoted_number_is_the_simulators(page: Path) -> None:
    rows = checked_rows(page)
    assert rows, f"{page.name} quotes no number with its source"
    wrong = []
    for line, quoted, kind, ref in rows:
        actual = resolve(kind, ref)
        if abs(quoted - actual) > 1e-9 * max(1.0, abs(actual)):
            wrong.append(f"{ref} is {actual:g}, the page says {quoted:g}: {line}")
    assert not wrong, f"{page.name}:\n" + "\n".join(wrong)


def test_the_check_can_fail(tmp_path: Path) -> None:
    page = tmp_path / "x.md"
    page.write_text(
        "| trip | 71 A | `sim: bms_pack bms.oc_charge_threshold_a` |\n"
        "| debounce | 0.2 s | `sim: bms_pack bms.detection_time_s` |\n",
        encoding="utf-8",
    )
    (_, quoted, kind, ref), (_, q2, k2, r2) = checked_rows(page)
    assert resolve(kind, ref) == 70.0 != quoted  # the station's value, not the page's
    assert resolve(k2, r2) == q2 == 0.2  # the plant's default: the station does not set it


def test_every_simulated_device_has_a_page() -> None:
    index = (PAGES / "README.md").read_text(encoding="utf-8")
    for sim in _simulators():
        for device in sim.devices:
            row = re.search(rf"^\| `{device}` \|.*\]\((\S+\.md)\)", index, re.M)
            assert row, f"device {device} has no row in docs/simulators/README.md"
            assert (PAGES / row.group(1)).is_file(), row.group(1)


def test_every_fault_mode_is_described() -> None:
    text = "\n".join(p.read_text(encoding="utf-8") for p in PAGE_FILES)
    for sim in _simulators():
        for name in fault_catalogue(sim.kind):
            assert f"`{name}`" in text, f"fault mode {name} ({sim.kind}) is on no page of docs/simulators/"
