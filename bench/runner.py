"""Run a built plan to its end on its own event loop, outside the command line.

``bench run`` keeps its own code (terminal view, signal handlers). This is the small piece a
bench agent (bench/lab/agent.py) needs: run one plan in a worker thread on a fresh loop (the
virtual-time loop on a simulated station), hand the live ``Run`` to the caller so it can stop it
from another thread, and pass every record event to listeners.

Why a separate loop and thread: the virtual-time loop jumps its clock whenever nothing is
ready. A network client sharing that loop would see its keepalives and timeouts expire in
microseconds of wall time. No signal handlers are installed here: they only work in the main
thread, and the agent owns them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uuid6

from bench.engine import Run, RunOptions
from bench.interlock import Interlock
from bench.plan import Plan
from bench.prompts import Answers
from bench.result import RunResult
from bench.vtime import VirtualTimeLoop

Listener = Callable[[str, float, dict[str, Any]], None]


@dataclass
class Started:
    """What a caller in another thread needs to stop a run: the engine and the loop it runs on."""

    run: Run
    loop: asyncio.AbstractEventLoop
    run_id: str


def new_run_id() -> str:
    return str(uuid6.uuid7())


def utc(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def run_plan(
    plan: Plan,
    reports_dir: Path,
    *,
    run_id: str | None = None,
    seed: int = 1,
    realtime: bool = False,
    listeners: list[Listener] | None = None,
    on_started: Callable[[Started], None] | None = None,
    deviations: list[str] | None = None,
    full_report: bool = True,
) -> RunResult:
    """Run ``plan`` to its end (blocking) and return its result; the record lands in reports_dir/<run id>.

    Prompts cannot be answered by anyone here (no terminal), so a sequence with prompts fails
    them. The station's interlock is checked by the caller before, and latched by the engine on a trip.
    """
    model = plan.station.model
    virtual = model.simulated and model.virtual_time and not realtime
    rid = run_id or new_run_id()
    wall0 = time.monotonic()
    start_epoch = time.time()
    options = RunOptions(
        reports_dir=reports_dir,
        run_id=rid,
        seed=seed,
        virtual_time=virtual,
        start_epoch=start_epoch,
        started_utc=utc(start_epoch),
        wall_clock=lambda: time.monotonic() - wall0,
        answers=Answers(None, interactive=False),
        interlock=Interlock(model.id),
        deviations=list(deviations or []),
        full_report=full_report,
    )
    engine = Run(plan, options)
    engine.listeners.extend(listeners or [])

    async def main() -> RunResult:
        if on_started is not None:
            on_started(Started(engine, asyncio.get_running_loop(), rid))
        return await engine.execute()

    with asyncio.Runner(loop_factory=VirtualTimeLoop if virtual else asyncio.new_event_loop) as runner:
        return runner.run(main())
