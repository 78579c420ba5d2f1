"""Execute a plan: connect, identify, run steps under monitors, always clean up, record.

The life of a run is documented in docs/lifecycle.md. In short:

1. start the station's simulated plants (if any) and connect every device;
2. read identities;
3. run the steps in one task while monitors watch every relevant sample;
4. whatever ended the steps (PASS, FAIL, error, monitor, Ctrl-C), run ``cleanup``;
5. bring every device to its safe state and read that state back;
6. close devices, write result.json, junit.xml, report.html and seal the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import statistics
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import __version__
from bench.device import DeviceContext, load_plant_builder, plant_faults
from bench.errors import BenchError, DeviceError, ExpressionError, LoadError
from bench.events import EventKind
from bench.expr import Compiled
from bench.interlock import Interlock
from bench.plan import MeasurePlan, Plan, PlanMonitor, PlanStep, SetValue
from bench.prompts import NO, YES, Answers
from bench.record import file_sha256
from bench.report import runtime
from bench.result import (
    DeviceIdentity,
    Measurement,
    Outcome,
    Parameter,
    RunResult,
    SafeStateReadback,
    StepResult,
    Verdict,
)
from bench.runrecord import RunRecorder
from bench.signals import SignalBus
from bench.stats import max_moving_mean
from bench.units import DIMENSIONLESS, Quantity, format_duration, format_value, parse_quantity

CONNECT_TIMEOUT = 10.0
COMMAND_TIMEOUT = 10.0
_SEVERITY = {Verdict.PASS: 0, Verdict.FAIL: 1, Verdict.ABORTED: 2, Verdict.ERROR: 3}


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


class RecordStageInterrupted(BaseException):
    """A second stop signal while the record was written: the process ends now (exit 4).

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` on the way (the
    report's fallbacks) can swallow it, but not a KeyboardInterrupt, which the command-line
    framework would turn into a bare exit code without this message.
    """


class StepFailed(Exception):
    def __init__(self, outcome: Outcome, message: str) -> None:
        self.outcome = outcome
        super().__init__(message)


@dataclass
class RunState:
    """What the operator's view reads while the run goes on."""

    phase: str = "load"
    step: PlanStep | None = None
    step_started: float = 0.0
    t0: float = 0.0
    now: Callable[[], float] = lambda: 0.0
    bus: SignalBus | None = None
    verdict: Verdict | None = None
    reason: str = ""
    events: list[str] = field(default_factory=list)


class Run:
    def __init__(self, plan: Plan, options: RunOptions) -> None:
        self.plan = plan
        self.opt = options
        self.bus = SignalBus(plan.catalog)
        for sig in plan.history:
            self.bus.keep_history(sig)
        self.state = RunState(bus=self.bus)
        self._stop: tuple[Verdict, str] | None = None
        self._steps_task: asyncio.Task[None] | None = None
        self._measurements: list[Measurement] = []
        self._step_results: list[StepResult] = []
        self._step_starts: dict[str, float] = {}
        self._connected: list[str] = []
        self._identities: list[DeviceIdentity] = []
        self._safe: list[SafeStateReadback] = []
        self._plants: list[Any] = []
        self._inproc: dict[str, Any] = {}
        self._first_fail: str | None = None
        self._deviations: list[str] = [*options.deviations, *runtime.parameter_deviations(plan)]
        self.rec: RunRecorder | None = None
        self.listeners: list[Callable[[str, float, dict[str, Any]], None]] = []
        self._terminate: str | None = None
        self.tripped: str | None = None
        self._stop_signals = 0  # SIGINT and SIGTERM received
        self._estop_task: asyncio.Task[None] | None = None
        self._cleanup_task: asyncio.Task[None] | None = None
        self._safe_done = False

    # -- stopping ---------------------------------------------------------------------------
    def request_stop(self, verdict: Verdict, reason: str) -> None:
        """Stop the steps now (monitor, driver fault, operator). Cleanup still runs."""
        if self._stop is None or _SEVERITY[verdict] > _SEVERITY[self._stop[0]]:
            self._stop = (verdict, reason) if self._stop is None else (verdict, self._stop[1])
        if self._steps_task is not None and not self._steps_task.done():
            self._steps_task.cancel()
        elif self.state.phase == "cleanup" and self.rec is not None:
            self._event(EventKind.STOP_REQUESTED, verdict=verdict.value, reason=reason, note="cleanup continues")

    def terminate(self, reason: str) -> None:
        """Finish the current step, then clean up and report."""
        if self._terminate is None and self.state.phase in ("load", "steps"):
            self._terminate = reason
            self._event(EventKind.TERMINATE_REQUESTED, reason=reason)

    def emergency_stop(self, reason: str, verdict: Verdict = Verdict.ABORTED) -> None:
        """Every device's safe state at once, concurrently, and nothing else (no cleanup steps)."""
        if self._estop_task is not None or self.state.phase in ("record", "done"):
            return  # already stopping, or the safe state was commanded and read back before the record
        # The safe-state tasks are queued before the steps are cancelled, so that they run first,
        # ahead of the unwinding of the steps and of anything the caller queues next.
        self._estop_task = self.loop.create_task(self._safe_state(self._safe_state_tasks()), name="emergency-stop")
        self._event(EventKind.EMERGENCY_STOP, reason=reason)
        self.request_stop(verdict, reason)
        for task in (self._steps_task, self._cleanup_task):
            if task is not None and not task.done():
                task.cancel()

    def on_signal(self, name: str) -> None:
        """A first SIGINT or SIGTERM aborts, a second one is an emergency stop.

        While the record is written a second one ends the process instead (see
        ``_stop_signals_while_recording``): the safe state was commanded before that stage.
        """
        if self.state.phase in ("record", "done"):
            return  # the safe state is behind us; _stop_signals_while_recording counts these
        self._stop_signals += 1
        if self._stop_signals >= 2:
            self.emergency_stop(f"emergency stop by operator (second {name})")
            return
        self.request_stop(Verdict.ABORTED, f"interrupted by operator ({name})")

    @contextlib.contextmanager
    def _stop_signals_while_recording(self) -> Iterator[None]:
        """Let a second stop signal end the process while the record and report are written.

        That stage is synchronous (a long PDF takes many seconds), out of reach of the event
        loop's signal handlers. It starts after the safe state was commanded and read back, so
        nothing is left to command: the process ends at once, with the record unsealed. Signal
        handlers exist only in the main thread; elsewhere (a lab agent's worker) its owner
        stops the process.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_signal(signum: int, frame: object) -> None:
            self._stop_signals += 1
            if self._stop_signals >= 2:
                raise RecordStageInterrupted(
                    f"emergency stop: {signal.Signals(signum).name} while the record was being written; "
                    "ended at once, the safe state had been commanded before; the record is not sealed"
                )

        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, on_signal)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, signal.SIG_DFL if handler is None else handler)

    def _record_failed(self, error: str) -> None:
        """A run that can no longer be recorded is stopped, and brought to its safe state, at once."""
        self.loop.call_soon_threadsafe(self.request_stop, Verdict.ERROR, f"record could not be written: {error}")

    def _spawn(self, device: str, coro: Any, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = self.loop.create_task(coro, name=name)

        def done(t: asyncio.Task[None]) -> None:
            if not t.cancelled() and t.exception() is not None:
                self._on_fault(device, f"task {name} died: {t.exception()!r}")

        task.add_done_callback(done)
        return task

    def _start_supervision(self) -> list[Any]:
        """Station hard limits and the e-stop input, independent of the sequence, for the whole run."""
        subs = []
        for lim in self.plan.limits:
            subs.append(self.bus.subscribe(lim.cond.signals, self._limit_callback(lim)))
        estop = self.plan.estop
        if estop is not None:
            fn, env = estop.fn, self.bus.env

            def on_estop(name: str, value: float, t: float) -> None:
                if self._estop_task is None and fn(env) is True:
                    shown = self._shown(self._values(estop.signals))
                    self.emergency_stop(f"emergency-stop input: {self.plan.estop_text} ({shown})")

            subs.append(self.bus.subscribe(estop.signals, on_estop))
        return subs

    def _limit_callback(self, lim: PlanMonitor) -> Callable[[str, float, float], None]:
        fn, env = lim.cond.fn, self.bus.env

        def on_sample(name: str, value: float, t: float) -> None:
            # React to the very sample that violates the limit, before anything else runs.
            if self._estop_task is None and fn(env) is True:
                values = self._values(lim.cond.signals)
                # Whether the interlock latched is said once it did (or could not): see _latch.
                reason = f"supervisor limit '{lim.name}' tripped: {lim.text} ({self._shown(values)})"
                self._event(
                    EventKind.SUPERVISOR_TRIPPED,
                    limit=lim.name,
                    condition=lim.text,
                    values=values,
                    sample_t=_round(self._rel(t)),
                )
                self.tripped = reason
                self.emergency_stop(reason)
                if self.opt.interlock is not None:
                    # Latched right after the safe-state commands went out, not before them: the
                    # latch is file writes and an fsync (about 1 ms, several on a busy disk), and
                    # a latch that cannot be written must not hold back the emergency stop.
                    self.loop.call_soon(self._latch, reason)

        return on_sample

    def _latch(self, reason: str) -> None:
        assert self.opt.interlock is not None
        try:
            self.opt.interlock.trip(reason, self.opt.run_id)
            outcome, verdict = "interlock latched", None
        except OSError as exc:
            # Fail closed: the next run finds the state folder unwritable and is refused (bench/runner.py).
            self._event(EventKind.INTERLOCK_NOT_LATCHED, reason=f"{type(exc).__name__}: {exc}")
            outcome = f"the interlock could NOT be latched ({exc.strerror or exc}); runs are refused until it can be"
            verdict = Verdict.ERROR
        self.tripped = f"{reason}; {outcome}"
        if self._stop is None:
            return
        stop_verdict, stop_reason = self._stop
        if stop_reason == reason:
            stop_reason = self.tripped
        elif verdict is not None:  # an earlier stop gave the reason: a failed latch is never left out
            stop_reason = f"{stop_reason}; {outcome}"
        self._stop = (verdict or stop_verdict, stop_reason)

    def _on_fault(self, device: str, reason: str) -> None:
        self._event(EventKind.DEVICE_FAULT, device=device, reason=reason)
        self.request_stop(Verdict.ERROR, f"device {device}: {reason}")

    # -- helpers ----------------------------------------------------------------------------
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def _now(self) -> float:
        return self.loop.time()

    def _rel(self, t: float) -> float:
        return t - self.state.t0

    def _event(self, kind: EventKind, **fields: Any) -> None:
        if self.rec is not None and self.state.phase != "done":
            self.rec.event(kind, self._now(), **fields)

    def _shown(self, values: Mapping[str, Any]) -> str:
        return ", ".join(f"{k} = {_fmt_value(self, k, v)}" for k, v in values.items())

    def _values(self, names: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for n in sorted(names):
            s = self.bus.sample(n)
            out[n] = None if s is None else (s.state or _round(s.value))
        return out

    # -- the run ----------------------------------------------------------------------------
    async def execute(self) -> RunResult:
        loop = self.loop
        t0 = loop.time()
        self.state.t0 = t0
        self.state.now = loop.time
        plan = self.plan
        run_dir = self.opt.reports_dir / self.opt.run_id
        try:
            self.rec = RunRecorder(run_dir, t0, self.opt.start_epoch)
            inputs = {
                "sequence": self.rec.copy_input(plan.sequence_source.path),
                "station": self.rec.copy_input(plan.station.path),
            }
            dbcs = [self.rec.copy_input(p) for p in plan.files()]
        except OSError as failed:
            # Nothing has moved yet: a record that cannot even be begun refuses the run.
            if self.rec is not None:
                with contextlib.suppress(OSError):
                    self.rec.abandon()
            raise LoadError(
                f"{run_dir}: the record of the run cannot be written ({failed.strerror or failed}); nothing was run"
            ) from None
        self.rec.listeners = self.listeners  # shared: listeners added later hear the rest of the run
        self.rec.on_write_failure = self._record_failed
        seq = plan.sequence
        self._event(
            EventKind.RUN_STARTED,
            run_id=self.opt.run_id,
            started_utc=self.opt.started_utc,
            sequence={
                "id": seq.id,
                "version": seq.version,
                "title": seq.title,
                "basis": seq.basis.model_dump(),
                "sha256": plan.sequence_sha256,
            },
            station={"id": plan.station.model.id, "sha256": plan.station.source.sha256},
            parameters={k: str(p.value) for k, p in plan.params.items()},
            overridden=[k for k, p in plan.params.items() if p.overridden],
            faults=plan.faults,
            seed=self.opt.seed,
            virtual_time=self.opt.virtual_time,
            code_version=__version__,
            inputs=inputs,
            dbc=dbcs,
            decision_rule=runtime.decision_rule(plan),
            deviations=self._deviations,
        )
        supervision = self._start_supervision()
        try:
            await self._start_plants()
            await self._connect_all()
            if self._stop is None:
                self.state.phase = "steps"
                monitors = self._start_monitors()
                snapshots = asyncio.create_task(self._snapshots())
                # A monitor already true at arming stops the steps before their first command.
                first = plan.steps if self._stop is None else []
                self._steps_task = asyncio.create_task(self._run_steps(first, "steps"))
                try:
                    await asyncio.wait([self._steps_task])
                    if self._terminate and self._stop is None:
                        self._stop = (Verdict.ABORTED, f"terminated: {self._terminate}")
                finally:
                    for sub in monitors:
                        sub.cancel()
                    snapshots.cancel()
                if self._steps_task.cancelled() and self._stop is None:
                    self._stop = (Verdict.ABORTED, "steps were cancelled")
                elif not self._steps_task.cancelled() and self._steps_task.exception() is not None:
                    exc = self._steps_task.exception()
                    self._stop = (Verdict.ERROR, f"internal error in steps: {exc!r}")
        except BenchError as exc:
            self._stop = self._stop or (Verdict.ERROR, str(exc))
        finally:
            self.state.phase = "cleanup"
            try:
                await self._cleanup()
            finally:
                for sub in supervision:
                    sub.cancel()
        self.state.phase = "record"
        with self._stop_signals_while_recording():
            return await self._finish()

    async def _start_plants(self) -> None:
        for i, sim in enumerate(self.plan.station.model.simulators):
            if sim.devices and not any(d in self.plan.drivers for d in sim.devices):
                continue  # nothing this run uses sits behind this plant
            builder = load_plant_builder(sim.kind)
            config = dict(sim.config)
            if "dbc" in config:
                config["dbc"] = str((self.plan.station.base_dir / str(config["dbc"])).resolve())
            try:
                faults = plant_faults(sim.kind, self.plan.faults)
                plant = builder(config, faults=faults, seed=self.opt.seed + i, register=self._inproc.__setitem__)
            except ValueError as exc:
                raise BenchError(f"simulator {sim.kind}: {exc}") from None
            await plant.start()
            self._plants.append(plant)
            self._event(EventKind.SIMULATOR_STARTED, simulator=sim.kind, faults=faults)

    async def _connect_all(self) -> None:
        ctx = DeviceContext(
            self.loop,
            self.bus.publish,
            self.rec.frame if self.rec else (lambda m, tx: None),
            self._on_fault,
            self._inproc,
            spawn=self._spawn,
            wanted=self.plan.wanted,
        )
        for name, driver in self.plan.drivers.items():
            if self._estop_task is not None:
                break  # an emergency stop: connect no more; those connected get their safe state
            try:
                async with asyncio.timeout(driver.connect_timeout):  # the driver's own waits fit inside
                    await driver.connect(ctx)
                self._connected.append(name)
                async with asyncio.timeout(driver.connect_timeout):
                    identity = await driver.identify()
            # A device that fails does not stop the others from connecting: every device that can be
            # reached is then brought to its safe state (a supply left on by an earlier crash too).
            # The first failure is the run's reason; the steps do not start.
            except TimeoutError:
                reason = f"device {name}: no answer within {driver.connect_timeout:g} s while connecting"
                self._stop = self._stop or (Verdict.ERROR, reason)
                self._event(EventKind.DEVICE_FAULT, device=name, reason=reason)
                continue
            except (BenchError, OSError) as exc:
                reason = str(exc) if isinstance(exc, DeviceError) else f"device {name}: {exc}"
                self._stop = self._stop or (Verdict.ERROR, reason)
                self._event(EventKind.DEVICE_FAULT, device=name, reason=reason)
                continue
            entry = self.plan.station.model.devices[name]
            self._identities.append(DeviceIdentity(name=name, driver=entry.driver, identity=identity))
            self._event(EventKind.DEVICE_CONNECTED, device=name, driver=entry.driver, identity=identity)
            mismatch = runtime.identity_problem(self.plan, name, identity)
            if mismatch is not None:
                if self.opt.allow_identity_mismatch is None:
                    self._stop = (
                        Verdict.ERROR,
                        f"{mismatch} (run refused; --allow-identity-mismatch REASON overrides)",
                    )
                    self._event(EventKind.IDENTITY_MISMATCH, device=name, reason=mismatch, refused=True)
                    return
                text = f"{mismatch}; accepted by the operator: {self.opt.allow_identity_mismatch}"
                self._deviations.append(text)
                self._event(EventKind.IDENTITY_MISMATCH, device=name, reason=mismatch, refused=False, deviation=text)

    def _start_monitors(self) -> list[Any]:
        subs = []
        for mon in self.plan.monitors:
            subs.append(self.bus.subscribe(mon.cond.signals, self._monitor_callback(mon)))
            if mon.cond.fn(self.bus.env) is True:
                self._monitor_tripped(mon)
        return subs

    def _monitor_callback(self, mon: PlanMonitor) -> Callable[[str, float, float], None]:
        fn, env = mon.cond.fn, self.bus.env

        def on_sample(name: str, value: float, t: float) -> None:
            if self._stop is None and fn(env) is True:
                self._monitor_tripped(mon, t)

        return on_sample

    def _monitor_tripped(self, mon: PlanMonitor, t: float | None = None) -> None:
        verdict = Verdict.ABORTED if mon.then == "abort" else Verdict.FAIL
        values = self._values(mon.cond.signals)
        shown = self._shown(values)
        reason = f"monitor '{mon.name}' tripped: {mon.text} ({shown})"
        if mon.message:
            reason += f": {mon.message}"
        self._event(
            EventKind.MONITOR_TRIPPED,
            monitor=mon.name,
            condition=mon.text,
            values=values,
            sample_t=None if t is None else _round(self._rel(t)),
            action=mon.then,
        )
        self.request_stop(verdict, reason)

    async def _snapshots(self) -> None:
        names = self.plan.display
        if not names:
            return
        while True:
            await asyncio.sleep(self.plan.record_interval)
            self._event(EventKind.SNAPSHOT, values=self._values(names))

    # -- steps ------------------------------------------------------------------------------
    async def _run_steps(self, steps: list[PlanStep], phase: str) -> None:
        for step in steps:
            if self._terminate is not None and phase == "steps":
                self._event(EventKind.TERMINATED, before_step=step.name, reason=self._terminate)
                return
            ok = await self._run_step(step, phase)
            if not ok and phase == "steps":
                return

    async def _run_step(self, step: PlanStep, phase: str) -> bool:
        """Run one step and record it; False when the sequence must not go on."""
        self.state.step = step
        start = self._now()
        self.state.step_started = start
        self._step_starts[step.name] = start
        self._event(
            EventKind.STEP_STARTED, step=step.name, step_kind=step.kind, phase=phase, line=step.line, text=step.text
        )
        outcome, message, go_on = Outcome.PASS, "", True
        try:
            message = await self._execute(step) or ""
        except StepFailed as exc:
            outcome, message = exc.outcome, str(exc)
            go_on = exc.outcome == Outcome.FAIL and step.kind == "measure"
        except asyncio.CancelledError:
            outcome = Outcome.ABORTED
            message = self._stop[1] if self._stop else "cancelled"
            self._record_step(step, phase, start, outcome, message)
            raise
        except (BenchError, OSError) as exc:
            outcome, message, go_on = Outcome.ERROR, str(exc), False
        except Exception as exc:  # a driver bug must still end in a recorded step and a cleanup
            outcome, message, go_on = Outcome.ERROR, f"unexpected error: {type(exc).__name__}: {exc}", False
        self._record_step(step, phase, start, outcome, message)
        if outcome == Outcome.FAIL and self._first_fail is None:
            self._first_fail = f"step '{step.name}': {message}"
        if outcome == Outcome.ERROR and phase == "steps":
            self._stop = self._stop or (Verdict.ERROR, f"step '{step.name}': {message}")
        return go_on

    def _record_step(self, step: PlanStep, phase: str, start: float, outcome: Outcome, message: str) -> None:
        end = self._now()
        self._step_results.append(
            StepResult(
                index=step.index,
                name=step.name,
                kind=step.kind,
                phase=phase,
                line=step.line,
                outcome=outcome,
                started=_round(self._rel(start)),
                ended=_round(self._rel(end)),
                message=message,
            )
        )
        self._event(EventKind.STEP_ENDED, step=step.name, outcome=outcome.value, message=message)

    async def _execute(self, step: PlanStep) -> str | None:
        if step.kind == "set":
            t = self._now()
            text = await self._apply(step.sets)
            if step.mark:
                # The instant the command went out: a fault injected here starts with the next frame.
                self.bus.marks[step.mark] = self._rel(t)
                text += f" (@{step.mark} = {format_value(self._rel(t), 's')})"
            return text
        if step.kind == "ramp":
            return await self._ramp(step)
        if step.kind == "wait":
            await asyncio.sleep(step.duration)
            return None
        if step.kind == "wait_until":
            return await self._wait_until(step)
        if step.kind == "check":
            assert step.cond is not None
            self.bus.env.why_unknown = None
            result = step.cond.fn(self.bus.env)
            values = self._values(step.cond.signals)
            shown = self._shown(values)
            if result is None:
                why = self.bus.env.why_unknown or "no sample yet"
                raise StepFailed(Outcome.ERROR, f"cannot evaluate '{step.cond_text}': {why} ({shown})")
            if not result:
                text = step.message or f"check failed: {step.cond_text}"
                raise StepFailed(Outcome.FAIL, f"{text} ({shown})" if shown else text)
            return shown
        if step.kind == "measure":
            assert step.measure is not None
            return await self._measure(step, step.measure)
        if step.kind == "prompt":
            return await self._prompt(step)
        raise AssertionError(step.kind)  # pragma: no cover

    async def _apply(self, sets: list[SetValue]) -> str:
        by_device: dict[str, dict[str, float]] = {}
        for sv in sets:
            dev, short = sv.signal.split(".", 1)
            by_device.setdefault(dev, {})[short] = sv.value
        shown = []
        for dev, values in by_device.items():
            if dev not in self._connected:
                raise DeviceError(dev, "not connected")
            try:
                async with asyncio.timeout(COMMAND_TIMEOUT):
                    readback = await self.plan.drivers[dev].set(values)
            except TimeoutError:
                raise DeviceError(dev, f"no answer within {COMMAND_TIMEOUT:g} s") from None
            self._event(
                EventKind.SET,
                device=dev,
                requested={k: _round(v) for k, v in values.items()},
                readback={k: _round(v) for k, v in readback.items()},
                shown={f"{dev}.{k}": _fmt_value(self, f"{dev}.{k}", v) for k, v in readback.items()},
            )
            shown += [f"{dev}.{k} = {_fmt_value(self, f'{dev}.{k}', v)}" for k, v in readback.items()]
        return "read back " + ", ".join(shown)

    async def _wait_for(self, cond: Compiled, within: float) -> float:
        """Wait until ``cond`` is true, woken by samples of its signals; the triggering sample's time."""
        fn, env = cond.fn, self.bus.env
        hit: asyncio.Future[float] = self.loop.create_future()

        def on_sample(name: str, value: float, t: float) -> None:
            if not hit.done() and fn(env) is True:
                hit.set_result(t)

        if fn(env) is True:
            return self._now()
        sub = self.bus.subscribe(cond.signals, on_sample)
        try:
            async with asyncio.timeout(within):
                return await hit
        finally:
            sub.cancel()

    async def _wait_until(self, step: PlanStep) -> str:
        cond = step.cond
        assert cond is not None
        try:
            t = await self._wait_for(cond, step.timeout)
        except TimeoutError:
            values = self._values(cond.signals)
            shown = self._shown(values)
            msg = f"timed out after {format_duration(step.timeout)} waiting for {step.cond_text} ({shown})"
            self._event(EventKind.WAIT_TIMEOUT, step=step.name, values=values)
            if step.on_timeout == "continue":
                return msg
            raise StepFailed(Outcome.FAIL, msg) from None
        rel = self._rel(t)
        if step.mark:
            self.bus.marks[step.mark] = rel
        values = self._values(cond.signals)
        self._event(EventKind.CONDITION_MET, step=step.name, mark=step.mark, sample_t=_round(rel), values=values)
        shown = self._shown(values)
        return f"true at {format_value(rel, 's')}" + (f" (@{step.mark})" if step.mark else "") + f": {shown}"

    async def _ramp(self, step: PlanStep) -> str:
        r = step.ramp
        assert r is not None
        start = r.start if r.start is not None else self.bus.values.get(r.signals[0])
        if start is None:
            raise StepFailed(Outcome.ERROR, f"{r.signals[0]} has no value yet to ramp from")
        span = abs(r.end - start)
        direction = 1.0 if r.end >= start else -1.0
        duration = span / r.rate

        async def ramp() -> None:
            t0 = self._now()
            while True:
                done = min(span, r.rate * (self._now() - t0))
                value = start + direction * done
                await self._apply([SetValue(sig, value, format_value(value, r.unit)) for sig in r.signals])
                if done >= span:
                    return
                await asyncio.sleep(r.interval)

        task = self.loop.create_task(ramp(), name=f"ramp {step.name}")
        last = f"{', '.join(r.signals)} = {format_value(r.end, r.unit)}"
        if step.cond is None:
            await task
            return f"reached {last}"
        # The condition is watched on its samples while the ramp runs; the end of the ramp plus
        # one interval bounds the wait so that a reply in flight still counts.
        waiter = self.loop.create_task(self._wait_for(step.cond, duration + r.interval), name=f"until {step.name}")
        try:
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if task.done() and not task.cancelled() and (failed := task.exception()) is not None:
                raise failed  # a setpoint that could not be applied ends the step now, not at the timeout
            t = await waiter
        except TimeoutError:
            values = self._values(step.cond.signals)
            msg = f"ramp ended at {last} without {step.cond_text} ({self._shown(values)})"
            self._event(EventKind.WAIT_TIMEOUT, step=step.name, values=values)
            if step.on_timeout == "continue":
                return msg
            raise StepFailed(Outcome.FAIL, msg) from None
        finally:
            for pending in (task, waiter):
                pending.cancel()
                # Already raised above if it mattered; a late failure after the condition held does not.
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pending
        rel = self._rel(t)
        if step.mark:
            self.bus.marks[step.mark] = rel
        values = self._values(step.cond.signals)
        self._event(EventKind.CONDITION_MET, step=step.name, mark=step.mark, sample_t=_round(rel), values=values)
        shown = self._shown(values)
        return f"true at {format_value(rel, 's')}" + (f" (@{step.mark})" if step.mark else "") + f": {shown}"

    async def _prompt(self, step: PlanStep) -> str:
        p = step.prompt
        assert p is not None
        if p.gate is not None:
            try:
                await self._wait_for(p.gate, p.timeout)
            except TimeoutError:
                shown = self._shown(self._values(p.gate.signals))
                raise StepFailed(
                    Outcome.FAIL,
                    f"'{p.gate_text}' did not hold within {format_duration(p.timeout)}; not asked ({shown})",
                ) from None
        answers = self.opt.answers or Answers()
        try:
            async with asyncio.timeout(p.timeout):
                answer, source = await answers.ask(step.name, p.text)
        except TimeoutError:
            raise StepFailed(Outcome.FAIL, f"no answer within {format_duration(p.timeout)}") from None
        except BenchError as exc:
            raise StepFailed(Outcome.ERROR, str(exc)) from None
        self._event(EventKind.PROMPT_ANSWERED, step=step.name, prompt=p.text, answer=answer, source=source)
        if not p.value:
            if answer.lower() in YES:
                return f"confirmed ({source})"
            if answer.lower() in NO:
                raise StepFailed(Outcome.FAIL, f"operator did not confirm: '{p.text}' ({source})")
            raise StepFailed(Outcome.ERROR, f"answer '{answer}' is neither yes nor no ({source})")
        try:
            q = parse_quantity(answer)
        except ExpressionError as exc:
            raise StepFailed(Outcome.ERROR, f"answer '{answer}': {exc} ({source})") from None
        if q.dim != p.unit.dim and q.dim == DIMENSIONLESS and q.unit.text == "":
            q = Quantity(p.unit.to_base(q.base), p.unit.dim, p.unit)  # a bare number is in the prompt's unit
        if q.dim != p.unit.dim:
            raise StepFailed(Outcome.ERROR, f"answer '{answer}' is not in {p.unit.text or 'plain numbers'} ({source})")
        m = MeasurePlan(
            step.name,
            None,
            None,
            f"answer of the operator ({source})",
            "value",
            None,
            None,
            p.low,
            p.high,
            p.unit,
            p.unit.factor,
        )
        return self._record_measurement(step, m, p.unit.from_base(q.base), f"entered by the operator ({source})")

    async def _measure(self, step: PlanStep, m: MeasurePlan) -> str:
        value: float | None
        if m.expr is not None:
            self.bus.env.why_unknown = None
            base = m.expr.fn(self.bus.env)
            if base is None:
                missing = [f"@{k}" for k in m.expr.marks if k not in self.bus.marks]
                missing += [k for k in m.expr.signals if k not in self.bus.values]
                why = f"no value for {', '.join(missing)}" if missing else self.bus.env.why_unknown or "no value"
                raise StepFailed(Outcome.ERROR, f"cannot evaluate {m.expr_text}: {why}")
            value = m.unit.from_base(base)
            how = m.expr_text
        else:
            assert m.signal is not None
            info = self.plan.catalog[m.signal]
            if m.window is not None:
                timed: list[tuple[float, float]] = []
                sub = self.bus.subscribe([m.signal], lambda n, v, t: timed.append((t, v)))
                try:
                    await asyncio.sleep(m.window)
                finally:
                    sub.cancel()
                how = f"{m.stat} of {m.signal} over {format_duration(m.window)}"
            elif m.since is not None:
                since = (
                    self.bus.marks.get(m.since[1:])
                    if m.since.startswith("@")
                    else self._rel(self._step_starts.get(m.since, self.state.t0))
                )
                if since is None:
                    raise StepFailed(Outcome.ERROR, f"instant {m.since} was never recorded")
                timed = self.bus.history(m.signal, self.state.t0 + since)
                how = f"{m.stat} of {m.signal} since {m.since}"
            else:
                current = self.bus.values.get(m.signal)
                timed = [] if current is None else [(self._now(), current)]
                how = f"value of {m.signal}"
            if not timed:
                raise StepFailed(Outcome.ERROR, f"no sample of {m.signal} to measure")
            samples = [v for _, v in timed]
            if m.stat == "max_moving_mean":
                assert m.over is not None
                raw = max_moving_mean(timed, m.over)
                how = how.replace(m.stat, f"highest {format_duration(m.over)} moving mean", 1)
            else:
                stats = {"value": samples[-1], "min": min(samples), "max": max(samples)}
                raw = stats[m.stat] if m.stat in stats else statistics.fmean(samples)
            value = m.unit.from_base(info.unit.to_base(raw))
        return self._record_measurement(step, m, value, how)

    def _record_measurement(self, step: PlanStep, m: MeasurePlan, value: float, how: str) -> str:
        spec = getattr(self.plan.sequence.steps[step.index], "measure", None) if step.phase == "steps" else None
        stated = None if spec is None or spec.uncertainty is None else str(spec.uncertainty)
        expanded, budget = runtime.measurement_uncertainty(self.plan, step, m, value, stated)
        ok, decision = runtime.judge(value, m.low, m.high, expanded, runtime.decision_rule(self.plan), m.unit.text)
        outcome = Outcome.PASS if ok else Outcome.FAIL
        meas = Measurement(
            name=m.name,
            step=step.name,
            value=_round(value),
            unit=m.unit.text,
            low=m.low,
            high=m.high,
            outcome=outcome,
            t=_round(self._rel(self._now())),
            how=how,
            uncertainty=expanded,
            uncertainty_budget=budget,
            decision=decision,
        )
        self._measurements.append(meas)
        self._event(EventKind.MEASUREMENT, **meas.model_dump(exclude={"t"}))
        shown_u = "" if expanded is None else f" ± {format_value(expanded, m.unit.text)}"
        text = f"{m.name} = {format_value(value, m.unit.text)}{shown_u} ({_limits(m)})"
        if outcome == Outcome.FAIL:
            inside = (m.low is None or value >= m.low) and (m.high is None or value <= m.high)
            raise StepFailed(Outcome.FAIL, f"{text}: {'not accepted: ' + decision if inside else 'outside the limit'}")
        return text

    # -- the end ----------------------------------------------------------------------------
    async def _cleanup(self) -> None:
        steps = [s for s in self.plan.cleanup if all(sv.signal.split(".")[0] in self._connected for sv in s.sets)]

        async def cleanup_steps() -> None:
            for step in steps:
                # Each cleanup step is tried, whatever happened to the one before.
                with contextlib.suppress(Exception):
                    await self._run_step(step, "cleanup")

        # The safe state depends on nothing before it succeeding (a record that cannot be
        # written, a cleanup step that raises): it is commanded and read back in any case.
        try:
            self._event(EventKind.CLEANUP_STARTED, reason=self._stop[1] if self._stop else "steps completed")
            if self._estop_task is None:
                self._cleanup_task = self.loop.create_task(cleanup_steps(), name="cleanup")
                await asyncio.wait([self._cleanup_task])
        finally:
            try:
                if self._estop_task is not None:
                    # An emergency stop replaced the cleanup steps with the safe state of every device.
                    await asyncio.wait([self._estop_task])
                else:
                    await self._safe_state()
            finally:
                for name in reversed(self._connected):
                    with contextlib.suppress(Exception):
                        await self.plan.drivers[name].close()
                for plant in reversed(self._plants):
                    with contextlib.suppress(Exception):
                        await plant.stop()

    async def _safe_state(self, tasks: list[asyncio.Task[None]] | None = None) -> None:
        await asyncio.gather(*(self._safe_state_tasks() if tasks is None else tasks))

    def _safe_state_tasks(self) -> list[asyncio.Task[None]]:
        devices = [d for d in self._connected if d in self.plan.safe_states]
        return [self.loop.create_task(self._safe_one(d), name=f"safe-state-{d}") for d in devices]

    async def _safe_one(self, dev: str) -> None:
        plan = self.plan.safe_states[dev]
        t = self._now()
        try:
            await self._apply(plan.sets)
            await self._wait_for(plan.verify, plan.within)
            safe, detail = True, f"{plan.verify_text}: read back true"
        except TimeoutError:
            safe, detail = False, f"{plan.verify_text}: still false after {format_duration(plan.within)}"
        except (BenchError, OSError) as exc:
            safe, detail = False, f"could not command the safe state: {exc}"
        values = self._values(plan.verify.signals)
        detail += " (" + self._shown(values) + ")"
        rb = SafeStateReadback(device=dev, safe=safe, detail=detail, t=_round(self._rel(self._now())))
        self._safe.append(rb)
        self._event(
            EventKind.SAFE_STATE, device=dev, safe=safe, detail=detail, commanded_t=_round(self._rel(t)), values=values
        )

    def _skipped(self) -> list[str]:
        """Steps of the method that were not performed (the run ended before them)."""
        done = {s.name for s in self._step_results if s.phase == "steps"}
        missing = [s.name for s in self.plan.steps if s.name not in done]
        return [f"steps not performed (run ended early): {', '.join(missing)}"] if missing else []

    async def _finish(self) -> RunResult:
        assert self.rec is not None
        plan = self.plan
        verdict, reason = Verdict.PASS, "all steps passed and every measurement is within its limits"
        if self._stop is not None:
            verdict, reason = self._stop
        elif self._first_fail is not None:
            verdict, reason = Verdict.FAIL, self._first_fail
        failed_cleanup = [s for s in self._step_results if s.phase == "cleanup" and s.outcome != Outcome.PASS]
        if verdict == Verdict.PASS and failed_cleanup:
            verdict, reason = Verdict.ERROR, f"cleanup step '{failed_cleanup[0].name}': {failed_cleanup[0].message}"
        unsafe = [s.device for s in self._safe if not s.safe]
        if unsafe:
            # The rig may still be energised: that outranks whatever the test itself concluded.
            if verdict == Verdict.PASS:
                verdict = Verdict.ERROR
            reason += f"; UNSAFE END: safe state not confirmed for {', '.join(unsafe)}"
        end = self._now()
        self.rec.close_traffic()
        verdict, reason = self._with_record_failure(verdict, reason)
        wall = self.opt.wall_clock() if self.opt.wall_clock else 0.0
        seq = plan.sequence
        result = RunResult(
            run_id=self.opt.run_id,
            verdict=verdict,
            reason=reason,
            sequence={
                "id": seq.id,
                "title": seq.title,
                "version": seq.version,
                "basis": seq.basis.model_dump(),
                "path": str(plan.sequence_source.path),
                "sha256": plan.sequence_sha256,
            },
            station={
                "id": plan.station.model.id,
                "title": plan.station.model.title,
                "path": str(plan.station.path),
                "sha256": plan.station.source.sha256,
                "simulated": plan.station.model.simulated,
                "virtual_time": self.opt.virtual_time,
            },
            parameters=[
                Parameter(name=p.name, value=str(p.value), default=str(p.default), overridden=p.overridden, doc=p.doc)
                for p in plan.params.values()
            ],
            faults=list(plan.faults),
            seed=self.opt.seed,
            started_utc=self.opt.started_utc,
            ended_utc=_utc(self.opt.start_epoch + (end - self.state.t0)),
            sim_duration_s=_round(end - self.state.t0),
            wall_duration_s=round(wall, 3),
            steps=self._step_results,
            measurements=self._measurements,
            marks=dict(self.bus.marks),
            devices=self._identities,
            safe_state=self._safe,
            unsafe_end=bool(unsafe),
            record_error=self.rec.write_error,
            code_version=__version__,
            decision_rule=runtime.decision_rule(plan),
            deviations=self._deviations + self._skipped(),
            environment=runtime.environment(plan, self.bus),
            equipment=runtime.equipment_record(plan, _date(self.opt.start_epoch)),
        )
        self.state.verdict, self.state.reason = verdict, reason
        rec = self.rec
        hashes: dict[str, str] = {}
        try:
            # A record that already failed gets no 17025 rendering: it would only fail again.
            hashes = rec.write_outputs(result, full=self.opt.full_report and rec.write_error is None)
        except OSError as exc:
            rec.note_write_failure("result.json / junit.xml", exc)
        self._mark_record_failure(result)
        problems: dict[str, Any] = {}
        if rec.render_error:
            problems.update(render_error=rec.render_error, report_degraded=True)
        if rec.write_error:
            problems.update(record_error=rec.write_error, events_lost=rec.events_lost, frames_lost=rec.frames_lost)
        self._event(
            EventKind.RUN_ENDED,
            verdict=result.verdict.value,
            reason=result.reason,
            frames=rec.frames,
            outputs=hashes,
            **problems,
        )
        self.state.phase = "done"
        info: dict[str, Any] = {
            "run_id": self.opt.run_id,
            "sequence": {"id": seq.id, "version": seq.version, "sha256": plan.sequence_sha256},
            "station": {"id": plan.station.model.id, "sha256": plan.station.source.sha256},
            "dbc": {p.name: file_sha256(p) for p in plan.files()},
            "code_version": __version__,
            "verdict": result.verdict.value,
        }
        if rec.write_error:
            # Sealed for what it holds, and saying plainly that it does not hold everything.
            info["record_error"] = rec.write_error
        if rec.render_error:
            info["report_degraded"] = rec.render_error
        try:
            rec.seal(info)
        except OSError as exc:
            rec.note_write_failure("manifest.json", exc)
        self._mark_record_failure(result)
        return result

    def _with_record_failure(self, verdict: Verdict, reason: str) -> tuple[Verdict, str]:
        """The verdict once the record could not be written: ERROR, naming the failed write."""
        error = self.rec.write_error if self.rec is not None else None
        if error is None or reason.startswith("record could not be written"):
            return verdict, reason
        text = f"record could not be written: {error}"
        return Verdict.ERROR, text if verdict == Verdict.PASS else f"{text}; the run: {verdict.value}: {reason}"

    def _mark_record_failure(self, result: RunResult) -> None:
        """Carry a write failure found while writing the outputs into the result (in memory)."""
        if self.rec is None or self.rec.write_error is None:
            return
        result.verdict, result.reason = self._with_record_failure(result.verdict, result.reason)
        result.record_error = result.record_error or self.rec.write_error
        self.state.verdict, self.state.reason = result.verdict, result.reason


def _date(epoch: float) -> Any:
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch, dt.UTC).date()


def _round(v: float) -> float:
    if v is None or isinstance(v, bool) or math.isnan(v) or math.isinf(v):
        return v
    return float(f"{v:.9g}")


def _limits(m: MeasurePlan) -> str:
    lo = format_value(m.low, m.unit.text) if m.low is not None else None
    hi = format_value(m.high, m.unit.text) if m.high is not None else None
    if lo and hi:
        return f"limits {lo} .. {hi}"
    if hi:
        return f"limit <= {hi}"
    if lo:
        return f"limit >= {lo}"
    return "no limits"


def _fmt_value(run: Run, name: str, v: Any) -> str:
    if v is None:
        return "no sample"
    if isinstance(v, str):
        return v
    info = run.plan.catalog.get(name)
    if info and info.choices:
        return info.state_name(v) or format_value(v)
    return format_value(v, info.unit.text if info else "")


def _utc(epoch: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
