"""What the parts of one run share, and the primitives they all use.

A run (bench/engine.py) is split by concern: the step kinds (bench/stepkinds/) and their
sequencer (bench/sequencer.py), the stop levels (bench/stopping.py), the supervision and the
monitors (bench/supervision.py), the safe state (bench/safestate.py) and the finishing of the
record (bench/finish.py). Each of them works on this one context: the plan, the options, the
signal bus, the record, the results collected so far, the stop reason, and the loop's clock.
All time comes from the running event loop (virtual or wall), never from the wall clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.compiler import SetValue
from bench.errors import DeviceError
from bench.events import EventKind
from bench.expr import Compiled
from bench.interlock import Interlock
from bench.prompts import Answers
from bench.report import runtime
from bench.result import (
    DeviceIdentity,
    DtcRead,
    Measurement,
    OperatorEntry,
    Outcome,
    SafeStateReadback,
    StepResult,
    Verdict,
    rounded,
)
from bench.runrecord import RunRecorder
from bench.signals import SignalBus
from bench.stepkinds.base import PlanStep, StepFailed
from bench.units import format_value

if TYPE_CHECKING:
    # Only a type here: the step kinds' executors take a context, and the plan lists the kinds.
    from bench.plan import Plan

COMMAND_TIMEOUT = 10.0

Listener = Callable[[str, float, dict[str, Any]], None]


@dataclass
class RunOptions:
    reports_dir: Path
    run_id: str
    seed: int = 1
    virtual_time: bool = True
    start_epoch: float = 0.0
    started_utc: str = ""
    wall_clock: Callable[[], float] | None = None  # for the wall duration printed at the end only
    # Deviations accepted before the run (e.g. --allow-out-of-cal "reason"), stated in the report.
    deviations: list[str] = field(default_factory=list)
    # Proceed despite an identity that does not match the register; the reason is a deviation.
    allow_identity_mismatch: str | None = None
    answers: Answers | None = None
    interlock: Interlock | None = None
    # Full report (17025 HTML with plots, PDF, MF4); a campaign cell keeps the plain record only.
    full_report: bool = True
    # Who runs the test (the report's and the results database's operator).
    operator: str | None = None
    # What the operator entered before the run (the browser station's scanned DUT serial): recorded
    # first among the operator's entries, as a prompt's text answer is.
    entered_before: list[OperatorEntry] = field(default_factory=list)


@dataclass
class RunState:
    """What the operator's view reads while the run goes on."""

    phase: str = "load"
    step: PlanStep[Any] | None = None
    step_started: float = 0.0
    t0: float = 0.0
    now: Callable[[], float] = lambda: 0.0
    bus: SignalBus | None = None
    verdict: Verdict | None = None
    reason: str = ""
    events: list[str] = field(default_factory=list)


class RunContext:
    """The shared state of one run and the primitives every part of it uses."""

    def __init__(self, plan: Plan, options: RunOptions) -> None:
        self.plan = plan
        self.opt = options
        self.bus = SignalBus(plan.catalog)
        for sig in plan.history:
            self.bus.keep_history(sig)
        self.state = RunState(bus=self.bus)
        self.rec: RunRecorder | None = None
        self.listeners: list[Listener] = []
        # What ended the steps: the first reason is kept, a more severe verdict replaces its
        # verdict only (bench/stopping.py). None while nothing has ended them.
        self.stop: tuple[Verdict, str] | None = None
        # Set by an emergency stop: the safe state of every device is commanded, and a step that is
        # unwound commands nothing more (a search leaves its stimulus to the safe state).
        self.emergency_stopped = False
        self.connected: list[str] = []
        # What the result is built from (bench/finish.py).
        self.identities: list[DeviceIdentity] = []
        self.step_results: list[StepResult] = []
        self.step_starts: dict[str, float] = {}
        self.measurements: list[Measurement] = []
        self.safe_readbacks: list[SafeStateReadback] = []
        self.dtc_reads: list[DtcRead] = []
        self.operator_entries: list[OperatorEntry] = list(options.entered_before)
        self.first_fail: str | None = None
        self.deviations: list[str] = [*options.deviations, *runtime.parameter_deviations(plan)]

    # -- the clock of the running loop ------------------------------------------------------
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def rel(self, t: float) -> float:
        """``t`` (loop time) as seconds since the run started."""
        return t - self.state.t0

    # -- the record -------------------------------------------------------------------------
    def event(self, kind: EventKind, **fields: Any) -> None:
        if self.rec is not None and self.state.phase != "done":
            self.rec.event_fields(kind, asyncio.get_running_loop().time(), fields)

    # -- signal values, as recorded and as shown --------------------------------------------
    def values(self, names: Iterable[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for n in sorted(names):
            s = self.bus.sample(n)
            out[n] = None if s is None else (s.state or rounded(s.value))
        return out

    def evaluate(self, expr: Compiled, text: str) -> float:
        """The value of ``expr`` now (base units); ERROR naming what is missing when it has none."""
        self.bus.env.why_unknown = None
        base = expr.fn(self.bus.env)
        if base is None:
            missing = [f"@{k}" for k in expr.marks if k not in self.bus.marks]
            missing += [k for k in expr.signals if k not in self.bus.values]
            why = f"no value for {', '.join(missing)}" if missing else self.bus.env.why_unknown or "no value"
            raise StepFailed(Outcome.ERROR, f"cannot evaluate {text}: {why}")
        return float(base)

    def truth(self, cond: Compiled, text: str, where: str = "") -> tuple[bool, str]:
        """Whether ``cond`` holds now, and the values it reads as shown; ERROR when it has no value."""
        self.bus.env.why_unknown = None
        result = cond.fn(self.bus.env)
        shown = self.shown(self.values(cond.signals))
        if result is None:
            why = self.bus.env.why_unknown or "no sample yet"
            raise StepFailed(Outcome.ERROR, f"cannot evaluate '{text}'{where}: {why} ({shown})")
        return bool(result), shown

    def shown(self, values: Mapping[str, Any]) -> str:
        return ", ".join(f"{k} = {format_signal(self.plan, k, v)}" for k, v in values.items())

    # -- commands and waits, shared by the steps and the safe state -------------------------
    async def apply(self, sets: list[SetValue]) -> str:
        """Command ``sets`` device by device and record what each device read back."""
        by_device: dict[str, dict[str, float]] = {}
        for sv in sets:
            dev, short = sv.signal.split(".", 1)
            by_device.setdefault(dev, {})[short] = sv.value
        shown = []
        for dev, values in by_device.items():
            if dev not in self.connected:
                raise DeviceError(dev, "not connected")
            try:
                async with asyncio.timeout(COMMAND_TIMEOUT):
                    readback = await self.plan.drivers[dev].set(values)
            except TimeoutError:
                raise DeviceError(dev, f"no answer within {COMMAND_TIMEOUT:g} s") from None
            texts = {f"{dev}.{k}": format_signal(self.plan, f"{dev}.{k}", v) for k, v in readback.items()}
            self.event(
                EventKind.SET,
                device=dev,
                requested={k: rounded(v) for k, v in values.items()},
                readback={k: rounded(v) for k, v in readback.items()},
                shown=texts,
            )
            shown += [f"{name} = {text}" for name, text in texts.items()]
        return "read back " + ", ".join(shown)

    async def wait_for(self, cond: Compiled, within: float) -> float:
        """Wait until ``cond`` is true, woken by samples of its signals; the triggering sample's time."""
        fn, env = cond.fn, self.bus.env
        hit: asyncio.Future[float] = self.loop.create_future()

        def on_sample(name: str, value: float, t: float) -> None:
            if not hit.done() and fn(env) is True:
                hit.set_result(t)

        if fn(env) is True:
            return self.now()
        sub = self.bus.subscribe(cond.signals, on_sample)
        try:
            async with asyncio.timeout(within):
                return await hit
        finally:
            sub.cancel()


def format_signal(plan: Plan, name: str, v: Any) -> str:
    """A signal's value as the operator reads it: states by name, numbers with the signal's unit."""
    if v is None:
        return "no sample"
    if isinstance(v, str):
        return v
    info = plan.catalog.get(name)
    if info and info.choices:
        return info.state_name(v) or format_value(v)
    return format_value(v, info.unit.text if info else "")
