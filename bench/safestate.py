"""The verified safe state: every connected device's safe state commanded at once and read back.

It runs at the end of every run (after cleanup) and, at once, on an emergency stop
(bench/stopping.py). It depends on nothing before it succeeding: a device that cannot be
commanded is recorded as not safe, and the others are still commanded (docs/safety.md).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from bench.errors import BenchError
from bench.events import EventKind
from bench.result import SafeStateReadback, rounded
from bench.units import format_duration

if TYPE_CHECKING:
    from bench.runcontext import RunContext


class SafeState:
    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def start(self) -> list[asyncio.Task[None]]:
        """Queue the safe state of every connected device that has one, each in its own task."""
        ctx = self.ctx
        devices = [d for d in ctx.connected if d in ctx.plan.safe_states]
        return [ctx.loop.create_task(self._one(d), name=f"safe-state-{d}") for d in devices]

    async def command(self, tasks: list[asyncio.Task[None]] | None = None) -> None:
        """Wait for ``tasks`` (already queued by ``start``), or start and wait for all of them."""
        await asyncio.gather(*(self.start() if tasks is None else tasks))

    async def _one(self, dev: str) -> None:
        ctx = self.ctx
        plan = ctx.plan.safe_states[dev]
        t = ctx.now()
        try:
            await ctx.apply(plan.sets)
            await ctx.wait_for(plan.verify, plan.within)
            safe, detail = True, f"{plan.verify_text}: read back true"
        except TimeoutError:
            safe, detail = False, f"{plan.verify_text}: still false after {format_duration(plan.within)}"
        except (BenchError, OSError) as exc:
            safe, detail = False, f"could not command the safe state: {exc}"
        values = ctx.values(plan.verify.signals)
        detail += " (" + ctx.shown(values) + ")"
        rb = SafeStateReadback(device=dev, safe=safe, detail=detail, t=rounded(ctx.rel(ctx.now())))
        ctx.safe_readbacks.append(rb)
        ctx.event(
            EventKind.SAFE_STATE, device=dev, safe=safe, detail=detail, commanded_t=rounded(ctx.rel(t)), values=values
        )
