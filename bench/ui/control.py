"""The run controller of the browser station: one run at a time, through the one run path.

A run goes through ``bench.runner.run_plan`` in a worker thread, as a lab job does
(bench/lab/agent.py): the server's loop stays free for the browsers, and the run keeps its own
(virtual-time) loop. What crosses between the two threads:

* record events, from the run's thread to the server's loop (``call_soon_threadsafe``): the step
  list and the end of the run are built from them, never from a second source;
* stops, from the server's loop to the run's (``call_soon_threadsafe`` of the stop levels of
  bench/stopping.py: terminate, abort, emergency stop, as keys t, a and e at the terminal);
* prompts: the engine awaits the asker on its own loop; the question goes to the browsers and the
  answer comes back through a ``concurrent.futures.Future``. The engine checks the answer with the
  prompt's own check and asks again, with the problem, when it cannot take it.

The one who starts a run controls it (stops it, answers its prompts); everybody watches it, and
anybody signed in may press the emergency stop. A Start while a run is prepared or going on is
refused; the station lock refuses a run of another process, with its own line.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import BenchError
from bench.events import EventKind
from bench.result import RunResult, Verdict
from bench.units import format_value

if TYPE_CHECKING:
    from bench.engine import Run
    from bench.plan import Plan
    from bench.prompts import PromptRequest
    from bench.runner import Started
    from bench.ui.live import Hub

STOP_LEVELS = ("terminate", "abort", "estop")


class Refused(Exception):
    """An action the station does not take: a catalogue key, its arguments and an HTTP status."""

    def __init__(self, key: str, status: int = 409, **args: Any) -> None:
        super().__init__(key)
        self.key = key
        self.status = status
        self.args_ = args


@dataclass
class Prompt:
    id: int
    request: PromptRequest
    future: concurrent.futures.Future[tuple[str, str]]

    def as_json(self) -> dict[str, Any]:
        r = self.request
        return {
            "id": self.id,
            "step": r.step,
            "text": r.text,
            "answer": r.answer,
            "unit": r.unit,
            "low": r.low,
            "high": r.high,
            "pattern": r.pattern,
            "picture": r.picture is not None,
            "problem": r.problem,
        }


@dataclass
class RunView:
    """What the browsers are shown of the current (or last) run."""

    run_id: str
    sequence: dict[str, Any]
    owner: str
    display: list[dict[str, Any]]
    steps: list[dict[str, Any]]
    phase: str = "preparing"
    estop: str | None = None
    terminate: str | None = None
    safe_state: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None
    refused: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "sequence": self.sequence,
            "owner": self.owner,
            "display": self.display,
            "steps": self.steps,
            "phase": self.phase,
            "estop": self.estop,
            "terminate": self.terminate,
            "safe_state": self.safe_state,
            "result": self.result,
            "refused": self.refused,
        }


def display_of(plan: Plan) -> list[dict[str, Any]]:
    """The display signals with the monitors and station limits that read each of them."""
    guards = [*plan.monitors, *plan.limits]
    out = []
    for name in plan.display:
        info = plan.catalog.get(name)
        out.append(
            {
                "name": name,
                "unit": info.unit.text if info is not None else "",
                "limits": [g.text for g in guards if name in g.cond.signals],
            }
        )
    return out


def steps_of(plan: Plan) -> list[dict[str, Any]]:
    return [
        {"i": i, "name": s.name, "phase": s.phase, "kind": s.kind, "state": "pending", "message": ""}
        for i, s in enumerate([*plan.steps, *plan.cleanup])
    ]


def result_json(result: RunResult) -> dict[str, Any]:
    """The end of a run as the page shows it: verdict, reason, measurements, safe state."""
    ms = []
    for m in result.measurements:
        ms.append(
            {
                "name": m.name,
                "value": format_value(m.value, m.unit),
                "low": None if m.low is None else format_value(m.low, m.unit),
                "high": None if m.high is None else format_value(m.high, m.unit),
                "outcome": m.outcome_text(),
            }
        )
    return {
        "verdict": result.verdict.value,
        "reason": result.reason,
        "measurements": ms,
        "safe_state": [{"device": s.device, "safe": s.safe, "detail": s.detail} for s in result.safe_state],
        "unsafe_end": result.unsafe_end,
        "sim_duration_s": result.sim_duration_s,
        "wall_duration_s": result.wall_duration_s,
        "record_error": result.record_error,
    }


class Controller:
    """The station's one run, on behalf of whoever started it; every change goes to the hub."""

    def __init__(self, station_path: Path, reports: Path, hub: Hub) -> None:
        self.station_path = station_path
        self.reports = reports
        self.hub = hub
        self.view: RunView | None = None
        self.started: Started | None = None
        self.prompt: Prompt | None = None
        self.task: asyncio.Task[None] | None = None
        self._pending_stops: list[tuple[str, str]] = []
        self._prompt_ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- what the browsers read -------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self.task is not None and not self.task.done()

    def run(self) -> Run | None:
        return self.started.run if self.started is not None and self.busy else None

    def snapshot(self) -> dict[str, Any]:
        return {
            "busy": self.busy,
            "run": self.view.as_json() if self.view is not None else None,
            "prompt": self.prompt.as_json() if self.prompt is not None else None,
        }

    def _publish_run(self) -> None:
        self.hub.publish("run", {"busy": self.busy, "run": self.view.as_json() if self.view else None})

    # -- start ------------------------------------------------------------------------------
    def start(self, plan: Plan, user: str, run_id: str, serial: str | None = None) -> None:
        """Start ``plan`` for ``user`` (on the server's loop); Refused when a run is going on.

        ``serial``: the DUT serial typed or scanned on the page, recorded as the item's
        identification (result.json, the report's "Item tested", the results database)."""
        from bench.result import OperatorEntry
        from bench.runner import run_plan

        if self.busy:
            assert self.view is not None
            raise Refused("refused.busy", owner=self.view.owner)
        self._loop = loop = asyncio.get_running_loop()
        seq = plan.sequence
        self.view = RunView(
            run_id=run_id,
            sequence={"id": seq.id, "title": seq.title, "version": seq.version},
            owner=user,
            display=display_of(plan),
            steps=steps_of(plan),
        )
        self.started = None
        self._pending_stops = []

        def listener(kind: str, t: float, fields: dict[str, Any]) -> None:
            loop.call_soon_threadsafe(self._on_event, run_id, kind, t, dict(fields))

        def on_started(s: Started) -> None:
            loop.call_soon_threadsafe(self._on_started, run_id, s)

        async def ask(request: PromptRequest) -> tuple[str, str]:
            # On the run's loop. Cancelled by a stop: the question is withdrawn from the browsers.
            future: concurrent.futures.Future[tuple[str, str]] = concurrent.futures.Future()
            loop.call_soon_threadsafe(self._open_prompt, request, future)
            try:
                return await asyncio.wrap_future(future)
            finally:
                loop.call_soon_threadsafe(self._close_prompt, future)

        async def go() -> None:
            from bench.results.rows import RunTags

            try:
                result = await asyncio.to_thread(
                    run_plan,
                    plan,
                    self.reports,
                    run_id=run_id,
                    listeners=[listener],
                    on_started=on_started,
                    asker=ask,
                    tags=RunTags(operator=user),
                    entered_before=[
                        OperatorEntry(
                            step="before the run",
                            prompt="DUT serial number (typed or scanned at the browser station)",
                            answer=serial,
                            record="identification",
                            source=f"operator {user} at the browser station",
                            t=0.0,
                        )
                    ]
                    if serial
                    else [],
                )
            except BenchError as exc:  # a guard refused it (lock, interlock, calibration ...)
                self._ended(run_id, None, str(exc))
                return
            self._ended(run_id, result, None)

        self.task = loop.create_task(go(), name=f"ui-run-{run_id}")
        self._publish_run()

    def _on_started(self, run_id: str, s: Started) -> None:
        if self.view is None or self.view.run_id != run_id:
            return
        self.started = s
        pending, self._pending_stops = self._pending_stops, []
        for level, reason in pending:  # pressed while the run was prepared: they act at its first instant
            self._press(level, reason)

    def _ended(self, run_id: str, result: RunResult | None, refused: str | None) -> None:
        self.started = None
        self.prompt = None
        view = self.view
        if view is None or view.run_id != run_id:
            return
        if result is not None:
            view.result = result_json(result)
            view.phase = "done"
        else:
            view.refused = refused
            view.phase = "refused"
        self.hub.publish("run", {"busy": False, "run": view.as_json()})

    # -- record events ----------------------------------------------------------------------
    def _on_event(self, run_id: str, kind: str, t: float, fields: dict[str, Any]) -> None:
        view = self.view
        if view is None or view.run_id != run_id:
            return
        changed = True
        if kind in (EventKind.STEP_STARTED, EventKind.STEP_ENDED):
            # One step changed: the browsers get that step, not the whole list again (a sequence of
            # hundreds of steps would send its list twice per step to every browser).
            phase = view.phase
            if kind == EventKind.STEP_STARTED:
                view.phase = str(fields.get("phase", view.phase))
                step = self._find_step(str(fields.get("step")), str(fields.get("phase")), ("pending",))
                if step is not None:
                    step["state"] = "running"
            else:
                step = self._find_step(str(fields.get("step")), None, ("running",))
                if step is not None:
                    step["state"] = str(fields.get("outcome", ""))
                    step["message"] = str(fields.get("message") or "")
            if view.phase != phase:
                self._publish_run()
            elif step is not None:
                self.hub.publish("step", {"run_id": run_id, "phase": view.phase, "step": dict(step)})
            return
        if kind == EventKind.RUN_STARTED:
            view.phase = "load"
        elif kind == EventKind.EMERGENCY_STOP:
            view.estop = str(fields.get("reason", ""))
        elif kind == EventKind.TERMINATE_REQUESTED:
            view.terminate = str(fields.get("reason", ""))
        elif kind == EventKind.CLEANUP_STARTED:
            view.phase = "cleanup"
        elif kind == EventKind.SAFE_STATE:
            view.phase = "safe state"
            view.safe_state.append(
                {"device": fields.get("device"), "safe": bool(fields.get("safe")), "detail": fields.get("detail", "")}
            )
        elif kind == EventKind.RUN_ENDED:
            view.phase = "record"
        else:
            changed = False
        if changed:
            self._publish_run()

    def _find_step(self, name: str, phase: str | None, states: tuple[str, ...]) -> dict[str, Any] | None:
        assert self.view is not None
        for step in self.view.steps:
            if step["name"] == name and step["state"] in states and (phase is None or step["phase"] == phase):
                return step
        return None

    # -- stops ------------------------------------------------------------------------------
    def stop(self, level: str, user: str) -> None:
        """Press a stop level for ``user`` (on the server's loop)."""
        if level not in STOP_LEVELS:
            raise Refused("refused.stop_level", status=400, level=level)
        if not self.busy:
            raise Refused("refused.no_run")
        reason = {
            "terminate": f"terminated by {user} at the browser station",
            "abort": f"aborted by {user} at the browser station",
            "estop": f"emergency stop by {user} at the browser station",
        }[level]
        if self.started is None:
            self._pending_stops.append((level, reason))
        else:
            self._press(level, reason)

    def _press(self, level: str, reason: str) -> None:
        s = self.started
        assert s is not None
        if level == "estop":
            s.loop.call_soon_threadsafe(s.run.emergency_stop, reason)
        elif level == "abort":
            s.loop.call_soon_threadsafe(s.run.request_stop, Verdict.ABORTED, reason)
        else:
            s.loop.call_soon_threadsafe(s.run.terminate, reason)

    # -- prompts ----------------------------------------------------------------------------
    def _open_prompt(self, request: PromptRequest, future: concurrent.futures.Future[tuple[str, str]]) -> None:
        if future.done():
            return  # withdrawn before the browsers heard of it
        self.prompt = Prompt(next(self._prompt_ids), request, future)
        self.hub.publish("prompt", {"prompt": self.prompt.as_json()})

    def _close_prompt(self, future: concurrent.futures.Future[tuple[str, str]]) -> None:
        if self.prompt is not None and self.prompt.future is future:
            self.prompt = None
            self.hub.publish("prompt", {"prompt": None})

    def answer(self, prompt_id: int, text: str, user: str) -> None:
        p = self.prompt
        if p is None or p.id != prompt_id or p.future.done():
            raise Refused("refused.no_prompt")
        self.prompt = None
        self.hub.publish("prompt", {"prompt": None})
        p.future.set_result((text, f"operator {user} at the browser station"))

    def picture(self, prompt_id: int) -> Path | None:
        p = self.prompt
        return p.request.picture if p is not None and p.id == prompt_id else None

    # -- the end of the server --------------------------------------------------------------
    def abort_for_shutdown(self) -> None:
        """The server is stopping: a run going on is aborted (cleanup and safe state still run)."""
        if self.busy and self.started is not None:
            self._press("abort", "aborted: the browser station was stopped")
        elif self.busy:
            self._pending_stops.append(("abort", "aborted: the browser station was stopped"))

    async def wait(self) -> None:
        if self.task is not None:
            await asyncio.shield(self.task)
