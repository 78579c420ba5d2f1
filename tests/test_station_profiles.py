"""The full-bus profile of the simulated BMS (stations/sim-fullbus.yaml): every cell voltage every
100 ms, everything else at its DBC cycle, and otherwise the same station as sim.yaml."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from simulators.plant import build_plant
from tests.conftest import ROOT
from tests.served import load_yaml
from tests.test_sim_bms import DB, DBC, Station, scenario

FULL_BUS = ROOT / "stations" / "sim-fullbus.yaml"
GROUPS = 64  # 192 cells, 3 per BMS_CellVoltages frame


def _bms_pack(station: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = next(s for s in station["simulators"] if s["kind"] == "bms_pack")["config"]
    return config


def test_full_bus_station_differs_from_sim_only_in_its_id_and_the_cell_groups() -> None:
    sim = load_yaml(ROOT / "stations" / "sim.yaml")
    full = load_yaml(FULL_BUS)
    assert full["id"] == "sim-fullbus"
    assert _bms_pack(full)["bms"].pop("cell_groups_per_cycle") == GROUPS
    for key in ("id", "title"):
        sim.pop(key)
        full.pop(key)
    assert full == sim


def test_full_bus_sends_every_cell_every_cycle_and_the_rest_at_its_dbc_cycle() -> None:
    async def body(st: Station) -> None:
        await asyncio.sleep(2.0)
        bench = st.bench
        cells = bench.of("BMS_CellVoltages")
        instants = sorted({t for t, _ in cells})
        assert len(instants) == pytest.approx(20, abs=1)
        assert {round(b - a, 9) for a, b in itertools.pairwise(instants)} == {0.1}
        for instant in instants:
            groups = [v["cell_group"] for t, v in cells if t == instant]
            assert groups == list(range(GROUPS)), instant
        for m in DB.messages:
            if "BMS" in m.senders and m.name != "BMS_CellVoltages":
                assert len(bench.of(m.name)) == pytest.approx(2.0 / (m.cycle_time / 1000), abs=1), m.name
        # 640 cell frames a second, 670 from the BMS in all.
        per_s = sum(1 for t, n, _, _ in bench.frames if n.startswith("BMS_") and 0.5 < t <= 1.5)
        assert per_s == 64 * 10 + 3 * 10 + 3

    scenario(body, bms={"cell_groups_per_cycle": GROUPS})


def test_more_cell_groups_than_the_pack_has_is_one_clear_line() -> None:
    with pytest.raises(ValueError, match=r"bms.cell_groups_per_cycle must be <= 64") as info:
        build_plant(
            {"dbc": DBC, "can_channel": "groups", "bms": {"cell_groups_per_cycle": 65}},
            faults=(),
            seed=0,
            register=lambda n, h: None,
        )
    assert "\n" not in str(info.value)
