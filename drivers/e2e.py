"""End-to-end protection of CAN messages: alive counter and CRC.

Convention of our DBCs: a protected message has a signal ``<p>_alive`` (4-bit counter, +1
modulo 16 per transmission) and ``<p>_crc`` in the last byte: CRC-8 SAE J1850 (polynomial
0x1D, init 0xFF, final XOR 0xFF) over all preceding bytes.
"""

from __future__ import annotations


def _table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1D) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table.append(crc)
    return table


_TABLE = _table()


def crc8_j1850(data: bytes) -> int:
    crc = 0xFF
    for b in data:
        crc = _TABLE[crc ^ b]
    return crc ^ 0xFF
