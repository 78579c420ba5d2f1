"""The one way to run a plan: the guards every entry point passes, then the run on its own loop.

``bench run``, campaign cells (bench/campaign.py) and lab jobs (bench/lab/agent.py) all run here,
so that none can skip a guard. Before any device moves, in this order:

1. the state folder takes a file (else a supervisor trip could not latch: refused, exit 6);
2. the station lock (bench/stationlock.py): one run at a time per station id (refused, exit 7);
3. the station interlock is not latched (refused, exit 6);
4. the reports folder takes a file (refused, exit 2);
5. the calibration gate: no instrument past its due date on a physical station (refused, exit 2).

The lock is held until the record is sealed. Then, with the station released, the sealed folder is
indexed in the results database (bench/results/after_run.py), or queued when the database cannot
take it; neither changes the run's verdict or exit code. What differs between entry points comes in as
options: the terminal view and the signal handlers of ``bench run``, the listeners and the
``on_started`` hook of the lab agent (which runs plans in a worker thread, so that its network
client never shares the virtual-time loop, whose clock jumps whenever nothing is ready).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import getpass
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uuid6

from bench.clock import utc  # re-exported: the lab imports it from here
from bench.engine import Run, RunOptions
from bench.errors import LoadError
from bench.interlock import Interlock, check_writable
from bench.plan import Plan
from bench.prompts import Answers, Asker
from bench.result import OperatorEntry, RunResult
from bench.results.rows import RunTags
from bench.runcontext import Listener
from bench.stationlock import hold_station
from bench.stepkinds.prompt import answer_checks
from bench.vtime import new_loop

# Wraps the run inside its loop (``bench run``'s live view); entered right before the engine starts.
View = Callable[[Run], AbstractContextManager[Any]]


@dataclass
class Started:
    """What a caller in another thread needs to stop a run: the engine and the loop it runs on."""

    run: Run
    loop: asyncio.AbstractEventLoop
    run_id: str


def new_run_id() -> str:
    return str(uuid6.uuid7())


def is_virtual_run(plan: Plan, realtime: bool) -> bool:
    model = plan.station.model
    return model.simulated and model.virtual_time and not realtime


@contextlib.contextmanager
def station_guard(station_id: str, run_id: str, what: str) -> Iterator[Interlock]:
    """Guards 1-3 above, for a run or a whole campaign: held until the block ends."""
    interlock = Interlock(station_id)
    check_writable(interlock.folder)
    with hold_station(station_id, run_id, what, interlock.folder):
        interlock.check(what)
        yield interlock


def check_reports_folder(reports_dir: Path) -> None:
    """A run whose record cannot be written must not start: found now, not at the first event."""
    try:
        reports_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=reports_dir):
            pass
    except OSError as exc:
        raise LoadError(
            f"reports folder {reports_dir} is not writable ({exc.strerror or exc}); nothing was run"
        ) from None


def calibration_gate(plan: Plan, start_epoch: float, allow: str | None) -> list[str]:
    """Refuse a run on a physical station with an instrument past its calibration due date.

    ``allow`` (``--allow-out-of-cal REASON``) lets it proceed; the report states it as a
    deviation. On a simulated station the instruments are models, so an expired date is only
    a warning (recorded as a deviation too, so that it is never silent).
    """
    from bench.console import stderr_console
    from bench.report.runtime import out_of_calibration

    today = dt.datetime.fromtimestamp(start_epoch, dt.UTC).date()
    expired = out_of_calibration(plan, today)
    if not expired:
        return []
    if plan.station.model.simulated:
        for e in expired:
            stderr_console().print(f"warning: {e} (simulated station: not refused)", markup=False)
        return [f"out of calibration on a simulated station (not refused): {e}" for e in expired]
    if allow is None:
        raise LoadError(
            f"station '{plan.station.model.id}': {expired[0]}"
            + (f" (and {len(expired) - 1} more)" if len(expired) > 1 else "")
            + "; the run is refused (--allow-out-of-cal REASON proceeds and reports it as a deviation)"
        )
    return [f"instrument used out of calibration: {e}; accepted because: {allow}" for e in expired]


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
    answers: Path | None = None,
    interactive: bool = False,
    allow_out_of_cal: str | None = None,
    allow_identity_mismatch: str | None = None,
    view: View | None = None,
    signals: bool = False,
    tags: RunTags | None = None,
    on_indexed: Callable[[str], None] | None = None,
    asker: Asker | None = None,
    entered_before: list[OperatorEntry] | None = None,
) -> RunResult:
    """Run ``plan`` to its end (blocking) and return its result; the record lands in reports_dir/<run id>.

    Refusals by the guards raise a BenchError (one line, its own exit code) before anything
    moves. Prompts are asked on the terminal only if ``interactive`` and on the wall clock;
    otherwise they take their answer from the ``answers`` file, or fail, unless an ``asker`` (the
    browser station) asks a person, in virtual time too (bench/prompts.py). ``entered_before``: what
    the operator entered before the run (the item's serial), recorded like a prompt's text answer.
    ``signals`` installs
    SIGINT/SIGTERM handlers that stop the run (main thread only). ``tags`` are what the entry point
    knows of the run for the results database (bench name, operator, campaign cell);
    ``on_indexed`` is told where the run was indexed.
    """
    virtual = is_virtual_run(plan, realtime)
    rid = run_id or new_run_id()
    if signals and threading.current_thread() is not threading.main_thread():
        raise RuntimeError("signal handlers can only be installed by a run in the main thread")
    with station_guard(plan.station.model.id, rid, f"run of {plan.sequence.id}") as interlock:
        check_reports_folder(reports_dir)
        start_epoch = time.time()
        accepted = [*(deviations or []), *calibration_gate(plan, start_epoch, allow_out_of_cal)]
        wall0 = time.monotonic()
        options = RunOptions(
            reports_dir=reports_dir,
            run_id=rid,
            seed=seed,
            virtual_time=virtual,
            start_epoch=start_epoch,
            started_utc=utc(start_epoch),
            wall_clock=lambda: time.monotonic() - wall0,
            # Nobody can be asked at the terminal in virtual time: prompts need an answers file or an
            # asker there. The file is checked against the sequence's prompts here, before anything moves.
            answers=Answers(answers, interactive=interactive and not virtual, checks=answer_checks(plan), asker=asker),
            interlock=interlock,
            deviations=accepted,
            allow_identity_mismatch=allow_identity_mismatch,
            full_report=full_report,
            operator=(tags.operator if tags is not None else None) or login_name(),
            entered_before=list(entered_before or []),
        )
        engine = Run(plan, options)
        engine.listeners.extend(listeners or [])

        async def main() -> RunResult:
            loop = asyncio.get_running_loop()
            if signals:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, engine.on_signal, sig.name)
            if on_started is not None:
                on_started(Started(engine, loop, rid))
            with view(engine) if view is not None else contextlib.nullcontext():
                return await engine.execute()

        with asyncio.Runner(loop_factory=lambda: new_loop(virtual)) as runner:
            result = runner.run(main())
    # The run is over and recorded: a Ctrl-C while it is indexed has nothing left to stop, and
    # must not turn the run's exit code into an interruption's.
    held = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)} if signals else {}
    try:
        index_run(plan, reports_dir / rid, rid, tags or RunTags(), on_indexed)
    finally:
        for sig, handler in held.items():
            signal.signal(sig, handler)
    return result


def login_name() -> str | None:
    """The user the run goes under, when the entry point names no operator; None if unknown."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name and no user entry (some containers)
        return None


def index_run(plan: Plan, folder: Path, run_id: str, tags: RunTags, on_indexed: Callable[[str], None] | None) -> None:
    """Index the sealed run (or queue it); a database problem is one warning line on stderr."""
    from bench.console import stderr_console
    from bench.results.after_run import index_after_run

    said, warning = index_after_run(folder, run_id, plan.station.model.results, tags)
    if warning is not None:
        stderr_console().print(f"warning: {warning}", markup=False)
    if said is not None and on_indexed is not None:
        on_indexed(said)
