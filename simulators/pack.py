"""Traction battery pack: N cells in series, OCV(SOC) per chemistry, lumped thermal model.

Cost model: one physics tick touches a handful of floats, never all cells. Cell-to-cell
spread is linear in the pack's charge throughput (each cell i has SOC ``a_i + b_i * s``
where ``s`` is the nominal pack SOC), so which cell is highest or lowest is a precomputed
function of ``s`` (an upper/lower envelope of lines). Individual cells are evaluated only
when somebody asks for them (the BMS sending one BMS_CellVoltages group).
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

# (SOC %, OCV V). Above 100 % the curve continues into overcharge: lithium plating and
# electrolyte oxidation make the voltage climb steeply instead of flattening out.
_NMC_OCV: tuple[tuple[float, float], ...] = (
    (-30.0, 2.00), (-10.0, 2.50), (0.0, 3.00), (2.0, 3.25), (5.0, 3.40), (10.0, 3.50),
    (15.0, 3.56), (20.0, 3.60), (25.0, 3.63), (30.0, 3.66), (35.0, 3.69), (40.0, 3.72),
    (45.0, 3.75), (50.0, 3.79), (55.0, 3.83), (60.0, 3.87), (65.0, 3.91), (70.0, 3.95),
    (75.0, 3.99), (80.0, 4.03), (85.0, 4.07), (90.0, 4.11), (95.0, 4.15), (100.0, 4.20),
    (102.0, 4.26), (105.0, 4.38), (110.0, 4.68), (115.0, 4.88), (120.0, 5.02),
    (130.0, 5.20), (160.0, 5.50),
)  # fmt: skip
_LFP_OCV: tuple[tuple[float, float], ...] = (
    (-30.0, 1.80), (-10.0, 2.20), (0.0, 2.50), (2.0, 2.90), (5.0, 3.10), (10.0, 3.20),
    (20.0, 3.25), (30.0, 3.270), (40.0, 3.285), (50.0, 3.290), (60.0, 3.295), (70.0, 3.315),
    (80.0, 3.325), (90.0, 3.332), (95.0, 3.340), (97.0, 3.360), (99.0, 3.450), (100.0, 3.650),
    (102.0, 3.90), (105.0, 4.15), (110.0, 4.55), (120.0, 4.95), (130.0, 5.15), (160.0, 5.40),
)  # fmt: skip


@dataclass(frozen=True)
class Chemistry:
    name: str
    ocv_table: tuple[tuple[float, float], ...]
    ov_threshold_v: float
    uv_threshold_v: float
    # OV threshold used by the ov_threshold_high fault (a mis-parameterised BMS).
    ov_threshold_high_v: float
    charge_voltage_per_cell_v: float
    discharge_voltage_per_cell_v: float
    # Share of the charging power turned into heat by side reactions once fully overcharged.
    # LFP's olivine cathode releases far less heat when overcharged than layered NMC.
    side_reaction_share: float


CHEMISTRIES: dict[str, Chemistry] = {
    "NMC": Chemistry("NMC", _NMC_OCV, 4.25, 3.00, 4.40, 4.20, 3.20, 0.30),
    "LFP": Chemistry("LFP", _LFP_OCV, 3.65, 2.50, 3.80, 3.60, 2.80, 0.20),
}

# SOC above 100 % over which the side-reaction share ramps from 0 to its full value.
_SIDE_REACTION_RAMP_PCT = 25.0
# Cold cells have a higher resistance; clamp so extreme inputs stay physical.
_R_TEMP_COEFF_PER_K = 0.015


class OcvCurve:
    """Piecewise-linear OCV(SOC) resampled on a uniform grid: one multiply per lookup."""

    STEP = 0.1

    def __init__(self, table: Sequence[tuple[float, float]]) -> None:
        socs = [p[0] for p in table]
        if any(b <= a for a, b in pairwise(socs)):
            raise ValueError("OCV table SOC points must increase")
        self.lo = socs[0]
        n = round((socs[-1] - self.lo) / self.STEP) + 1
        self._inv = 1.0 / self.STEP
        self._grid = [_interp(table, socs, self.lo + k * self.STEP) for k in range(n)]
        self._last = n - 1

    def __call__(self, soc: float) -> float:
        x = (soc - self.lo) * self._inv
        i = int(x)
        if i < 0:
            return self._grid[0]
        if i >= self._last:
            return self._grid[self._last]
        g = self._grid
        v0 = g[i]
        return v0 + (g[i + 1] - v0) * (x - i)

    def many(self, socs: Sequence[float]) -> list[float]:
        """``[self(soc) for soc in socs]`` in one pass: the same arithmetic, without a call per value."""
        lo, inv, g, last = self.lo, self._inv, self._grid, self._last
        out: list[float] = []
        for soc in socs:
            x = (soc - lo) * inv
            i = int(x)
            if i < 0:
                out.append(g[0])
            elif i >= last:
                out.append(g[last])
            else:
                v0 = g[i]
                out.append(v0 + (g[i + 1] - v0) * (x - i))
        return out


def _interp(table: Sequence[tuple[float, float]], socs: Sequence[float], soc: float) -> float:
    k = min(max(bisect_right(socs, soc) - 1, 0), len(table) - 2)
    (x0, y0), (x1, y1) = table[k], table[k + 1]
    return y0 + (y1 - y0) * (soc - x0) / (x1 - x0)


class LineEnvelope:
    """argmax over lines ``a[i] + b[i] * x`` on ``[lo, hi]``, precomputed as breakpoints."""

    def __init__(self, a: Sequence[float], b: Sequence[float], lo: float, hi: float) -> None:
        n = len(a)
        cur = max(range(n), key=lambda i: (a[i] + b[i] * lo, b[i]))
        x = lo
        self._breaks: list[float] = [lo]
        self._index: list[int] = [cur]
        while True:
            best: tuple[float, float, int] | None = None
            for j in range(n):
                if b[j] > b[cur]:
                    xj = (a[cur] - a[j]) / (b[j] - b[cur])
                    if x < xj < hi and (best is None or (xj, -b[j]) < (best[0], -best[1])):
                        best = (xj, b[j], j)
            if best is None:
                break
            x, _, cur = best
            self._breaks.append(x)
            self._index.append(cur)

    def __call__(self, x: float) -> int:
        if len(self._index) == 1:
            return self._index[0]
        return self._index[max(bisect_right(self._breaks, x) - 1, 0)]


@dataclass(frozen=True)
class PackParams:
    cells: int = 192
    chemistry: str = "NMC"
    capacity_ah: float = 120.0
    initial_soc_pct: float = 50.0
    ambient_c: float = 25.0
    initial_temp_c: float | None = None
    internal_resistance_mohm_per_cell: float = 0.8
    thermal_mass_j_per_k: float = 420_000.0
    # Pack to the air around it (the climate chamber's air when there is one).
    thermal_resistance_k_per_w: float = 0.05
    temp_sensors: int = 16
    # Pack to its coolant loop while the loop runs; None: no separate loop, the air path is all.
    cooling_k_per_w: float | None = None
    # Coolant supply temperature; None: ambient_c.
    coolant_c: float | None = None
    # A heater pad on the module of one temperature sensor (1-based): the module's local
    # thermal mass and its thermal resistance to the rest of the pack.
    heater_sensor: int = 1
    heater_thermal_mass_j_per_k: float = 1500.0
    heater_thermal_resistance_k_per_w: float = 0.05


class Pack:
    """State: nominal SOC ``s`` (charge throughput, %), lumped temperature, last current.

    Current is positive when charging the pack.
    """

    def __init__(self, params: PackParams, rng: random.Random) -> None:
        self.p = params
        self.chem = CHEMISTRIES[params.chemistry]
        self.ocv = OcvCurve(self.chem.ocv_table)
        self.n = params.cells
        self.r0_cell = params.internal_resistance_mohm_per_cell * 1e-3
        self._soc_per_as = 100.0 / (3600.0 * params.capacity_ah)
        self.ambient_c = params.ambient_c
        self.coolant_c = params.ambient_c if params.coolant_c is None else params.coolant_c
        # Set by the plant from the chamber every tick: is the coolant loop running?
        self.cooling = True
        # Heater pad power (W) and how far its module is above the pack temperature (K).
        self.heater_w = 0.0
        self.hotspot_k = 0.0
        self._heater_j = min(max(params.heater_sensor, 1), params.temp_sensors) - 1
        self.temp_c = params.ambient_c if params.initial_temp_c is None else params.initial_temp_c
        self.current_a = 0.0
        self.s = params.initial_soc_pct
        self.charge_as = 0.0
        self.side_heat_w = 0.0
        self.r_cell = self.r0_cell
        self._update_resistance()

        # Cell spread: capacity +-1 %, SOC at start +-0.5 %. Drawn once from the seed.
        s0 = params.initial_soc_pct
        self._b = [1.0 / rng.uniform(0.99, 1.01) for _ in range(self.n)]
        self._a = [s0 + rng.uniform(-0.5, 0.5) - s0 * b for b in self._b]
        self._a_mean = sum(self._a) / self.n
        self._b_mean = sum(self._b) / self.n
        self._max_cell = LineEnvelope(self._a, self._b, -60.0, 200.0)
        self._min_cell = LineEnvelope([-a for a in self._a], [-b for b in self._b], -60.0, 200.0)

        # Temperature sensors: fixed offsets plus a share of the rise over ambient (sensors
        # nearer the pack centre see more of it).
        m = params.temp_sensors
        self._tc = [rng.uniform(-0.3, 0.3) for _ in range(m)]
        self._tg = [rng.uniform(0.0, 0.08) for _ in range(m)]
        self._hot = LineEnvelope(self._tc, self._tg, -100.0, 300.0)
        self._cold = LineEnvelope([-c for c in self._tc], [-g for g in self._tg], -100.0, 300.0)

    # -- dynamics ---------------------------------------------------------------------------

    def step(self, current_a: float, dt: float) -> None:
        self.current_a = current_a
        self.charge_as += current_a * dt
        r_pack = self.r_cell * self.n
        heat = current_a * current_a * r_pack
        side = 0.0
        stored = current_a
        if current_a > 0.0:
            over = self._a_mean + self._b_mean * self.s - 100.0
            if over > 0.0:
                # Charge that feeds side reactions is not stored: it leaves as heat.
                ramp = over / _SIDE_REACTION_RAMP_PCT
                share = self.chem.side_reaction_share * (ramp if ramp < 1.0 else 1.0)
                side = share * current_a * self.ocv_pack()
                stored = current_a * (1.0 - share)
        self.s += stored * dt * self._soc_per_as
        self.side_heat_w = side
        p = self.p
        t = self.temp_c
        loss = (t - self.ambient_c) / p.thermal_resistance_k_per_w
        if self.cooling and p.cooling_k_per_w is not None:
            loss += (t - self.coolant_c) / p.cooling_k_per_w
        # The heated module is a small node of its own: it warms fast, and what it passes on
        # heats the whole pack, so the heater's energy is not lost.
        spread = 0.0
        if self.heater_w > 0.0 or self.hotspot_k != 0.0:
            spread = self.hotspot_k / p.heater_thermal_resistance_k_per_w
            # Explicit Euler is stable only below the node's time constant: limit the step.
            tau = p.heater_thermal_mass_j_per_k * p.heater_thermal_resistance_k_per_w
            k = dt / tau
            self.hotspot_k += (self.heater_w * p.heater_thermal_resistance_k_per_w - self.hotspot_k) * (
                k if k < 1.0 else 1.0
            )
            if self.heater_w <= 0.0 and abs(self.hotspot_k) < 1e-6:
                self.hotspot_k = 0.0
        self.temp_c = t + dt * (heat + side + spread - loss) / p.thermal_mass_j_per_k
        self._update_resistance()

    def _update_resistance(self) -> None:
        f = 1.0 + _R_TEMP_COEFF_PER_K * (25.0 - self.temp_c)
        self.r_cell = self.r0_cell * (0.6 if f < 0.6 else 4.0 if f > 4.0 else f)

    # -- pack level -------------------------------------------------------------------------

    @property
    def soc_pct(self) -> float:
        return self._a_mean + self._b_mean * self.s

    def set_soc(self, soc_pct: float) -> None:
        """Move the pack to ``soc_pct`` as if charged or discharged there: the cells' spread
        follows their capacity differences, exactly as a charge would leave it."""
        self.s = (soc_pct - self._a_mean) / self._b_mean

    @property
    def r_pack(self) -> float:
        return self.r_cell * self.n

    def ocv_pack(self) -> float:
        # OCV at the mean SOC stands in for the mean of the cell OCVs; the spread is small
        # enough (about 1 % SOC) that the difference is a few mV per cell at most.
        return self.n * self.ocv(self._a_mean + self._b_mean * self.s)

    def terminal_voltage(self) -> float:
        return self.ocv_pack() + self.current_a * self.r_cell * self.n

    # -- cells ------------------------------------------------------------------------------

    def cell_soc(self, i: int) -> float:
        """SOC of cell ``i`` (0-based)."""
        return self._a[i] + self._b[i] * self.s

    def cell_voltage(self, i: int) -> float:
        return self.ocv(self._a[i] + self._b[i] * self.s) + self.current_a * self.r_cell

    def cell_voltages(self, indices: Sequence[int]) -> list[float]:
        """``cell_voltage(i)`` for each of ``indices``, computed together (a DAQ scan of its taps)."""
        a, b, s = self._a, self._b, self.s
        ir = self.current_a * self.r_cell
        return [v + ir for v in self.ocv.many([a[i] + b[i] * s for i in indices])]

    def max_cell(self) -> int:
        return self._max_cell(self.s)

    def min_cell(self) -> int:
        return self._min_cell(self.s)

    def cell_v_avg(self) -> float:
        return self.ocv(self._a_mean + self._b_mean * self.s) + self.current_a * self.r_cell

    # -- temperatures -----------------------------------------------------------------------

    def sensor_temp(self, j: int) -> float:
        rise = self.temp_c - self.ambient_c
        value = self.temp_c + self._tc[j] + self._tg[j] * rise
        return value + self.hotspot_k if j == self._heater_j else value

    def hottest_sensor(self) -> int:
        j = self._hot(self.temp_c - self.ambient_c)
        if self.hotspot_k != 0.0 and self.sensor_temp(self._heater_j) > self.sensor_temp(j):
            return self._heater_j
        return j

    def coldest_sensor(self) -> int:
        if self.hotspot_k != 0.0:
            return min(range(len(self._tc)), key=self.sensor_temp)
        return self._cold(self.temp_c - self.ambient_c)
