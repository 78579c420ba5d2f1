"""Injectable faults of the simulated station: each one is a named defect of the DUT."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# Trip-to-open delay of the slow_reaction fault.
SLOW_REACTION_TIME_S = 2.0
# Cell voltage measurement error of the cell_voltage_sensor_offset fault, and of its smaller
# variant: 15 mV stays inside the 4.30 V acceptance limit and is caught only by comparing the
# BMS's readings with the lab's own instrument.
CELL_VOLTAGE_OFFSET_V = -0.050
CELL_VOLTAGE_OFFSET_SMALL_V = -0.015
# Main fuse of the short_protected_by_fuse pack: rated current and melting integral. At a
# 5 mOhm external short (about 4.5 kA) it melts within a few milliseconds.
FUSE_RATING_A = 500.0
FUSE_MELTING_I2T_A2S = 2.0e5
# Isolation resistance reported with the isolation_fault fault.
ISOLATION_FAULT_KOHM = 60.0
# Reading error of the h2_sensor_offset fault (reads high: a false alarm, the visible case).
H2_SENSOR_OFFSET_PCT = 0.20
# The h2_sensor_silent sensor stops streaming this long after its port is opened, so the
# driver connects and the loss happens mid-run, as it does on a bench.
H2_SENSOR_SILENT_AFTER_S = 10.0
# The h2_sensor_disconnected sensor's link goes away this long after its port is opened (a pulled
# cable or USB adapter): unlike a silent sensor, the host's port itself ends or fails.
H2_SENSOR_DISCONNECTED_AFTER_S = 10.0

CATALOGUE: dict[str, str] = {
    "overvoltage_protection_disabled": "BMS never trips on cell over-voltage",
    "undervoltage_protection_disabled": "BMS never trips on cell under-voltage",
    "overtemperature_protection_disabled": "BMS never trips on cell over-temperature",
    "ov_threshold_high": "BMS over-voltage threshold mis-set (4.40 V NMC, 3.80 V LFP)",
    "contactor_welded": "main contactor stays closed once it has closed: commanded open, reports WELDED",
    "slow_reaction": f"BMS opens the contactors {SLOW_REACTION_TIME_S:.1f} s after a trip instead of reaction_time_s",
    "alive_counter_frozen": "BMS_Status alive counter stops incrementing",
    "crc_corrupted": "BMS_Status CRC byte is wrong",
    "cell_voltage_sensor_offset": "BMS measures every cell voltage 50 mV low (reports and protects on it)",
    "cell_voltage_sensor_offset_15mv": "BMS measures every cell voltage 15 mV low (reports and protects on it)",
    "short_protected_by_fuse": (
        f"pack protected by a {FUSE_RATING_A:.0f} A main fuse instead of the BMS: no BMS overcurrent trip;"
        " a short melts the fuse, the contactors stay closed"
    ),
    "command_timeout_ignored": "BMS keeps the contactors closed when BENCH_Command stops",
    "isolation_fault": f"isolation resistance drops to {ISOLATION_FAULT_KOHM:.0f} kOhm (fault_isolation, no contactor action)",
    "h2_sensor_offset": f"H2 sensors read {H2_SENSOR_OFFSET_PCT:+.2f} %vol off the true concentration",
    "h2_sensor_stuck": "H2 sensors keep reporting their first reading, status OK",
    "h2_sensor_silent": f"H2 sensors stop sending {H2_SENSOR_SILENT_AFTER_S:.0f} s after their port is opened",
    "h2_sensor_fault_flag": "H2 sensors report their sensor fault flag (status bit 0x0001)",
    "h2_sensor_disconnected": (
        f"H2 sensors' serial link is lost {H2_SENSOR_DISCONNECTED_AFTER_S:.0f} s after their port is opened"
    ),
    "overcurrent_protection_disabled": "BMS never trips on pack over-current, not even on a short circuit",
    "open_wire_detection_disabled": "BMS open-wire diagnostic missing: a broken cell sense line goes unnoticed",
    "iso_warning_disabled": "BMS isolation monitor never raises warn_isolation",
    "thermal_event_warning_disabled": "BMS never raises warn_thermal_event",
    "temp_sensor_stuck": "BMS temperature readings freeze at their first value (over-temperature protection blind)",
}


# Faults of the H2 sensor model itself: they act on every simulated H2 sensor or analyser.
H2_SENSOR_FAULTS = frozenset(n for n in CATALOGUE if n.startswith("h2_sensor_"))


@dataclass(frozen=True)
class Faults:
    overvoltage_protection_disabled: bool = False
    undervoltage_protection_disabled: bool = False
    overtemperature_protection_disabled: bool = False
    ov_threshold_high: bool = False
    contactor_welded: bool = False
    slow_reaction: bool = False
    alive_counter_frozen: bool = False
    crc_corrupted: bool = False
    cell_voltage_sensor_offset: bool = False
    cell_voltage_sensor_offset_15mv: bool = False
    short_protected_by_fuse: bool = False
    command_timeout_ignored: bool = False
    isolation_fault: bool = False
    h2_sensor_offset: bool = False
    h2_sensor_stuck: bool = False
    h2_sensor_silent: bool = False
    h2_sensor_fault_flag: bool = False
    h2_sensor_disconnected: bool = False
    overcurrent_protection_disabled: bool = False
    open_wire_detection_disabled: bool = False
    iso_warning_disabled: bool = False
    thermal_event_warning_disabled: bool = False
    temp_sensor_stuck: bool = False

    @classmethod
    def from_names(cls, names: Iterable[str]) -> Faults:
        return cls(**checked_names(names, CATALOGUE))


def checked_names(names: Iterable[str], catalogue: Mapping[str, str]) -> dict[str, bool]:
    """``{name: True}`` for a faults dataclass; a ValueError for a name not in ``catalogue``."""
    if isinstance(names, str):  # a bare string would be read as one fault per letter
        raise ValueError(f"faults must be a list of fault names, got the string {names!r}")
    names = list(names)
    for name in names:
        if name not in catalogue:
            raise ValueError(f"unknown fault {name!r}; valid faults: {', '.join(sorted(catalogue))}")
    return dict.fromkeys(names, True)
