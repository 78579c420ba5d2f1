"""The DTC memory of a simulated ECU: ISO 14229-1 (Annex D) status bits driven by its monitors.

Each DTC belongs to one *monitor* of the firmware: a named check (``contactor``, ``cell_ov``,
``comm_crc``, ...) that reports a result when it runs, ``failed`` or passed, through
:meth:`DtcMemory.report`. A monitor that does not run in a cycle reports nothing. Rules:

* **testFailed** follows the last result. A failed result also sets testFailedThisOperationCycle,
  pendingDTC and testFailedSinceLastClear; any result clears the two "not completed" bits.
* **confirmedDTC** after ``confirm_after`` failed results in a row (a passed one starts the
  count again): 1, at once, for a DTC whose fault has a safety reaction (the BMS opens its
  contactors, the FCCU closes its valve or stops the fuelling) or raises a hazard warning;
  ``CONFIRM_AFTER_CHECKS`` for the others. A failed result is already qualified: the firmware's
  own detection time (debounce) lies before it, so the DTC never disagrees with the fault on CAN.
* **warningIndicatorRequested** with confirmation, for DTCs whose fault lights a tell-tale or a
  warning signal on CAN.
* **New operation cycle** (:meth:`DtcMemory.new_operation_cycle`): testFailedThisOperationCycle
  off, testNotCompletedThisOperationCycle on. After a cycle in which the test ran and never
  failed, pendingDTC and warningIndicatorRequested go off and a confirmed DTC ages by one; after
  ``AGING_CYCLES`` such cycles it is no longer confirmed. The simulated ECUs run one operation
  cycle per plant life (power-up with the plant, the memory starts cleared); a plant that
  models ignition cycles calls this method.
* **Clear** (0x14): status 0x50 (both "not completed" bits), counters reset.

The DTC numbers are three bytes: an SAE J2012 code (two bytes) and a failure type byte (FTB,
ISO 14229-1 Annex D / SAE J2012-DA), shown as ``P0AA1-00``. docs/dtc.md (BMS) and docs/fccu.md
(FCCU) list the same tables; a test holds the two in step.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

TEST_FAILED = 0x01
TEST_FAILED_THIS_OPERATION_CYCLE = 0x02
PENDING = 0x04
CONFIRMED = 0x08
TEST_NOT_COMPLETED_SINCE_LAST_CLEAR = 0x10
TEST_FAILED_SINCE_LAST_CLEAR = 0x20
TEST_NOT_COMPLETED_THIS_OPERATION_CYCLE = 0x40
WARNING_INDICATOR_REQUESTED = 0x80
# Every status bit is modelled.
STATUS_AVAILABILITY_MASK = 0xFF
CLEARED = TEST_NOT_COMPLETED_SINCE_LAST_CLEAR | TEST_NOT_COMPLETED_THIS_OPERATION_CYCLE
ALL_GROUPS = 0xFFFFFF
# Failed results in a row that confirm a DTC without a safety reaction (noise, a single bad frame).
CONFIRM_AFTER_CHECKS = 3
# Failure-free operation cycles after which a confirmed DTC is forgotten (OBD practice is 40).
AGING_CYCLES = 40


@dataclass(frozen=True)
class DtcSpec:
    number: int
    code: str  # how a tester shows ``number``; written out so the table reads like the docs
    monitor: str
    text: str
    confirm_after: int = 1
    warning_indicator: bool = False


_LATER = CONFIRM_AFTER_CHECKS

# The BMS (simulators/bms_firmware.py). P0AA1, P0AA6, P0A7E and U0293 are SAE J2012 codes with
# their J2012 meaning; P1A0x are in the manufacturer-controlled range.
BMS_DTCS: tuple[DtcSpec, ...] = (
    DtcSpec(0x0AA100, "P0AA1-00", "contactor", "HV battery contactor stuck closed (welded)", 1, True),
    DtcSpec(0x1A0017, "P1A00-17", "cell_ov", "cell voltage above the over-voltage threshold"),
    DtcSpec(0x1A0016, "P1A00-16", "cell_uv", "cell voltage below the under-voltage threshold"),
    DtcSpec(0x0A7E00, "P0A7E-00", "cell_ot", "battery pack over temperature"),
    DtcSpec(0x1A0119, "P1A01-19", "overcurrent", "pack current above the over-current threshold"),
    DtcSpec(0x1A0213, "P1A02-13", "sense_line", "cell voltage sense line open or shorted to chassis"),
    DtcSpec(0x1A0398, "P1A03-98", "thermal_event", "thermal event (temperature or its rise rate)", 1, True),
    DtcSpec(0x0AA600, "P0AA6-00", "isolation", "HV isolation resistance below the error threshold", _LATER, True),
    DtcSpec(0xC29300, "U0293-00", "comm_lost", "BENCH_Command lost while the contactors are closed", 1, True),
    DtcSpec(0xC29382, "U0293-82", "comm_alive", "BENCH_Command alive counter not updated", _LATER),
    DtcSpec(0xC29383, "U0293-83", "comm_crc", "BENCH_Command CRC wrong", _LATER),
)

# The FCCU (simulators/fccu_firmware.py); P1B0x are in the manufacturer-controlled range.
FCCU_DTCS: tuple[DtcSpec, ...] = (
    DtcSpec(0x1B0000, "P1B00-00", "h2_leak", "enclosure hydrogen above the shut-off threshold", 1, True),
    DtcSpec(0x1B0187, "P1B01-87", "h2_sensor_1_missing", "H2 sensor 1: no valid frame within the timeout", 1, True),
    DtcSpec(0x1B0196, "P1B01-96", "h2_sensor_1_error", "H2 sensor 1: error code or reading out of range", 1, True),
    DtcSpec(0x1B0287, "P1B02-87", "h2_sensor_2_missing", "H2 sensor 2: no valid frame within the timeout", 1, True),
    DtcSpec(0x1B0296, "P1B02-96", "h2_sensor_2_error", "H2 sensor 2: error code or reading out of range", 1, True),
    DtcSpec(0x1B0362, "P1B03-62", "h2_sensor_discrepancy", "the two H2 sensors disagree", 1, True),
    DtcSpec(0x1B0400, "P1B04-00", "overpressure", "tank pressure above the fuelling limit"),
    DtcSpec(0xC29300, "U0293-00", "comm_lost", "BENCH_FcCommand lost while the FCCU is not OFF", 1, True),
    DtcSpec(0xC29382, "U0293-82", "comm_alive", "BENCH_FcCommand alive counter not updated", _LATER),
    DtcSpec(0xC29383, "U0293-83", "comm_crc", "BENCH_FcCommand CRC wrong", _LATER),
)


class _Entry:
    __slots__ = ("aged", "failed_in_row", "spec", "status")

    def __init__(self, spec: DtcSpec) -> None:
        self.spec = spec
        self.status = CLEARED
        self.failed_in_row = 0
        self.aged = 0


class DtcMemory:
    """The ECU's DTC memory; everything happens on calls, no clock of its own."""

    def __init__(self, specs: Iterable[DtcSpec]) -> None:
        self._entries = [_Entry(spec) for spec in specs]
        self._by_monitor = {e.spec.monitor: e for e in self._entries}
        self._by_number = {e.spec.number: e for e in self._entries}

    def report(self, monitor: str, *, failed: bool) -> None:
        """One result of ``monitor``'s check."""
        entry = self._by_monitor[monitor]
        status = entry.status & ~CLEARED
        if failed:
            status |= TEST_FAILED | TEST_FAILED_THIS_OPERATION_CYCLE | PENDING | TEST_FAILED_SINCE_LAST_CLEAR
            entry.failed_in_row += 1
            entry.aged = 0
            if entry.failed_in_row >= entry.spec.confirm_after:
                status |= CONFIRMED
                if entry.spec.warning_indicator:
                    status |= WARNING_INDICATOR_REQUESTED
        else:
            status &= ~TEST_FAILED
            entry.failed_in_row = 0
        entry.status = status

    def status(self, number: int) -> int:
        return self._by_number[number].status

    def matching(self, mask: int) -> list[tuple[int, int]]:
        """``(number, status)`` of every DTC with a status bit in ``mask``, in table order."""
        mask &= STATUS_AVAILABILITY_MASK
        return [(e.spec.number, e.status) for e in self._entries if e.status & mask]

    def clear(self, group: int) -> bool:
        """Clear all DTCs (0xFFFFFF) or one; False for a group this ECU does not have."""
        if group == ALL_GROUPS:
            entries = self._entries
        elif group in self._by_number:
            entries = [self._by_number[group]]
        else:
            return False
        for entry in entries:
            entry.status = CLEARED
            entry.failed_in_row = 0
            entry.aged = 0
        return True

    def new_operation_cycle(self) -> None:
        for entry in self._entries:
            status = entry.status
            tested_without_failure = not status & (
                TEST_NOT_COMPLETED_THIS_OPERATION_CYCLE | TEST_FAILED_THIS_OPERATION_CYCLE
            )
            if tested_without_failure:
                status &= ~(PENDING | WARNING_INDICATOR_REQUESTED)
                if status & CONFIRMED:
                    entry.aged += 1
                    if entry.aged >= AGING_CYCLES:
                        status &= ~CONFIRMED
                        entry.aged = 0
            status &= ~TEST_FAILED_THIS_OPERATION_CYCLE
            entry.status = status | TEST_NOT_COMPLETED_THIS_OPERATION_CYCLE
