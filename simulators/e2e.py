"""End-to-end protection helpers shared by BMS_Status and BENCH_Command.

Both frames carry a 4-bit alive counter and a CRC-8 SAE J1850 (poly 0x1D, init 0xFF,
xor-out 0xFF) over bytes 0..6, stored in byte 7 (see dbc/bms.dbc).
"""

from __future__ import annotations

_POLY = 0x1D
CRC_BYTE = 7


def _make_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ _POLY) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table.append(crc)
    return tuple(table)


_TABLE = _make_table()


def crc8_j1850(data: bytes | bytearray | memoryview) -> int:
    """CRC-8 SAE J1850 of ``data``. The check value of b"123456789" is 0x4B."""
    crc = 0xFF
    table = _TABLE
    for byte in data:
        crc = table[crc ^ byte]
    return crc ^ 0xFF


def next_alive(counter: int) -> int:
    return (counter + 1) & 0x0F


def seal(data: bytearray) -> bytearray:
    """Write the CRC of bytes 0..6 into byte 7, in place; returns ``data`` for chaining."""
    data[CRC_BYTE] = crc8_j1850(memoryview(data)[:CRC_BYTE])
    return data


def crc_ok(data: bytes | bytearray) -> bool:
    return len(data) == 8 and crc8_j1850(data[:CRC_BYTE]) == data[CRC_BYTE]
