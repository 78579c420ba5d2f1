"""What watches a run besides its steps: the station's hard limits and e-stop input, and the
sequence's monitors.

* The station limits and the e-stop input hold for the whole run, from before the devices
  connect to the end of cleanup, independently of the sequence. Each is evaluated on the very
  sample that violates it; a limit that trips is an emergency stop and latches the station's
  interlock (docs/safety.md).
* The sequence's monitors hold while the steps run; the first one that is true stops them,
  with ``then: abort`` (ABORTED) or ``then: fail`` (FAIL).

Both subscribe to the signal bus: nothing polls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bench.events import EventKind
from bench.plan import PlanMonitor
from bench.result import Verdict, rounded
from bench.stopping import StopLevels

if TYPE_CHECKING:
    from bench.runcontext import RunContext

SampleCallback = Callable[[str, float, float], None]


class Supervision:
    def __init__(self, ctx: RunContext, stops: StopLevels) -> None:
        self.ctx = ctx
        self.stops = stops
        # The reason of a supervisor trip, with whether the interlock latched; shown by the console.
        self.tripped: str | None = None

    # -- the station: hard limits and the e-stop input --------------------------------------
    def start_station(self) -> list[Any]:
        """Station hard limits and the e-stop input, independent of the sequence, for the whole run."""
        ctx = self.ctx
        subs = []
        for lim in ctx.plan.limits:
            subs.append(ctx.bus.subscribe(lim.cond.signals, self._limit_callback(lim)))
        estop = ctx.plan.estop
        if estop is not None:
            fn, env = estop.fn, ctx.bus.env

            def on_estop(name: str, value: float, t: float) -> None:
                if self.stops.estop_task is None and fn(env) is True:
                    shown = ctx.shown(ctx.values(estop.signals))
                    self.stops.emergency_stop(f"emergency-stop input: {ctx.plan.estop_text} ({shown})")

            subs.append(ctx.bus.subscribe(estop.signals, on_estop))
        return subs

    def _limit_callback(self, lim: PlanMonitor) -> SampleCallback:
        ctx = self.ctx
        fn, env = lim.cond.fn, ctx.bus.env

        def on_sample(name: str, value: float, t: float) -> None:
            # React to the very sample that violates the limit, before anything else runs.
            if self.stops.estop_task is None and fn(env) is True:
                values = ctx.values(lim.cond.signals)
                # Whether the interlock latched is said once it did (or could not): see _latch.
                reason = f"supervisor limit '{lim.name}' tripped: {lim.text} ({ctx.shown(values)})"
                ctx.event(
                    EventKind.SUPERVISOR_TRIPPED,
                    limit=lim.name,
                    condition=lim.text,
                    values=values,
                    sample_t=rounded(ctx.rel(t)),
                )
                self.tripped = reason
                self.stops.emergency_stop(reason)
                if ctx.opt.interlock is not None:
                    # Latched right after the safe-state commands went out, not before them: the
                    # latch is file writes and an fsync (about 1 ms, several on a busy disk), and
                    # a latch that cannot be written must not hold back the emergency stop.
                    ctx.loop.call_soon(self._latch, reason)

        return on_sample

    def _latch(self, reason: str) -> None:
        ctx = self.ctx
        assert ctx.opt.interlock is not None
        try:
            ctx.opt.interlock.trip(reason, ctx.opt.run_id)
            outcome, verdict = "interlock latched", None
        except OSError as exc:
            # Fail closed: the next run finds the state folder unwritable and is refused (bench/runner.py).
            ctx.event(EventKind.INTERLOCK_NOT_LATCHED, reason=f"{type(exc).__name__}: {exc}")
            outcome = f"the interlock could NOT be latched ({exc.strerror or exc}); runs are refused until it can be"
            verdict = Verdict.ERROR
        self.tripped = f"{reason}; {outcome}"
        if ctx.stop is None:
            return
        stop_verdict, stop_reason = ctx.stop
        if stop_reason == reason:
            stop_reason = self.tripped
        elif verdict is not None:  # an earlier stop gave the reason: a failed latch is never left out
            stop_reason = f"{stop_reason}; {outcome}"
        ctx.stop = (verdict or stop_verdict, stop_reason)

    # -- the sequence: monitors -------------------------------------------------------------
    def start_monitors(self) -> list[Any]:
        """Arm the monitors; one already true trips now, before the first step."""
        ctx = self.ctx
        subs = []
        for mon in ctx.plan.monitors:
            subs.append(ctx.bus.subscribe(mon.cond.signals, self._monitor_callback(mon)))
            if mon.cond.fn(ctx.bus.env) is True:
                self._monitor_tripped(mon)
        return subs

    def _monitor_callback(self, mon: PlanMonitor) -> SampleCallback:
        fn, env = mon.cond.fn, self.ctx.bus.env

        def on_sample(name: str, value: float, t: float) -> None:
            if self.ctx.stop is None and fn(env) is True:
                self._monitor_tripped(mon, t)

        return on_sample

    def _monitor_tripped(self, mon: PlanMonitor, t: float | None = None) -> None:
        ctx = self.ctx
        verdict = Verdict.ABORTED if mon.then == "abort" else Verdict.FAIL
        values = ctx.values(mon.cond.signals)
        shown = ctx.shown(values)
        reason = f"monitor '{mon.name}' tripped: {mon.text} ({shown})"
        if mon.message:
            reason += f": {mon.message}"
        ctx.event(
            EventKind.MONITOR_TRIPPED,
            monitor=mon.name,
            condition=mon.text,
            values=values,
            sample_t=None if t is None else rounded(ctx.rel(t)),
            action=mon.then,
        )
        self.stops.request_stop(verdict, reason)
