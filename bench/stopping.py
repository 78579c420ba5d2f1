"""The stop levels of a run: terminate, abort and emergency stop (docs/safety.md, "Stop levels").

* terminate: the step in progress finishes, no further step starts, cleanup runs;
* abort (``request_stop``): the steps are cancelled at their current ``await``, cleanup runs;
* emergency stop: every device's safe state at once, the cleanup steps cut short.

A first SIGINT or SIGTERM aborts, a second is an emergency stop; while the record is written
(after the safe state was read back), a second one ends the process instead. Whoever stops the
run (the console's keys, a signal, the lab, a monitor, a driver fault, a failed record write)
calls these methods on the event loop's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from bench.events import EventKind
from bench.result import Verdict
from bench.safestate import SafeState

if TYPE_CHECKING:
    from bench.runcontext import RunContext

# Which verdict outranks which when a second reason to stop comes in.
SEVERITY = {Verdict.PASS: 0, Verdict.FAIL: 1, Verdict.ABORTED: 2, Verdict.ERROR: 3}


class RecordStageInterrupted(BaseException):
    """A second stop signal while the record was written: the process ends now (exit 4).

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` on the way (the
    report's fallbacks) can swallow it, but not a KeyboardInterrupt, which the command-line
    framework would turn into a bare exit code without this message.
    """


HARD_EXIT_AFTER_S = 1.5  # after a second stop signal whose exception did not end the process


def _end_process(message: str) -> None:
    """End the process from a thread, as a dropped ``RecordStageInterrupted`` would have."""
    from bench.console import EXIT_CODES  # the console imports the engine, which imports this module

    sys.stdout.flush()
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
    os._exit(EXIT_CODES[Verdict.ABORTED])


class StopLevels:
    def __init__(self, ctx: RunContext, safe: SafeState) -> None:
        self.ctx = ctx
        self.safe = safe
        self.steps_task: asyncio.Task[None] | None = None
        self.cleanup_task: asyncio.Task[None] | None = None
        # Set once an emergency stop began: the safe state of every device, commanded at once.
        self.estop_task: asyncio.Task[None] | None = None
        self.terminate_reason: str | None = None
        self._stop_signals = 0  # SIGINT and SIGTERM received

    def request_stop(self, verdict: Verdict, reason: str) -> None:
        """Stop the steps now (monitor, driver fault, operator). Cleanup still runs."""
        ctx = self.ctx
        if ctx.stop is None or SEVERITY[verdict] > SEVERITY[ctx.stop[0]]:
            ctx.stop = (verdict, reason) if ctx.stop is None else (verdict, ctx.stop[1])
        if self.steps_task is not None and not self.steps_task.done():
            self.steps_task.cancel()
        elif ctx.state.phase == "cleanup" and ctx.rec is not None:
            ctx.event(EventKind.STOP_REQUESTED, verdict=verdict.value, reason=reason, note="cleanup continues")

    def terminate(self, reason: str) -> None:
        """Finish the current step, then clean up and report."""
        if self.terminate_reason is None and self.ctx.state.phase in ("load", "steps"):
            self.terminate_reason = reason
            self.ctx.event(EventKind.TERMINATE_REQUESTED, reason=reason)

    def emergency_stop(self, reason: str, verdict: Verdict = Verdict.ABORTED) -> None:
        """Every device's safe state at once, concurrently, and nothing else (no cleanup steps)."""
        ctx = self.ctx
        if self.estop_task is not None or ctx.state.phase in ("record", "done"):
            return  # already stopping, or the safe state was commanded and read back before the record
        # The safe-state tasks are queued before the steps are cancelled, so that they run first,
        # ahead of the unwinding of the steps and of anything the caller queues next.
        self.estop_task = ctx.loop.create_task(self.safe.command(self.safe.start()), name="emergency-stop")
        ctx.emergency_stopped = True
        ctx.event(EventKind.EMERGENCY_STOP, reason=reason)
        self.request_stop(verdict, reason)
        for task in (self.steps_task, self.cleanup_task):
            if task is not None and not task.done():
                task.cancel()

    def on_signal(self, name: str) -> None:
        """A first SIGINT or SIGTERM aborts, a second one is an emergency stop.

        While the record is written a second one ends the process instead (see
        ``signals_while_recording``): the safe state was commanded before that stage.
        """
        if self.ctx.state.phase in ("record", "done"):
            return  # the safe state is behind us; signals_while_recording counts these
        self._stop_signals += 1
        if self._stop_signals >= 2:
            self.emergency_stop(f"emergency stop by operator (second {name})")
            return
        self.request_stop(Verdict.ABORTED, f"interrupted by operator ({name})")

    def device_fault(self, device: str, reason: str) -> None:
        """A driver reported a fault that makes its device unusable: abort with ERROR."""
        self.ctx.event(EventKind.DEVICE_FAULT, device=device, reason=reason)
        self.request_stop(Verdict.ERROR, f"device {device}: {reason}")

    def record_failed(self, error: str) -> None:
        """A run that can no longer be recorded is stopped, and brought to its safe state, at once."""
        self.ctx.loop.call_soon_threadsafe(self.request_stop, Verdict.ERROR, f"record could not be written: {error}")

    @contextlib.contextmanager
    def signals_while_recording(self) -> Iterator[None]:
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

        backstops: list[threading.Timer] = []

        def on_signal(signum: int, frame: object) -> None:
            self._stop_signals += 1
            if self._stop_signals >= 2:
                message = (
                    f"emergency stop: {signal.Signals(signum).name} while the record was being written; "
                    "ended at once, the safe state had been commanded before; the record is not sealed"
                )
                # Python drops an exception raised inside a finalizer (a __del__ of the MF4 or PDF
                # writers). Unless this one is seen leaving the stage, a thread ends the process.
                backstop = threading.Timer(HARD_EXIT_AFTER_S, _end_process, (message,))
                backstop.daemon = True
                backstops.append(backstop)
                backstop.start()
                raise RecordStageInterrupted(message)

        previous_hook = sys.unraisablehook

        def dropped(unraisable: Any) -> None:
            if not isinstance(unraisable.exc_value, RecordStageInterrupted):
                previous_hook(unraisable)
            # else: no traceback; the backstop ends the process with the one line

        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, on_signal)
        sys.unraisablehook = dropped
        try:
            yield
        except RecordStageInterrupted:
            for backstop in backstops:
                backstop.cancel()  # it left the stage: the caller ends the process with its line
            raise
        finally:
            sys.unraisablehook = previous_hook
            for sig, handler in previous.items():
                signal.signal(sig, signal.SIG_DFL if handler is None else handler)
