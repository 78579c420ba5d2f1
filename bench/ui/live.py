"""Live updates to every browser: one hub, numbered messages, server-sent events.

The server's loop owns the hub. Whatever changes (the run's state, a step, a prompt, the signal
values read by the sampler) is published once as a numbered message; each browser's
EventSource stream gets every message in order, so two browsers show the same update under
the same sequence number. A browser that connects (or reconnects) first gets a snapshot of the
whole state, then the messages after it. A browser too slow to take its messages is dropped
(its queue is bounded); its EventSource reconnects and starts again from a snapshot.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from bench.runcontext import format_signal

if TYPE_CHECKING:
    from bench.engine import Run

SAMPLE_S = 0.05  # the sampler's period (wall clock): well inside the 200 ms the operator notices
CLOCK_S = 0.5  # elapsed and remaining time are sent at least this often while a run goes on
KEEPALIVE_S = 15.0  # a comment line on a quiet stream, so that proxies and browsers keep it open
QUEUE = 1000  # messages a browser may lag behind before it is dropped (and reconnects)


class Hub:
    """Numbered messages, fanned out to every subscribed stream."""

    def __init__(self) -> None:
        self.seq = 0
        self._queues: set[asyncio.Queue[tuple[int, str, dict[str, Any]] | None]] = set()
        self.closed = False

    @property
    def watchers(self) -> int:
        return len(self._queues)

    def publish(self, kind: str, data: dict[str, Any]) -> int:
        """Send ``data`` as a message of ``kind`` to every stream; its sequence number."""
        self.seq += 1
        message = (self.seq, kind, data)
        for q in list(self._queues):
            try:
                q.put_nowait(message)
            except asyncio.QueueFull:
                self._drop(q)
        return self.seq

    def _drop(self, q: asyncio.Queue[tuple[int, str, dict[str, Any]] | None]) -> None:
        self._queues.discard(q)
        while not q.empty():
            q.get_nowait()
        q.put_nowait(None)

    def close(self) -> None:
        """End every stream (the server is stopping)."""
        self.closed = True
        for q in list(self._queues):
            self._drop(q)

    async def stream(self, snapshot: Callable[[], dict[str, Any]]) -> AsyncIterator[str]:
        """One browser's event stream: a snapshot, then every message, as SSE text."""
        q: asyncio.Queue[tuple[int, str, dict[str, Any]] | None] = asyncio.Queue(QUEUE)
        if self.closed:
            return
        # The snapshot and the subscription happen in one step of the loop: no message between.
        self._queues.add(q)
        yield sse(self.seq, "snapshot", snapshot())
        try:
            while True:
                try:
                    item = await asyncio.wait_for(q.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if item is None:
                    return
                yield sse(*item)
        finally:
            self._queues.discard(q)


def sse(seq: int, kind: str, data: dict[str, Any]) -> str:
    body = json.dumps({"seq": seq, **data}, ensure_ascii=False, separators=(",", ":"))
    return f"id: {seq}\nevent: {kind}\ndata: {body}\n\n"


def read_values(run: Run) -> dict[str, dict[str, Any]]:
    """The display signals of ``run`` now, as shown and as numbers (for the plots).

    Called on the server's loop while the run goes on in its worker thread: reading the bus's
    dict of latest values is one lookup per name, which the engine's thread never leaves half done.
    """
    out: dict[str, dict[str, Any]] = {}
    values = run.bus.values
    for name in run.plan.display:
        v = values.get(name)
        out[name] = {"text": format_signal(run.plan, name, v), "v": v if isinstance(v, int | float) else None}
    return out


def run_clock(run: Run) -> dict[str, Any]:
    """Elapsed time of the run and of its step, and the step's remaining time when it has a limit."""
    st = run.state
    if st.phase == "load":
        return {"elapsed": 0.0, "step_elapsed": None, "step_limit": None}
    now = st.now()
    step = st.step
    limit = step.plan.time_limit() if step is not None else 0.0
    return {
        "elapsed": round(now - st.t0, 3),
        "step_elapsed": round(now - st.step_started, 3) if step is not None else None,
        "step_limit": limit or None,
        "step_kind": step.kind if step is not None else None,
    }


async def sample(hub: Hub, current: Callable[[], Run | None], period: float = SAMPLE_S) -> None:
    """Publish the display values whenever they changed (every ``period``), and the clock now and then."""
    last: dict[str, Any] | None = None
    last_run: Run | None = None
    last_clock = 0.0
    while True:
        await asyncio.sleep(period)
        run = current()
        if run is None or run.state.phase == "load":
            last, last_run = None, run
            continue
        if run is not last_run:
            last, last_run = None, run
        values = read_values(run)
        shown = {k: v["text"] for k, v in values.items()}
        wall = time.monotonic()
        if shown != last:
            last = shown
            last_clock = wall
            hub.publish("values", {"values": values, "clock": run_clock(run), "phase": run.state.phase})
        elif wall - last_clock >= CLOCK_S:
            last_clock = wall
            hub.publish("clock", {"clock": run_clock(run), "phase": run.state.phase})
