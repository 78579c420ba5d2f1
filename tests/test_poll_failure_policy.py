"""One policy for failed polls, the same for every polled instrument: a failed poll is forgiven
twice in a row, the third in a row is a device fault (docs/safety.md, "Driver faults").

Each polled device of stations/sim.yaml is connected with its station driver to its simulated
instrument in-process, on the virtual-time loop; the instrument then leaves the first polls
after connecting unanswered (the in-process transport's timeout).
"""

from __future__ import annotations

import asyncio
import itertools
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bench.console import run_exit_code
from bench.engine import Run, RunOptions
from bench.plan import build_drivers, build_plan
from bench.result import RunResult
from bench.station import load_station
from bench.vtime import VirtualTimeLoop
from drivers.scpi_driver import MAX_POLL_FAILURES, ScpiDriver
from tests.conftest import SIM_STATION
from tests.expected_protocol import Harness, connected, run_virtual, settle
from tests.test_scpi_common import registered_endpoints

# Every device of sim.yaml that polls its instrument; the test below keeps this list complete.
POLLED = ["cells", "chamber", "daq", "fcio", "pa", "psu"]


class Unanswered:
    """The simulated instrument, with the first ``drop`` lines after connecting left unanswered."""

    def __init__(self, handler: Any, drop: int) -> None:
        self.handler = handler
        self.drop = drop
        self.connected = False
        self.dropped: list[tuple[float, str]] = []
        self.answered: list[tuple[float, str]] = []

    def scpi(self, line: str) -> str | None:
        if not self.connected:
            return self.handler.scpi(line)
        now = asyncio.get_running_loop().time()
        if len(self.dropped) < self.drop:
            self.dropped.append((now, line))
            return None  # no reply: the transport times out
        self.answered.append((now, line))
        reply: str | None = self.handler.scpi(line)
        return reply


def _endpoint(device: str) -> str:
    station = load_station(SIM_STATION)
    return str(station.model.devices[device].config["transport"]["inproc"])


def _fail_first_polls(device: str, drop: int) -> tuple[Any, Harness, Unanswered]:
    station = load_station(SIM_STATION)
    driver: Any = build_drivers(station, [device])[device]
    instruments: dict[str, Any] = dict(registered_endpoints())
    endpoint = _endpoint(device)
    deaf = instruments[endpoint] = Unanswered(instruments[endpoint], drop)
    harness = Harness()

    async def main() -> None:
        async with connected(driver, harness, instruments):
            deaf.connected = True
            await settle(6.5 * driver.poll_interval)

    run_virtual(main)
    return driver, harness, deaf


def test_the_polled_devices_are_every_scpi_driver_that_polls() -> None:
    station = load_station(SIM_STATION)
    drivers = build_drivers(station)
    scpi = set(registered_endpoints())
    on_scpi = {n for n, d in station.model.devices.items() if d.config.get("transport", {}).get("inproc") in scpi}
    # One base for every SCPI driver: the policy below is written once, there.
    scpi_drivers = {n: d for n, d in drivers.items() if isinstance(d, ScpiDriver)}
    assert sorted(on_scpi - set(scpi_drivers)) == []
    assert sorted(n for n, d in scpi_drivers.items() if d.polls()) == POLLED


@pytest.mark.parametrize("drop", [1, MAX_POLL_FAILURES - 1])
@pytest.mark.parametrize("device", POLLED)
def test_fewer_than_three_failed_polls_in_a_row_are_forgiven(device: str, drop: int) -> None:
    driver, harness, deaf = _fail_first_polls(device, drop)
    assert harness.faults == []
    assert len(deaf.dropped) == drop
    # Polling went on at its interval, and the answered polls were published.
    interval = driver.poll_interval
    query = deaf.dropped[0][1]
    times = [t for t, line in deaf.dropped + deaf.answered if line == query]
    assert len(times) >= 6
    assert all(b - a == pytest.approx(interval) for a, b in itertools.pairwise(times))
    published_after = [t for _, _, t in harness.samples if t >= deaf.answered[0][0]]
    assert published_after


@pytest.mark.parametrize("device", POLLED)
def test_the_third_failed_poll_in_a_row_is_a_device_fault(device: str) -> None:
    driver, harness, deaf = _fail_first_polls(device, MAX_POLL_FAILURES)
    assert len(harness.faults) == 1, harness.faults
    name, reason = harness.faults[0]
    query = deaf.dropped[0][1]
    # On an addressed bus (the cell emulator's) the line on the wire carries the unit's address.
    command = re.sub(r"^@\d+ ", "", query)
    assert name == device
    assert re.fullmatch(
        rf"3 (cell )?(measurements|readings) in a row failed, last: {device}: timeout waiting for the reply to"
        rf" '{re.escape(command)}'.*",
        reason,
    ), reason
    # Three polls at the poll interval, then the driver stops polling the lost instrument.
    times = [t for t, _ in deaf.dropped]
    assert times == pytest.approx([times[0], times[0] + driver.poll_interval, times[0] + 2 * driver.poll_interval])
    assert [line for _, line in deaf.answered if line == query] == []


ANALYZER_HOLD = """\
id: TEST-ANALYZER-HOLD
title: the analyzer measures through a hold
version: 1.0.0
basis: {standard: test, clause: poll failures}
requires: [pa]
steps:
  - name: hold
    wait: 20 s
  - name: still measuring
    check: pa.integrate == RESET
"""


@pytest.mark.parametrize(("drop", "verdict"), [(MAX_POLL_FAILURES - 1, "PASS"), (MAX_POLL_FAILURES, "ERROR")])
def test_a_run_ends_with_error_on_the_third_failed_poll_of_the_analyzer(
    tmp_path: Path, drop: int, verdict: str
) -> None:
    """The same policy seen from a run: the analyzer, which once faulted on its first failed poll."""
    sequence = tmp_path / "analyzer_hold.yaml"
    sequence.write_text(ANALYZER_HOLD, encoding="utf-8")
    run = Run(build_plan(sequence, SIM_STATION, {}), RunOptions(reports_dir=tmp_path, run_id="poll-run"))

    started = asyncio.Event()

    def on_event(kind: str, t: float, fields: dict[str, Any]) -> None:
        if kind == "step_started":
            started.set()

    run.listeners.append(on_event)

    async def silence(run: Run) -> None:
        await started.wait()
        await asyncio.sleep(5)  # connected, polling, into the hold
        analyzer = run._inproc["pa"]
        deaf = Unanswered(SimpleNamespace(scpi=analyzer.scpi), drop)
        deaf.connected = True
        analyzer.scpi = deaf.scpi

    async def main() -> RunResult:
        task = asyncio.create_task(silence(run))
        try:
            return await run.execute()
        finally:
            task.cancel()

    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        result = runner.run(main())
    assert result.verdict.value == verdict, result.reason
    if verdict == "ERROR":
        assert result.reason.startswith("device pa: 3 measurements in a row failed, last: pa: timeout waiting")
        assert run_exit_code(result) == 3
