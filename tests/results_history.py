"""A generated history of runs for the results database: several stations, DUTs through several
sequences with retests, DUT software versions over time, instruments with calibration windows
(one analyzer moves between stations), and fault-matrix cells among the production runs.

Deterministic for a seed. Used by tests/test_results_queries.py (which checks the database's
answers against counts it computes from these rows itself) and benchmarks/results_db.py.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from dataclasses import dataclass

from bench.results.rows import EquipmentRow, MeasurementRow, RunRow

T0 = dt.datetime(2026, 1, 5, 6, 0, tzinfo=dt.UTC)  # a Monday
SPACING = dt.timedelta(minutes=5)  # between run starts: runs of a longer duration overlap
STATIONS = ("bench-a", "bench-b", "bench-c", "sim")
SW_VERSIONS = ("1.0.0", "1.1.0", "1.2.0")
MOVING_ASSET = "PA-7"  # the power analyzer that serves bench-a, then bench-b from the middle of the history


@dataclass(frozen=True)
class SequenceKind:
    id: str
    part_number: str
    names: tuple[str, ...]  # its measurements
    mean: float
    sd: float
    low: float | None
    high: float | None
    unit: str


def _names(prefix: str, n: int) -> tuple[str, ...]:
    return tuple(f"{prefix}_{i:02d}" for i in range(n))


SEQUENCES = (
    SequenceKind("R100-OVERCHARGE", "BMS-800", ("ov_trip_v", *_names("cell_v", 19)), 4.25, 0.004, 4.20, 4.30, "V"),
    SequenceKind("R100-THERMAL", "BMS-800", ("ot_trip_c", *_names("cell_t", 19)), 60.0, 0.5, None, 65.0, "degC"),
    SequenceKind("R134-H2-LEAK", "FCCU-2", ("h2_trip_pct", *_names("h2_conc", 19)), 1.0, 0.05, 0.5, 2.0, "%"),
    SequenceKind("ISO26262-FTTI", "HVCU-1", ("ftti_ms", *_names("reaction_ms", 19)), 80.0, 4.0, None, 100.0, "ms"),
)


@dataclass(frozen=True)
class Asset:
    asset_id: str
    device: str
    calibrated: dt.date
    due: dt.date

    def row(self, day: dt.date) -> EquipmentRow:
        return EquipmentRow(
            asset_id=self.asset_id,
            device=self.device,
            maker="Example",
            model=self.device.upper(),
            serial=f"S-{self.asset_id}",
            certificate=f"CAL-{self.asset_id}-{self.calibrated.isoformat()}",
            calibrated=self.calibrated,
            due=self.due,
            in_calibration=self.calibrated <= day <= self.due,
        )


def _assets(day0: dt.date) -> dict[str, list[Asset]]:
    """Each station's own supply and analyzer; bench-a's analyzer certificate runs out early."""
    out: dict[str, list[Asset]] = {}
    for n, station in enumerate(STATIONS):
        due = day0 + dt.timedelta(days=60 if station == "bench-a" else 400)
        out[station] = [
            Asset(f"PSU-{n}", "psu", day0 - dt.timedelta(days=30), due),
            Asset(f"PA-{n}", "analyzer", day0 - dt.timedelta(days=30), due),
        ]
    return out


def equipment_of(station: str, when: dt.datetime, moved: dt.datetime, assets: dict[str, list[Asset]]) -> list[Asset]:
    """What the station used at ``when``: its own, plus the moving analyzer where it then stood."""
    moving = Asset(MOVING_ASSET, "analyzer", T0.date() - dt.timedelta(days=10), T0.date() + dt.timedelta(days=355))
    here = "bench-a" if when < moved else "bench-b"
    return [*assets[station], moving] if station == here else list(assets[station])


def generate(
    n_runs: int,
    seed: int = 18,
    campaign_share: float = 0.05,
    shift: tuple[str, dt.datetime, float] | None = None,
) -> Iterator[RunRow]:
    """``n_runs`` runs in start order, 20 measurements each.

    Each DUT goes through one sequence; a failed run is retested by a later run of the same DUT
    (up to three runs). ``shift`` = (measurement, from, delta) adds delta to that measurement's
    values from that instant on (a planted shift for the trend chart).
    """
    rnd = random.Random(seed)
    assets = _assets(T0.date())
    moved = T0 + SPACING * (n_runs // 2)
    retests: list[tuple[int, str | None, SequenceKind, int]] = []  # (due run index, serial, sequence, attempt)
    duts = 0
    for i in range(n_runs):
        started = T0 + SPACING * i + dt.timedelta(seconds=rnd.randint(0, 60))
        ended = started + dt.timedelta(minutes=rnd.randint(2, 25))
        station = STATIONS[rnd.randrange(len(STATIONS))]
        sw = SW_VERSIONS[min(len(SW_VERSIONS) - 1, i * len(SW_VERSIONS) // max(n_runs, 1))]
        campaign_id = fault = None
        if retests and retests[0][0] <= i:
            _, serial, seq, attempt = retests.pop(0)
        elif rnd.random() < campaign_share:
            seq, serial, attempt = SEQUENCES[rnd.randrange(len(SEQUENCES))], f"SIM-{i}", 1
            campaign_id, fault = f"campaign-{i // 200}", rnd.choice(("nominal", "ov_threshold", "stuck_mux"))
            station = "sim"
        else:
            duts += 1
            seq, attempt = SEQUENCES[rnd.randrange(len(SEQUENCES))], 1
            # Now and then the operator gives no serial: the run is a unit of its own.
            serial = None if rnd.random() < 0.02 else f"SN{duts:06d}"
        passed = rnd.random() < (0.9 if attempt == 1 else 0.8)
        if campaign_id is None and serial is not None and not passed and attempt < 3:
            retests.append((i + rnd.randint(3, 40), serial, seq, attempt + 1))
            retests.sort(key=lambda r: r[0])
        measurements = []
        for k, name in enumerate(seq.names):
            value = rnd.gauss(seq.mean, seq.sd)
            if shift is not None and name == shift[0] and started >= shift[1]:
                value += shift[2]
            failing = not passed and k == 1  # one value beyond its limit makes the run fail
            if failing:
                value = (seq.high if seq.high is not None else seq.mean) + 3 * seq.sd
            outcome = "FAIL" if failing else "PASS"
            measurements.append(
                MeasurementRow(
                    name,
                    f"step {k}",
                    value,
                    seq.unit,
                    seq.sd,
                    seq.low,
                    seq.high,
                    "simple acceptance",
                    outcome,
                    10.0 * k,
                )
            )
        yield RunRow(
            run_id=f"run-{i:07d}",
            manifest_sha256=f"{i:064x}",
            sequence_id=seq.id,
            sequence_version="1.0.0",
            sequence_sha256="0" * 64,
            parameters={},
            station_id=station,
            station_sha256="0" * 64,
            bench_id=station,
            operator=None if campaign_id else "op",
            dut_serial=serial,
            dut_part_number=seq.part_number,
            dut_hw_version="A",
            dut_sw_version=sw,
            started_utc=started,
            ended_utc=ended,
            clock="wall",
            sim_duration_s=(ended - started).total_seconds(),
            wall_duration_s=(ended - started).total_seconds(),
            verdict="PASS" if passed else "FAIL",
            exit_code=0 if passed else 1,
            reason="" if passed else "a measurement beyond its limit",
            unsafe_end=False,
            signer=None,
            folder=f"/reports/run-{i:07d}",
            campaign_id=campaign_id,
            fault=fault,
            measurements=measurements,
            equipment=[a.row(started.date()) for a in equipment_of(station, started, moved, assets)],
        )
