"""What the person at the bench sees while a run goes on, and at its end.

On a terminal: a live panel (rich) with the step, its progress, elapsed simulated and wall
time, and the key signals. Elsewhere (CI, a pipe): one line per step and a status line every
ten simulated minutes, so logs stay short but show progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import sys
import time
from collections.abc import Iterator
from typing import Any

from rich.console import Console, Group

__all__ = ["Console", "RunView", "print_summary", "stderr_console"]
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from bench.engine import Run
from bench.events import EventKind
from bench.plan import Plan
from bench.result import RunResult, Verdict
from bench.runcontext import format_signal
from bench.units import format_value

_COLOURS = {"PASS": "green", "FAIL": "red", "ERROR": "magenta", "ABORTED": "yellow", "recorded": "cyan"}


def hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


class RunView:
    """Listens to the record's events; renders the live panel or plain progress lines."""

    def __init__(self, run: Run, console: Console | None = None, live: bool | None = None) -> None:
        self.run = run
        self.console = console or Console(stderr=False, highlight=False, emoji=False)
        self.live_mode = self.console.is_terminal if live is None else live
        self._live: Live | None = None
        self._wall0 = time.monotonic()
        self._next_status = 600.0
        run.listeners.append(self.on_event)

    def __enter__(self) -> RunView:
        if self.live_mode:
            self._live = Live(self, console=self.console, refresh_per_second=4, transient=True)
            self._live.__enter__()
            self._keys_on()
            if self.run.opt.answers is not None:
                self.run.opt.answers.hold = self.aside
        return self

    @contextlib.contextmanager
    def aside(self) -> Iterator[None]:
        """Out of the way while the operator types an answer: no live panel, and the terminal
        reads lines again, so that the 'a' or 'e' of an answer is not taken for a stop key."""
        live = self._live
        self._keys_off()
        if live is not None:
            live.stop()
        try:
            yield
        finally:
            if live is not None and self._live is live:
                live.start()
                self._keys_on()

    def __exit__(self, *exc: Any) -> None:
        self._keys_off()
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None

    # Keys in the live view: t = terminate (finish the step, clean up), a = abort, e = emergency stop.
    def _keys_on(self) -> None:
        self._tty: list[Any] | None = None
        if not sys.stdin.isatty():
            return
        import termios
        import tty

        fd = sys.stdin.fileno()
        self._tty = termios.tcgetattr(fd)
        tty.setcbreak(fd)
        asyncio.get_running_loop().add_reader(fd, self._on_key)

    def _keys_off(self) -> None:
        saved = getattr(self, "_tty", None)
        if saved is None:
            return
        import termios

        fd = sys.stdin.fileno()
        asyncio.get_running_loop().remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        self._tty = None

    def _on_key(self) -> None:
        key = os.read(sys.stdin.fileno(), 1).decode(errors="ignore").lower()
        if key == "t":
            self.run.terminate("terminated by operator (key t)")
        elif key == "a":
            self.run.request_stop(Verdict.ABORTED, "aborted by operator (key a)")
        elif key == "e":
            self.run.emergency_stop("emergency stop by operator (key e)")

    # Plain progress lines -------------------------------------------------------------------
    def on_event(self, kind: str, t: float, fields: dict[str, Any]) -> None:
        if self._live is not None:
            if kind in (EventKind.MONITOR_TRIPPED, EventKind.DEVICE_FAULT, EventKind.INTERLOCK_NOT_LATCHED):
                self._live.console.print(
                    f"[yellow]{hms(t)} {kind}: {_m(fields.get('monitor') or fields.get('reason'))}",
                    emoji=False,
                )
            return
        out = functools.partial(self.console.print, emoji=False)  # whatever console it was given
        if kind == EventKind.STEP_STARTED:
            out(f"{hms(t)}  \\[{fields['phase']}] {_m(fields['step'])}: {_m(fields['text'])}")
        elif (kind == EventKind.STEP_ENDED and fields["outcome"] != "PASS") or (
            kind == EventKind.STEP_ENDED and fields["message"]
        ):
            colour = _COLOURS.get(fields["outcome"], "white")
            out(f"{hms(t)}    [{colour}]{fields['outcome']}[/] {_m(fields['message'])}")
        elif kind == EventKind.MONITOR_TRIPPED:
            out(f"{hms(t)}  [yellow]monitor tripped:[/] {_m(fields['monitor'])}")
        elif kind == EventKind.SAFE_STATE:
            colour = "green" if fields["safe"] else "red"
            out(
                f"{hms(t)}  safe state {_m(fields['device'])}: [{colour}]{'safe' if fields['safe'] else 'NOT SAFE'}[/]"
                f" - {_m(fields['detail'])}"
            )
        elif kind == EventKind.DEVICE_FAULT:
            out(f"{hms(t)}  [magenta]device fault:[/] {_m(fields['reason'])}")
        elif kind == EventKind.INTERLOCK_NOT_LATCHED:
            out(f"{hms(t)}  [bold red]interlock could NOT be latched:[/] {_m(fields['reason'])}")
        elif kind in (EventKind.SUPERVISOR_TRIPPED, EventKind.EMERGENCY_STOP, EventKind.TERMINATE_REQUESTED):
            out(f"{hms(t)}  [bold red]{kind.replace('_', ' ')}:[/] {_m(fields.get('reason') or fields.get('limit'))}")
        elif kind == EventKind.PROMPT_ANSWERED:
            out(f"{hms(t)}  prompt '{_m(fields['prompt'])}': {_m(fields['answer'])} ({_m(fields['source'])})")
        if t >= self._next_status and self.run.state.phase == "steps":
            self._next_status = (t // 600 + 1) * 600
            out(f"{hms(t)}    ... {_m(self._signals_line())}")

    def _signals_line(self) -> str:
        bus = self.run.bus
        parts = []
        for name in self.run.plan.display:
            v = bus.values.get(name)
            parts.append(f"{name} = {format_signal(self.run.plan, name, v)}")
        return ", ".join(parts)

    # Live panel ----------------------------------------------------------------------------
    def __rich__(self) -> Group:
        st = self.run.state
        now = st.now() - st.t0 if st.phase != "load" else 0.0
        wall = time.monotonic() - self._wall0
        seq = self.run.plan.sequence
        head = Text.assemble((f"{seq.id} ", "bold"), shown(f"v{seq.version}  {seq.title}"))
        info = Table.grid(padding=(0, 2))
        info.add_row("phase", st.phase)
        step = st.step
        if step is not None:
            total = len(self.run.plan.steps if step.phase == "steps" else self.run.plan.cleanup)
            info.add_row("step", _m(f"{step.index + 1}/{total} {step.name}: {step.text}"))
            elapsed = now - (st.step_started - st.t0)
            limit = step.plan.time_limit()  # a wait's duration, a wait_until's timeout
            if limit:
                frac = min(1.0, elapsed / limit) if limit else 1.0
                bar = "#" * int(frac * 30) + "-" * (30 - int(frac * 30))
                info.add_row("", f"[{bar}] {hms(elapsed)} of {hms(limit)}{' max' if step.kind == 'wait_until' else ''}")
        info.add_row("time", f"{hms(now)} simulated / bench, {hms(wall)} wall")
        tripped = self.run.tripped
        info.add_row(
            "interlock",
            f"[bold red]TRIPPED: {_m(tripped)}[/]"
            if tripped
            else f"armed ({len(self.run.plan.limits)} station limits)",
        )
        sig = Table(box=None, show_header=True, header_style="bold")
        sig.add_column("signal")
        sig.add_column("value", justify="right")
        sig.add_column("limits (monitors and station)")
        guards = [*self.run.plan.monitors, *self.run.plan.limits]
        for name in self.run.plan.display:
            lims = "; ".join(g.text for g in guards if name in g.cond.signals)
            sig.add_row(_m(name), _m(format_signal(self.run.plan, name, self.run.bus.values.get(name))), _m(lims))
        mons = Table(box=None, show_header=True, header_style="bold")
        mons.add_column("monitor / station limit")
        mons.add_column("condition")
        for m in guards:
            mons.add_row(_m(m.name), _m(m.text))
        keys = Text(
            "keys: t terminate (finish step, clean up) · a abort · e emergency stop · Ctrl-C abort, twice e-stop",
            style="dim",
        )
        return Group(head, info, sig, mons, keys)


def print_parameters(console: Console, plan: Plan) -> None:
    """The parameter values the run uses, as resolved: a `-p soc=65` read as 0.65 % would show here."""
    if plan.params:
        values = ", ".join(
            f"{p.name} = {p.value}" + (" (set with -p)" if p.overridden else "") for p in plan.params.values()
        )
        console.print(f"parameters: {_m(values)}")


def print_summary(console: Console, result: RunResult, run_dir: str) -> None:
    colour = _COLOURS[result.verdict.value]
    for m in result.measurements:
        label = m.outcome_text()
        mark = "[green]PASS[/]" if label == "PASS" else f"[{_COLOURS.get(label, 'red')}]{label}[/]"
        lims = []
        if m.low is not None:
            lims.append(f">= {format_value(m.low, m.unit)}")
        if m.high is not None:
            lims.append(f"<= {format_value(m.high, m.unit)}")
        console.print(
            f"  {mark} {_m(m.name)} = {_m(format_value(m.value, m.unit))}  ({_m(', '.join(lims) or 'no limits')})"
        )
    if result.safe_state:
        states = ", ".join(
            f"{_m(s.device)} {'[green]safe[/]' if s.safe else '[red]NOT SAFE[/]'}" for s in result.safe_state
        )
        console.print(f"  safe state read back: {states}")
    console.print(f"[bold {colour}]{result.verdict.value}[/] {_m(result.reason)}")
    console.print(
        f"simulated {hms(result.sim_duration_s)} ({result.sim_duration_s:.1f} s) in {result.wall_duration_s:.2f} s wall"
    )
    console.print(f"run folder: {_m(run_dir)}")
    problem = run_problem(result, run_dir)
    if problem is not None:
        stderr_console().print(problem, markup=False, highlight=False, emoji=False)


def run_problem(result: RunResult, run_dir: str) -> str | None:
    """The one line for stderr when the record or the report could not be completely written."""
    if result.record_error is not None:
        states = ", ".join(f"{s.device} {'safe' if s.safe else 'NOT SAFE'}" for s in result.safe_state)
        return (
            f"error: record could not be written: {result.record_error}; "
            f"the safe state was commanded regardless (read back: {states or 'no device connected'})"
        )
    if result.report_degraded is not None:
        return (
            f"warning: report degraded: {result.report_degraded}; the record is complete "
            f"(bench report render {run_dir} -o DIR renders it again)"
        )
    from bench.record.pdfseal import pdf_error

    pdf = pdf_error(run_dir)
    if pdf is not None:
        # After the seal: the verdict, the record and the exit code are the run's (bench/finish.py).
        return f"warning: report.pdf not written: {pdf}; the record is complete and sealed (bench report render {run_dir} -o DIR renders it again)"
    return None


def stderr_console() -> Console:
    """Where errors go: every string is shown as it is (no markup, no emoji codes, no control characters)."""
    return PlainConsole(file=sys.stderr, highlight=False, soft_wrap=True, markup=False, emoji=False)


class PlainConsole(Console):
    """A console for messages that quote files, devices and the network: they are shown, never interpreted.

    ``file.yaml:100:`` stays a line number (rich would make ``:100:`` an emoji), ``[red]`` stays
    text, and an escape sequence in a DBC's name cannot reach the terminal.
    """

    def print(self, *objects: Any, **kwargs: Any) -> None:
        kwargs.update(markup=False, emoji=False, highlight=False)
        super().print(*(shown(o) if isinstance(o, str) else o for o in objects), **kwargs)


# C0 and C1 control characters except tab and newline, DEL, and the bidirectional overrides
# that make a terminal show text in another order than it is.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def shown(text: object) -> str:
    """``text`` safe to put on a terminal: each control character becomes a visible ``\\xNN``."""
    return _CONTROL.sub(
        lambda c: f"\\x{ord(c.group()):02x}" if ord(c.group()) < 0x100 else f"\\u{ord(c.group()):04x}", str(text)
    )


def _m(text: object) -> str:
    """``text`` (from a file, a device, an operator) to put inside rich markup: shown as it is."""
    return escape(shown(text))


EXIT_CODES = {Verdict.PASS: 0, Verdict.FAIL: 1, Verdict.ERROR: 3, Verdict.ABORTED: 4}
# The run ended but a device's safe state was not confirmed: someone must look at the rig.
EXIT_UNSAFE = 5
# The verdict was PASS but the report could not be completely written (the record is complete).
EXIT_REPORT_DEGRADED = 8


def run_exit_code(result: RunResult) -> int:
    """The exit code of a finished run: an unsafe end outranks the verdict; a degraded PASS is 8."""
    if result.unsafe_end:
        return EXIT_UNSAFE
    if result.verdict == Verdict.PASS and result.report_degraded is not None:
        return EXIT_REPORT_DEGRADED
    return EXIT_CODES[result.verdict]
