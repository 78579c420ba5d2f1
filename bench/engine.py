"""Execute a plan: connect, identify, run steps under monitors, always clean up, record.

The life of a run is documented in docs/lifecycle.md. In short:

1. start the station's simulated plants (if any) and connect every device;
2. read identities (and the DUTs' DTCs, bench/dtcs.py);
3. run the steps in one task while monitors watch every relevant sample;
4. whatever ended the steps (PASS, FAIL, error, monitor, Ctrl-C), run ``cleanup``;
5. bring every device to its safe state and read that state back (and the DTCs again);
6. close devices, write result.json, junit.xml, report.html and seal the record.

``Run`` holds that order. The parts it orders have a module each: the shared state and
primitives (bench/runcontext.py), the step kinds (bench/stepkinds/) and their sequencer
(bench/sequencer.py), the stop levels (bench/stopping.py), the station's supervision and the
monitors (bench/supervision.py), the safe state (bench/safestate.py) and the end of the record
(bench/finish.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from bench import __version__
from bench.device import DeviceContext, load_plant_builder, plant_faults
from bench.dtcs import record_dtcs
from bench.errors import BenchError, DeviceError, LoadError
from bench.events import EventKind
from bench.finish import finish_record, typeset_pdf
from bench.plan import Plan
from bench.report import runtime
from bench.result import DeviceIdentity, RunResult, Verdict
from bench.runcontext import RunContext, RunOptions, RunState, format_signal
from bench.runrecord import RunRecorder
from bench.safestate import SafeState
from bench.sequencer import Sequencer
from bench.stopping import RecordStageInterrupted, StopLevels
from bench.supervision import Supervision

__all__ = ["RecordStageInterrupted", "Run", "RunOptions", "RunState", "format_signal"]


class Run(RunContext):
    """One run of a plan: its context (bench/runcontext.py) and the order of its stages."""

    def __init__(self, plan: Plan, options: RunOptions) -> None:
        super().__init__(plan, options)
        self.safe_state = SafeState(self)
        self.stops = StopLevels(self, self.safe_state)
        self.supervision = Supervision(self, self.stops)
        self.sequencer = Sequencer(self, self.stops)
        self._plants: list[Any] = []
        self._inproc: dict[str, Any] = {}

    # -- the stop levels, as the console, the signal handlers and the lab call them ---------
    def request_stop(self, verdict: Verdict, reason: str) -> None:
        """Abort: stop the steps now. Cleanup still runs."""
        self.stops.request_stop(verdict, reason)

    def terminate(self, reason: str) -> None:
        """Finish the current step, then clean up and report."""
        self.stops.terminate(reason)

    def emergency_stop(self, reason: str, verdict: Verdict = Verdict.ABORTED) -> None:
        """Every device's safe state at once, concurrently, and nothing else (no cleanup steps)."""
        self.stops.emergency_stop(reason, verdict)

    def on_signal(self, name: str) -> None:
        """A first SIGINT or SIGTERM aborts, a second one is an emergency stop."""
        self.stops.on_signal(name)

    @property
    def tripped(self) -> str | None:
        """The reason of a supervisor trip and whether the interlock latched; None while none tripped."""
        return self.supervision.tripped

    def _spawn(self, device: str, coro: Any, name: str) -> asyncio.Task[None]:
        """A driver's background task: one that dies is a fault of its device, never a silent hang."""
        task: asyncio.Task[None] = self.loop.create_task(coro, name=name)

        def done(t: asyncio.Task[None]) -> None:
            if not t.cancelled() and t.exception() is not None:
                self.stops.device_fault(device, f"task {name} died: {t.exception()!r}")

        task.add_done_callback(done)
        return task

    # -- the run ----------------------------------------------------------------------------
    async def execute(self) -> RunResult:
        loop = self.loop
        t0 = loop.time()
        self.state.t0 = t0
        self.state.now = loop.time
        self._begin_record()
        supervision = self.supervision.start_station()
        try:
            await self._start_plants()
            await self._connect_all()
            await record_dtcs(self, "start")
            if self.stop is None:
                await self._steps()
        except BenchError as exc:
            self.stop = self.stop or (Verdict.ERROR, str(exc))
        finally:
            self.state.phase = "cleanup"
            try:
                await self._cleanup()
            finally:
                for sub in supervision:
                    sub.cancel()
        self.state.phase = "record"
        with self.stops.signals_while_recording():
            result = await finish_record(self)
        # After the seal and out of the record stage: the verdict and record are final (finish.py).
        typeset_pdf(self)
        return result

    def _begin_record(self) -> None:
        """Create the run folder, copy the inputs in and write ``run_started``; or refuse the run."""
        plan = self.plan
        run_dir = self.opt.reports_dir / self.opt.run_id
        try:
            self.rec = RunRecorder(run_dir, self.state.t0, self.opt.start_epoch, plan.sequence)
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
        self.rec.on_write_failure = self.stops.record_failed
        seq = plan.sequence
        self.event(
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
            deviations=self.deviations,
        )

    async def _steps(self) -> None:
        """The steps, in one task, under the monitors; what ended them is left in ``self.stop``."""
        self.state.phase = "steps"
        monitors = self.supervision.start_monitors()
        snapshots = asyncio.create_task(self._snapshots())
        # A monitor already true at arming stops the steps before their first command.
        first = self.plan.steps if self.stop is None else []
        steps_task = self.stops.steps_task = asyncio.create_task(self.sequencer.run_steps(first, "steps"))
        try:
            await asyncio.wait([steps_task])
            if self.stops.terminate_reason and self.stop is None:
                self.stop = (Verdict.ABORTED, f"terminated: {self.stops.terminate_reason}")
        finally:
            for sub in monitors:
                sub.cancel()
            snapshots.cancel()
        if steps_task.cancelled() and self.stop is None:
            self.stop = (Verdict.ABORTED, "steps were cancelled")
        elif not steps_task.cancelled() and steps_task.exception() is not None:
            exc = steps_task.exception()
            self.stop = (Verdict.ERROR, f"internal error in steps: {exc!r}")

    async def _start_plants(self) -> None:
        for i, sim in self.plan.simulators_started():
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
            self.event(EventKind.SIMULATOR_STARTED, simulator=sim.kind, faults=faults)

    async def _connect_all(self) -> None:
        ctx = DeviceContext(
            self.loop,
            self.bus.publish,
            self.rec.frame if self.rec else (lambda m, tx: None),
            self.stops.device_fault,
            self._inproc,
            spawn=self._spawn,
            wanted=self.plan.wanted,
            record_frames=self.rec.frames_received if self.rec else None,
        )
        for name, driver in self.plan.drivers.items():
            if self.stops.estop_task is not None:
                break  # an emergency stop: connect no more; those connected get their safe state
            try:
                async with asyncio.timeout(driver.connect_timeout):  # the driver's own waits fit inside
                    await driver.connect(ctx)
                self.connected.append(name)
                async with asyncio.timeout(driver.connect_timeout):
                    identity = await driver.identify()
            # A device that fails does not stop the others from connecting: every device that can be
            # reached is then brought to its safe state (a supply left on by an earlier crash too).
            # The first failure is the run's reason; the steps do not start.
            except TimeoutError:
                reason = f"device {name}: no answer within {driver.connect_timeout:g} s while connecting"
                self.stop = self.stop or (Verdict.ERROR, reason)
                self.event(EventKind.DEVICE_FAULT, device=name, reason=reason)
                continue
            except (BenchError, OSError) as exc:
                reason = str(exc) if isinstance(exc, DeviceError) else f"device {name}: {exc}"
                self.stop = self.stop or (Verdict.ERROR, reason)
                self.event(EventKind.DEVICE_FAULT, device=name, reason=reason)
                continue
            entry = self.plan.station.model.devices[name]
            self.identities.append(DeviceIdentity(name=name, driver=entry.driver, identity=identity))
            self.event(EventKind.DEVICE_CONNECTED, device=name, driver=entry.driver, identity=identity)
            mismatch = runtime.identity_problem(self.plan, name, identity)
            if mismatch is not None:
                if self.opt.allow_identity_mismatch is None:
                    self.stop = (
                        Verdict.ERROR,
                        f"{mismatch} (run refused; --allow-identity-mismatch REASON overrides)",
                    )
                    self.event(EventKind.IDENTITY_MISMATCH, device=name, reason=mismatch, refused=True)
                    return
                text = f"{mismatch}; accepted by the operator: {self.opt.allow_identity_mismatch}"
                self.deviations.append(text)
                self.event(EventKind.IDENTITY_MISMATCH, device=name, reason=mismatch, refused=False, deviation=text)

    async def _snapshots(self) -> None:
        names = self.plan.display
        if not names:
            return
        while True:
            await asyncio.sleep(self.plan.record_interval)
            self.event(EventKind.SNAPSHOT, values=self.values(names))

    async def _cleanup(self) -> None:
        steps = [s for s in self.plan.cleanup if s.plan.cleanup_needs() <= set(self.connected)]

        async def cleanup_steps() -> None:
            for step in steps:
                # Each cleanup step is tried, whatever happened to the one before.
                with contextlib.suppress(Exception):
                    await self.sequencer.run_step(step, "cleanup")

        # The safe state depends on nothing before it succeeding (a record that cannot be
        # written, a cleanup step that raises): it is commanded and read back in any case.
        try:
            self.event(EventKind.CLEANUP_STARTED, reason=self.stop[1] if self.stop else "steps completed")
            if self.stops.estop_task is None:
                self.stops.cleanup_task = self.loop.create_task(cleanup_steps(), name="cleanup")
                await asyncio.wait([self.stops.cleanup_task])
        finally:
            try:
                if self.stops.estop_task is not None:
                    # An emergency stop replaced the cleanup steps with the safe state of every device.
                    await asyncio.wait([self.stops.estop_task])
                else:
                    await self.safe_state.command()
            finally:
                try:
                    await record_dtcs(self, "end")  # what the DUT stored, once it is safe
                finally:
                    for name in reversed(self.connected):
                        with contextlib.suppress(Exception):
                            await self.plan.drivers[name].close()
                for plant in reversed(self._plants):
                    with contextlib.suppress(Exception):
                        await plant.stop()
