"""DTC numbers and ISO 14229-1 status bits as values: spelled, parsed and compared.

The sequence language (``check_dtcs``), the run record and the report reason about DTCs without
talking to any ECU, so this lives on the bench's side of the driver contract; drivers/uds.py reads
and clears DTCs over the bus and returns these values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# ISO 14229-1 DTC status bits, in bit order (the names the standard gives them).
DTC_STATUS_BITS = (
    "testFailed",
    "testFailedThisOperationCycle",
    "pendingDTC",
    "confirmedDTC",
    "testNotCompletedSinceLastClear",
    "testFailedSinceLastClear",
    "testNotCompletedThisOperationCycle",
    "warningIndicatorRequested",
)
TEST_FAILED = 0x01
TEST_FAILED_THIS_OPERATION_CYCLE = 0x02
PENDING = 0x04
CONFIRMED = 0x08
TEST_FAILED_SINCE_LAST_CLEAR = 0x20
# A DTC is *stored* when it is pending or confirmed: after a clear every DTC reads 0x50 (tests
# not completed), which matches a 0xFF mask but is no fault.
STORED_MASK = PENDING | CONFIRMED
# What a run record keeps at the start and the end of a run: every DTC that failed since the
# last clear, stored or not, and nothing that merely has not been tested.
RECORD_MASK = TEST_FAILED | TEST_FAILED_THIS_OPERATION_CYCLE | PENDING | CONFIRMED | TEST_FAILED_SINCE_LAST_CLEAR
ALL_DTC_GROUPS = 0xFFFFFF
_DTC_LETTERS = "PCBU"
_DTC_CODE = re.compile(r"([PCBU])([0-3])([0-9A-F]{3})-([0-9A-F]{2})")


def format_dtc(number: int) -> str:
    """A three-byte DTC as a tester shows it: the SAE J2012 code and the failure type byte, ``P0AA1-00``.

    The two top bits of the first byte are the letter (P, C, B, U), the next two the first digit.
    """
    return f"{_DTC_LETTERS[number >> 22 & 3]}{number >> 20 & 3}{number >> 8 & 0xFFF:03X}-{number & 0xFF:02X}"


def parse_dtc(text: str) -> int:
    """The DTC number of ``P0AA1-00`` (any case) or of a hexadecimal number ``0x0AA100``."""
    spelled = text.strip().upper()
    match = _DTC_CODE.fullmatch(spelled)
    if match is not None:
        letter, digit, rest, ftb = match.groups()
        return _DTC_LETTERS.index(letter) << 22 | int(digit) << 20 | int(rest, 16) << 8 | int(ftb, 16)
    if re.fullmatch(r"0X[0-9A-F]{1,6}", spelled):
        return int(spelled, 16)
    raise ValueError(f"DTC {text!r} is neither a code like P0AA1-00 nor a 3-byte number like 0x0AA100")


@dataclass(frozen=True)
class Dtc:
    """One DTC as the ECU reported it: its 3-byte number and ISO 14229-1 status byte."""

    number: int
    status: int

    @property
    def code(self) -> str:
        return format_dtc(self.number)

    @property
    def test_failed(self) -> bool:
        return bool(self.status & TEST_FAILED)

    @property
    def pending(self) -> bool:
        return bool(self.status & PENDING)

    @property
    def confirmed(self) -> bool:
        return bool(self.status & CONFIRMED)

    @property
    def warning_indicator_requested(self) -> bool:
        return bool(self.status & 0x80)

    def flags(self) -> list[str]:
        """The names of the status bits that are set, in bit order."""
        return [name for bit, name in enumerate(DTC_STATUS_BITS) if self.status >> bit & 1]

    def __str__(self) -> str:
        return f"{self.code} status 0x{self.status:02X}"

    def to_record(self) -> dict[str, Any]:
        """The form a run record and a report keep."""
        return {"code": self.code, "number": self.number, "status": self.status, "flags": self.flags()}


def dtc_problems(
    read: Iterable[Dtc],
    expected: Iterable[int],
    *,
    allowed: Iterable[int] = (),
    required_bits: int = CONFIRMED,
    mask: int = STORED_MASK,
) -> list[str]:
    """What is wrong with the DTCs read against an expectation, one line each; empty when it holds.

    Each ``expected`` DTC must be read with every bit of ``required_bits``; any other DTC whose
    status has a bit of ``mask`` (stored: pending or confirmed) and is not ``allowed`` is unexpected.
    """
    by_number = {dtc.number: dtc for dtc in read}
    wanted = list(expected)
    problems = []
    for number in wanted:
        dtc = by_number.get(number)
        if dtc is None or not dtc.status & mask:
            problems.append(f"{format_dtc(number)} is not stored")
        elif dtc.status & required_bits != required_bits:
            missing = ", ".join(Dtc(0, required_bits & ~dtc.status).flags())
            problems.append(
                f"{dtc.code} is stored but not {missing} (status 0x{dtc.status:02X}: {', '.join(dtc.flags())})"
            )
    tolerated = {*wanted, *allowed}
    problems += [
        f"unexpected DTC {dtc.code} (status 0x{dtc.status:02X})"
        for dtc in by_number.values()
        if dtc.status & mask and dtc.number not in tolerated
    ]
    return problems
