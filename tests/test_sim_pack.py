"""Battery pack model: OCV curves, cell spread bookkeeping, thermal behaviour in overcharge."""

from __future__ import annotations

import itertools
import random

import pytest

from simulators.pack import CHEMISTRIES, LineEnvelope, OcvCurve, Pack, PackParams


@pytest.mark.parametrize("chem", sorted(CHEMISTRIES))
def test_ocv_strictly_increasing_through_overcharge(chem: str) -> None:
    ocv = OcvCurve(CHEMISTRIES[chem].ocv_table)
    values = [ocv(k / 10.0) for k in range(-100, 1301)]
    assert all(b > a for a, b in itertools.pairwise(values))


def test_nmc_curve_landmarks() -> None:
    ocv = OcvCurve(CHEMISTRIES["NMC"].ocv_table)
    assert ocv(0.0) == pytest.approx(3.0, abs=0.01)
    assert ocv(100.0) == pytest.approx(4.2, abs=0.01)
    assert 4.6 <= ocv(110.0) <= 4.8
    assert ocv(105.0) - ocv(100.0) > 3 * (ocv(100.0) - ocv(95.0))  # steeper past full


def test_lfp_curve_is_flat_with_steep_ends() -> None:
    ocv = OcvCurve(CHEMISTRIES["LFP"].ocv_table)
    assert ocv(100.0) == pytest.approx(3.65, abs=0.005)
    assert all(3.2 <= ocv(s) <= 3.35 for s in range(10, 96))
    assert ocv(2.0) < 3.0 and ocv(110.0) > 4.0


def test_line_envelope_matches_brute_force() -> None:
    rng = random.Random(3)
    a = [rng.uniform(-1, 1) for _ in range(50)]
    b = [rng.uniform(0.9, 1.1) for _ in range(50)]
    env = LineEnvelope(a, b, -60.0, 200.0)
    for k in range(-600, 2000, 7):
        x = k / 10.0
        best = max(a[i] + b[i] * x for i in range(50))
        assert a[env(x)] + b[env(x)] * x == pytest.approx(best)


def _pack(**kw: float | str) -> Pack:
    return Pack(PackParams(**kw), random.Random(42))  # type: ignore[arg-type]


def test_max_min_cell_are_true_extremes_while_charging_and_discharging() -> None:
    pack = _pack()
    for current in (120.0, -120.0):
        pack.s = 50.0
        for _ in range(40):
            pack.step(current, 60.0)
            volts = [pack.cell_voltage(i) for i in range(pack.n)]
            assert pack.cell_voltage(pack.max_cell()) == max(volts)
            assert pack.cell_voltage(pack.min_cell()) == min(volts)


def test_cell_spread_is_seeded_and_small() -> None:
    a, b, c = (Pack(PackParams(), random.Random(s)) for s in (1, 1, 2))
    socs = [[p.cell_soc(i) for i in range(p.n)] for p in (a, b, c)]
    assert socs[0] == socs[1] and socs[0] != socs[2]
    assert max(socs[0]) - min(socs[0]) <= 1.0
    assert sum(socs[0]) / a.n == pytest.approx(a.soc_pct)


def test_charge_bookkeeping_and_sign() -> None:
    pack = _pack(initial_soc_pct=50.0, capacity_ah=100.0)
    for _ in range(180):
        pack.step(100.0, 10.0)  # 30 min at 1C
    assert pack.soc_pct == pytest.approx(100.0, abs=0.5)  # mean cell capacity is within +-1 %
    assert pack.terminal_voltage() > pack.ocv_pack()
    pack.step(-100.0, 0.1)
    assert pack.terminal_voltage() < pack.ocv_pack()


def _minutes_to(pack: Pack, current: float, temp_c: float, limit_min: float) -> float | None:
    for k in range(int(limit_min * 600)):
        pack.step(current, 0.1)
        if pack.sensor_temp(pack.hottest_sensor()) > temp_c:
            return k / 600.0
    return None


def test_overcharge_at_60a_passes_70c_within_30_to_60_minutes() -> None:
    pack = _pack(initial_soc_pct=100.0)
    minutes = _minutes_to(pack, 60.0, 70.0, 90.0)
    assert minutes is not None and 30.0 <= minutes <= 60.0
    assert pack.side_heat_w > 5000.0
    # The cell voltage at that point must stay within a 1000 V supply's reach (192 cells).
    assert pack.terminal_voltage() < 1000.0


def test_normal_charge_barely_warms_the_pack() -> None:
    pack = _pack(initial_soc_pct=20.0)
    assert _minutes_to(pack, 60.0, 35.0, 90.0) is None  # 20 % -> 95 % at C/2
    assert pack.side_heat_w == 0.0


def test_lfp_overcharge_heats_less_than_nmc() -> None:
    nmc, lfp = _pack(initial_soc_pct=100.0), _pack(initial_soc_pct=100.0, chemistry="LFP")
    for _ in range(12000):
        nmc.step(60.0, 0.1)
        lfp.step(60.0, 0.1)
    assert nmc.temp_c > lfp.temp_c > 30.0


def test_cold_cells_have_higher_resistance() -> None:
    warm, cold = _pack(initial_temp_c=25.0), _pack(initial_temp_c=-10.0)
    assert cold.r_pack > 1.3 * warm.r_pack
