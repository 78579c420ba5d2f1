"""bench/periodic.py and the virtual-time loop's own pass: the same things in the same order as a
task that sleeps and as the base event loop, so a simulated run's record does not change."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from bench.periodic import Periodic
from bench.vtime import VirtualTimeLoop

Log = list[tuple[float, str]]


def _scenario(log: Log, use_timer: bool) -> Callable[[], Coroutine[Any, Any, None]]:
    """A cyclic sender (period 0.1 s, as a task or a Periodic) among tasks and callbacks that
    wake at the same instants, each logging what it does and when."""

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def note(what: str) -> None:
            log.append((loop.time(), what))

        def reply(name: str) -> None:
            note(f"{name}-reply")
            loop.call_soon(note, f"{name}-published")

        def send() -> None:
            note("send")
            loop.call_soon(note, "delivered")  # what a frame's delivery does on the in-process link

        async def sleeping_sender() -> None:
            deadline = loop.time() + 0.1
            while True:
                delay = deadline - loop.time()
                await asyncio.sleep(delay if delay > 0.0 else 0.0)
                send()
                deadline += 0.1

        async def poller(name: str, period: float) -> None:
            deadline = loop.time()
            while True:
                note(name)
                # A reply that triggers another callback, and a timer due at once: which pass
                # runs what shows in their order.
                loop.call_soon(reply, name)
                loop.call_later(0.0, note, f"{name}-timer")
                deadline += period
                await asyncio.sleep(max(0.0, deadline - loop.time()))

        tasks = [loop.create_task(poller("poll-a", 0.2)), loop.create_task(poller("poll-b", 0.05))]
        timer = None
        if use_timer:
            timer = Periodic(loop, 0.1, send, loop.time() + 0.1, name="sender")
        else:
            tasks.append(loop.create_task(sleeping_sender()))
        loop.call_later(0.3, note, "timer at 0.3")
        await asyncio.sleep(1.0)
        for task in tasks:
            task.cancel()
        if timer is not None:
            timer.cancel()
        note("end")

    return main


def _run(use_timer: bool, *, debug: bool = False) -> Log:
    log: Log = []
    loop = VirtualTimeLoop()
    loop.set_debug(debug)
    try:
        loop.run_until_complete(_scenario(log, use_timer)())
    finally:
        loop.close()
    return log


def test_a_periodic_runs_where_a_sleeping_task_would() -> None:
    with_task, with_timer = _run(use_timer=False), _run(use_timer=True)
    assert [w for _, w in with_task].count("send") == 10
    assert with_timer == with_task


def test_body_first_then_on_absolute_deadlines() -> None:
    stamps: list[float] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        timer = Periodic(loop, 0.25, lambda: stamps.append(loop.time()), loop.time(), name="t", body_first=True)
        assert stamps == [0.0]  # at once, before any wait
        await asyncio.sleep(1.1)
        timer.cancel()
        await asyncio.sleep(1.0)

    loop = VirtualTimeLoop()
    loop.run_until_complete(main())
    loop.close()
    assert stamps == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0], abs=1e-12)


def test_a_body_that_raises_stops_the_schedule_and_is_reported() -> None:
    errors: list[BaseException] = []
    calls: list[float] = []

    def body() -> None:
        calls.append(0.0)
        if len(calls) == 2:
            raise RuntimeError("send refused")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        timer = Periodic(loop, 0.1, body, loop.time() + 0.1, name="t", on_error=errors.append)
        await asyncio.sleep(1.0)
        assert not timer.running

    loop = VirtualTimeLoop()
    loop.run_until_complete(main())
    loop.close()
    assert len(calls) == 2
    assert [str(e) for e in errors] == ["send refused"]
