"""The simulated H2 sensor: its line format, its fault modes, and the serial device contract."""

from __future__ import annotations

import asyncio
import random

import pytest

from drivers.h2_sensor import parse_line
from simulators.faults import H2_SENSOR_OFFSET_PCT, H2_SENSOR_SILENT_AFTER_S, Faults
from simulators.h2_sensor import H2Sensor, H2SensorSpec, frame
from tests.expected_protocol import run_virtual


def _sensor(level: list[float], *faults: str, noise: float = 0.0) -> H2Sensor:
    return H2Sensor(
        H2SensorSpec(serial="SNH2", period_s=1.0, noise_pct=noise),
        lambda: level[0],
        Faults.from_names(list(faults)),
        random.Random(0),
    )


def _stream(sensor: H2Sensor, seconds: float, commands: bytes = b"") -> list[tuple[float, bytes]]:
    """Open the sensor, collect the lines it sends (with loop time) for ``seconds``."""
    lines: list[tuple[float, bytes]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        receive = sensor.open(lambda data: lines.append((loop.time(), data)))
        if commands:
            loop.call_later(0.5, receive, commands)
        await asyncio.sleep(seconds)
        sensor.close()

    run_virtual(main)
    return lines


def test_frame_is_nmea_style() -> None:
    assert frame("H2,0.012,30.0,0000") == b"$H2,0.012,30.0,0000*66\r\n"


def test_streams_one_line_per_period_reading_the_plant() -> None:
    level = [0.0]
    lines = _stream(_sensor(level), 3.5)
    assert [t for t, _ in lines] == [0.0, 1.0, 2.0, 3.0]
    assert lines[0][1] == b"$H2,0.000,30.0,0000*65\r\n"
    level[0] = 2.5
    sensor = _sensor(level)
    assert parse_line(_stream(sensor, 0.5)[0][1]) == ("H2", ["2.500", "30.0", "0000"])


def test_over_range_is_flagged_and_clamped() -> None:
    _kind, fields = parse_line(_stream(_sensor([7.0]), 0.5)[0][1])
    assert fields == ["5.000", "30.0", "0004"]


def test_answers_id_query() -> None:
    lines = _stream(_sensor([0.0]), 1.5, b"ID?\r\n")
    assert (0.5, b"$ID,H2scan,HY-OPTIMA 740,SNH2,2.4.1 (simulated)*42\r\n") in lines
    assert parse_line(lines[1][1])[0] == "ID"


def test_offset_fault_reads_high() -> None:
    _kind, fields = parse_line(_stream(_sensor([1.0], "h2_sensor_offset"), 0.5)[0][1])
    assert float(fields[0]) == pytest.approx(1.0 + H2_SENSOR_OFFSET_PCT)
    assert fields[2] == "0000"


def test_stuck_fault_freezes_the_reading_with_a_clean_status() -> None:
    level = [0.1]
    sensor = _sensor(level, "h2_sensor_stuck")
    lines: list[bytes] = []

    async def main() -> None:
        sensor.open(lines.append)
        await asyncio.sleep(1.5)
        level[0] = 3.0  # a leak the stuck sensor does not see
        await asyncio.sleep(2.0)
        sensor.close()

    run_virtual(main)
    assert {parse_line(x)[1][0] for x in lines} == {"0.100"}
    assert {parse_line(x)[1][2] for x in lines} == {"0000"}


def test_silent_fault_stops_the_stream_after_a_while() -> None:
    lines = _stream(_sensor([0.0], "h2_sensor_silent"), H2_SENSOR_SILENT_AFTER_S + 5)
    assert [t for t, _ in lines] == [float(k) for k in range(int(H2_SENSOR_SILENT_AFTER_S))]


def test_fault_flag_fault_sets_status_bit_0() -> None:
    assert parse_line(_stream(_sensor([0.0], "h2_sensor_fault_flag"), 0.5)[0][1])[1][2] == "0001"


def test_close_stops_sending() -> None:
    sensor = _sensor([0.0])
    lines: list[bytes] = []

    async def main() -> None:
        sensor.open(lines.append)
        await asyncio.sleep(1.5)
        sensor.close()
        await asyncio.sleep(5.0)

    run_virtual(main)
    assert len(lines) == 2
