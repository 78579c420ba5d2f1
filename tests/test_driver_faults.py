"""Driver faults mid-run: CAN bus-off, instrument timeouts, a driver exception.

Each aborts the run with the device and the cause named, runs cleanup, and ends with the rig's
safe state read back as safe. Runs in-process on the virtual-time loop, with the fault injected
from the test at a chosen simulated instant.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import can

from bench.engine import Run, RunOptions
from bench.plan import build_plan
from bench.result import RunResult, Verdict
from bench.vtime import VirtualTimeLoop
from tests.conftest import SIM_STATION
from tests.test_stop_levels import SUPPLY_ON

Injector = Callable[[Run], Coroutine[Any, Any, None]]


def run_with(tmp_path: Path, inject: Injector, before: Callable[[Run], None] | None = None, **params: str) -> RunResult:
    plan = build_plan(SUPPLY_ON, SIM_STATION, {"hold": "60 s", **params})
    run = Run(plan, RunOptions(reports_dir=tmp_path, run_id="fault-run"))
    if before is not None:
        before(run)

    async def main() -> RunResult:
        task = asyncio.create_task(inject(run))
        try:
            return await run.execute()
        finally:
            task.cancel()

    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main())


async def at(run: Run, seconds: float) -> None:
    """Sleep until the steps have been running for ``seconds`` of loop time."""
    started = asyncio.Event()
    # Called before execute() copies the listeners into the recorder.
    run.listeners.append(lambda kind, t, fields: kind == "step_started" and started.set())
    await started.wait()
    await asyncio.sleep(seconds)


def assert_safe(result: RunResult) -> None:
    assert {s.device: s.safe for s in result.safe_state} == {"psu": True, "bms": True}, result.safe_state
    cleanup = [s for s in result.steps if s.phase == "cleanup"]
    assert cleanup and cleanup[0].name == "supply off"


def test_can_bus_off(tmp_path: Path) -> None:
    async def bus_off(run: Run) -> None:
        await at(run, 5)
        node = can.Bus(interface="inproc", channel="bench0")
        node.state = can.BusState.ERROR
        # The controllers recover from bus-off by themselves after 128 x 11 recessive bits.
        await asyncio.sleep(0.2)
        node.state = can.BusState.ACTIVE
        node.shutdown()

    result = run_with(tmp_path, bus_off)
    assert result.verdict.value == "ERROR"
    assert result.reason.startswith("device bms: CAN error frame on the bus: bus-off")
    assert_safe(result)


def test_repeated_instrument_timeouts(tmp_path: Path) -> None:
    async def silence(run: Run) -> None:
        await at(run, 5)
        supply = run._inproc["psu"]
        real = supply.scpi
        dropped = 0

        def deaf(line: str) -> str | None:
            nonlocal dropped
            if line.startswith("MEAS") and dropped < 3:
                dropped += 1
                return None  # no reply: the transport times out
            return real(line)

        supply.scpi = deaf

    result = run_with(tmp_path, silence)
    assert result.verdict.value == "ERROR"
    assert result.reason.startswith("device psu: 3 measurements in a row failed")
    assert "timeout waiting for the reply to 'MEAS:VOLT?;MEAS:CURR?;MEAS:POW?'" in result.reason
    assert_safe(result)


def test_single_lost_reply_is_tolerated(tmp_path: Path) -> None:
    async def one_lost(run: Run) -> None:
        await at(run, 5)
        supply = run._inproc["psu"]
        real = supply.scpi
        lost = False

        def flaky(line: str) -> str | None:
            nonlocal lost
            if line.startswith("MEAS") and not lost:
                lost = True
                return None
            return real(line)

        supply.scpi = flaky

    result = run_with(tmp_path, one_lost, hold="10 s")
    assert result.verdict.value == "PASS", result.reason


def test_driver_exception_mid_step(tmp_path: Path) -> None:
    def broken(run: Run) -> None:
        driver = run.plan.drivers["psu"]
        real = driver.set

        async def explode(values: Any) -> dict[str, float]:
            if values.get("output") == 1.0:
                raise RuntimeError("driver bug")
            return await real(values)

        driver.set = explode  # type: ignore[method-assign]

    async def nothing(run: Run) -> None:
        return None

    result = run_with(tmp_path, nothing, before=broken)
    assert result.verdict.value == "ERROR"
    assert result.reason == "step 'supply on': unexpected error: RuntimeError: driver bug"
    failed = next(s for s in result.steps if s.name == "supply on")
    assert failed.outcome.value == "ERROR"
    assert_safe(result)


def test_dead_driver_task_stops_the_run(tmp_path: Path) -> None:
    async def kill_poll(run: Run) -> None:
        await at(run, 5)
        driver = run.plan.drivers["psu"]
        poll = driver._poll  # type: ignore[attr-defined]

        async def crash() -> None:
            raise RuntimeError("poll task crashed")

        poll.cancel()
        driver._poll = run._spawn("psu", crash(), "psu-poll")  # type: ignore[attr-defined]

    result = run_with(tmp_path, kill_poll)
    assert result.verdict.value == "ERROR"
    assert "device psu: task psu-poll died: RuntimeError('poll task crashed')" in result.reason
    assert {s.device: s.safe for s in result.safe_state}["bms"] is True


def test_watchdogs_make_the_rig_safe_when_the_controller_goes_silent(tmp_path: Path) -> None:
    """The controller stops talking mid-run (as if it died): the rig goes safe on its own."""
    seen: dict[str, Any] = {}

    async def die(run: Run) -> None:
        await at(run, 5)
        supply = run._inproc["psu"]
        plant = run._plants[0]
        assert supply.output and supply.watchdog_s == 2.0
        # Silence every bench task: no more BENCH_Command frames, no more SCPI traffic.
        for driver in run.plan.drivers.values():
            for task in [*getattr(driver, "_tasks", []), getattr(driver, "_poll", None)]:
                if task is not None:
                    task.cancel()
        died = asyncio.get_running_loop().time()
        await asyncio.sleep(3.0)
        seen["supply_output"] = supply.output
        seen["supply_tripped"] = supply.watchdog_tripped
        seen["contactors"] = plant.bms.physical.name
        seen["silent_for"] = asyncio.get_running_loop().time() - died
        run.request_stop(Verdict.ABORTED, "test: controller silenced")

    run_with(tmp_path, die, voltage="100 V")
    assert seen["supply_output"] is False and seen["supply_tripped"] is True
    assert seen["contactors"] == "OPEN"
