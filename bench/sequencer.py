"""Run steps one after another, record each one, and decide whether the sequence goes on.

The step itself is done by its kind's executor (bench/stepkinds/). Here: ``step_started`` and
``step_ended``, the step's result, the first failure (the verdict's reason), and the rules:
a failed step of a kind that says so (``measure``) lets the steps go on (so that every
measurement is taken), any other failure or error ends them; a terminate ends them before the
next step.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench import stepkinds
from bench.errors import BenchError
from bench.events import EventKind
from bench.result import Outcome, StepResult, Verdict
from bench.runcontext import RunContext, rounded
from bench.stepkinds.base import PlanStep, StepFailed
from bench.stopping import StopLevels


class Sequencer:
    def __init__(self, ctx: RunContext, stops: StopLevels) -> None:
        self.ctx = ctx
        self.stops = stops

    async def run_steps(self, steps: list[PlanStep[Any]], phase: str) -> None:
        for step in steps:
            terminate = self.stops.terminate_reason
            if terminate is not None and phase == "steps":
                self.ctx.event(EventKind.TERMINATED, before_step=step.name, reason=terminate)
                return
            ok = await self.run_step(step, phase)
            if not ok and phase == "steps":
                return

    async def run_step(self, step: PlanStep[Any], phase: str) -> bool:
        """Run one step and record it; False when the sequence must not go on."""
        ctx = self.ctx
        ctx.state.step = step
        start = ctx.now()
        ctx.state.step_started = start
        ctx.step_starts[step.name] = start
        ctx.event(
            EventKind.STEP_STARTED, step=step.name, step_kind=step.kind, phase=phase, line=step.line, text=step.text
        )
        kind = stepkinds.get(step.kind)
        outcome, message, go_on = Outcome.PASS, "", True
        try:
            message = await kind.execute(ctx, step) or ""
        except StepFailed as exc:
            outcome, message = exc.outcome, str(exc)
            go_on = exc.outcome == Outcome.FAIL and kind.goes_on_after_fail
        except asyncio.CancelledError:
            # A `then: fail` monitor ends the run with FAIL: the step it stopped failed, it was not aborted.
            outcome = Outcome.FAIL if ctx.stop and ctx.stop[0] == Verdict.FAIL else Outcome.ABORTED
            message = ctx.stop[1] if ctx.stop else "cancelled"
            self._record(step, phase, start, outcome, message)
            raise
        except (BenchError, OSError) as exc:
            outcome, message, go_on = Outcome.ERROR, str(exc), False
        except Exception as exc:  # a driver bug must still end in a recorded step and a cleanup
            outcome, message, go_on = Outcome.ERROR, f"unexpected error: {type(exc).__name__}: {exc}", False
        self._record(step, phase, start, outcome, message)
        if outcome == Outcome.FAIL and ctx.first_fail is None:
            ctx.first_fail = f"step '{step.name}': {message}"
        if outcome == Outcome.ERROR and phase == "steps":
            ctx.stop = ctx.stop or (Verdict.ERROR, f"step '{step.name}': {message}")
        return go_on

    def _record(self, step: PlanStep[Any], phase: str, start: float, outcome: Outcome, message: str) -> None:
        ctx = self.ctx
        end = ctx.now()
        ctx.step_results.append(
            StepResult(
                index=step.index,
                name=step.name,
                kind=step.kind,
                phase=phase,
                line=step.line,
                outcome=outcome,
                started=rounded(ctx.rel(start)),
                ended=rounded(ctx.rel(end)),
                message=message,
            )
        )
        ctx.event(EventKind.STEP_ENDED, step=step.name, outcome=outcome.value, message=message)
