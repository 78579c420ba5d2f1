"""Latency from the CAN frame that violates a station limit to the first safe-state command on the bus.

The simulated station is served by `bench sim serve` (a separate process, on the wall clock) on
a copy of stations/sim-served.yaml with free ports; its supervisor limit
``bms.cell_temp_max > 80 degC`` is the one that trips. Three more parties, each in its own
process so that none of them shares an interpreter with what it measures:

* the controller: this script's main process drives the engine in-process (``build_plan`` +
  ``run_plan(realtime=True)``, the same path as a bench agent) with
  benchmarks/safe_state_latency.yaml, which commands the contactors closed and waits. All four
  devices of the served station are connected, polled and recorded as in a real run;
* a probe (this file, ``--role probe``): two python-can ``socketcand`` clients. One injects a
  BMS_Temperatures frame with cell_temp_max = 95 degC at a random phase; the other observes the
  bus and takes both timestamps: the injected frame and the first BENCH_Command (0x200) with
  cmd_contactors = OPEN after it. python-can's socketcand client stamps a frame with the time
  the server put in it, so both instants are the server's clock at the moment the frame was on
  its bus: one observer, one clock;
* the baseline (``--role reflector``): a bare python-can socketcand client that answers a
  marked injected frame at once with a prebuilt frame (0x7FF). Injected, observed and stamped the
  same way, it is the floor of the transport: server -> TCP -> python-can recv -> send -> TCP ->
  server.

All clients here set python-can's ``tcp_tune`` (TCP_NODELAY), as drivers/can_dbc.py does for a
socketcand bus: with Nagle's algorithm on, a command frame can wait up to 40 ms for the ACK of
the frame before it (seen here: p99 41 ms over 200 trips, nearly all of it between the send and
the server).

Each controller trip runs a whole run (connect, UDS identification, steps, e-stop, safe state
read back, record); a trip latches the interlock, which is reset before the next trip, in a
state folder of this run only. Baseline and controller trips alternate, so both see the same
machine load. Only the latencies are timed; the rest of each run is not.

The breakdown of the controller's latency uses the engine's own record events, stamped with
``time.monotonic()`` in the controller: on Linux that is the same clock as the server's loop
time (CLOCK_MONOTONIC is system-wide), so the stages are comparable with the bus timestamps.
"command sent" is when the engine records the ``set``, just after the send returned: the frame
can reach the server first, hence small negative times in the last stage.

    .venv/bin/python benchmarks/safe_state_latency.py [--trips 200] [--seed 1] [--smoke] [--json FILE]

--smoke: 3 trips of each.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import can
import cantools
from cantools.database.can import Database
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.events import EventKind  # noqa: E402
from benchmarks.table import Row, add_arguments, emit  # noqa: E402
from tests.ports import free_ports  # noqa: E402

SEQUENCE = ROOT / "benchmarks" / "safe_state_latency.yaml"
DBC = ROOT / "dbc" / "bms.dbc"
CHANNEL = "bench0"
TEMPERATURES = 0x103  # BMS_Temperatures
COMMAND = 0x200  # BENCH_Command
REPLY = 0x7FF  # the reflector's answer: an id nothing else on the bus uses
OPEN = 0
# cell_temp_max_id of the injected frame says who should react to it.
MARK_CONTROLLER, MARK_BASELINE = 0xC1, 0xB1
OBSERVE_S = 3.0
GOAL_P99_S = 0.005
SMOKE_TRIPS = 3


def injected_frame(db: Database, mark: int) -> bytes:
    msg = db.get_message_by_frame_id(TEMPERATURES)
    values = {"cell_temp_max": 95.0, "cell_temp_min": 25.0, "cell_temp_max_id": mark, "coolant_temp": 25.0}
    return bytes(msg.encode(values))


def socketcand(port: int) -> can.BusABC:
    # python-can warns for every frame split across two TCP reads; it then joins them correctly.
    logging.getLogger("can.interfaces.socketcand.socketcand").setLevel(logging.ERROR)
    # The socket options the controller's driver uses (drivers/can_dbc.py): Nagle off.
    return can.Bus(interface="socketcand", host="127.0.0.1", port=port, channel=CHANNEL, tcp_tune=True)


def drain(bus: can.BusABC) -> None:
    while bus.recv(timeout=0) is not None:
        pass


def wait_raw(bus: can.BusABC) -> None:
    """Until the server forwards frames: it holds them back for a while after the handshake."""
    if bus.recv(timeout=5.0) is None:
        raise RuntimeError("no frames from the served bus")


# -- the probe and the reflector (child processes) ---------------------------------------------
def run_probe(port: int) -> None:
    """Reads "controller" / "baseline" lines; answers "t_injected t_response last_cmd_contactors"."""
    db = cantools.database.load_file(str(DBC))
    assert isinstance(db, Database)
    frames = {"controller": injected_frame(db, MARK_CONTROLLER), "baseline": injected_frame(db, MARK_BASELINE)}
    injector, observer = socketcand(port), socketcand(port)
    try:
        wait_raw(observer)
        print("ready", flush=True)
        probe_loop(injector, observer, frames)
    finally:
        injector.shutdown()
        observer.shutdown()


def probe_loop(injector: can.BusABC, observer: can.BusABC, frames: dict[str, bytes]) -> None:
    for line in sys.stdin:
        kind = line.strip()
        data = frames[kind]
        response = REPLY if kind == "baseline" else COMMAND
        # The injector's own copy of the bus is never read otherwise; the server would buffer it.
        drain(injector)
        drain(observer)
        injector.send(can.Message(arbitration_id=TEMPERATURES, data=data, is_extended_id=False))
        t_inj: float | None = None
        t_resp: float | None = None
        last_cmd = -1
        deadline = time.monotonic() + OBSERVE_S
        while t_resp is None and time.monotonic() < deadline:
            msg = observer.recv(timeout=0.1)
            if msg is None:
                continue
            if t_inj is None:
                if msg.arbitration_id == TEMPERATURES and bytes(msg.data) == data:
                    t_inj = msg.timestamp
                elif msg.arbitration_id == COMMAND:
                    last_cmd = msg.data[0] & 0x3
            elif msg.arbitration_id == response and (kind == "baseline" or msg.data[0] & 0x3 == OPEN):
                t_resp = msg.timestamp
        print(f"{t_inj} {t_resp} {last_cmd}", flush=True)


def run_reflector(port: int) -> None:
    bus = socketcand(port)
    reply = can.Message(arbitration_id=REPLY, data=bytes(8), is_extended_id=False)
    parent = os.getppid()
    try:
        wait_raw(bus)
        print("ready", flush=True)
        # Also ends when the script is gone without stopping it (its parent changes).
        while os.getppid() == parent and not select.select([sys.stdin], [], [], 0)[0]:
            msg = bus.recv(timeout=0.5)
            if msg is not None and msg.arbitration_id == TEMPERATURES and msg.data[4] == MARK_BASELINE:
                bus.send(reply)
    finally:
        bus.shutdown()


# -- the station and the processes ----------------------------------------------------------------
def write_station(tmp: Path) -> tuple[Path, int]:
    """stations/sim-served.yaml on free ports, its paths absolute, its limits unchanged."""
    yaml = YAML(typ="safe")
    data: dict[str, Any] = yaml.load((ROOT / "stations" / "sim-served.yaml").read_text())
    can_port, psu_port, pa_port = free_ports(3)
    dev = data["devices"]
    dev["bms"]["config"]["dbc"] = str(DBC)
    dev["bms"]["config"]["can"]["port"] = can_port
    dev["psu"]["config"]["transport"]["visa"] = f"TCPIP::127.0.0.1::{psu_port}::SOCKET"
    dev["pa"]["config"]["transport"]["visa"] = f"TCPIP::127.0.0.1::{pa_port}::SOCKET"
    dev["h2"]["config"]["transport"]["url"] = str(tmp / "serial" / "h2")
    data["serve"].update(
        simulators_from=str(ROOT / "stations" / "sim.yaml"),
        can={"port": can_port, "channels": [CHANNEL]},
        scpi={"psu": psu_port, "pa": pa_port},
        serial_dir=str(tmp / "serial"),
    )
    path = tmp / "sim-served.yaml"
    with path.open("w") as f:
        yaml.dump(data, f)
    return path, can_port


class Child:
    """A child process that prints "ready..." once it serves; stopped whatever happens."""

    def __init__(self, name: str, argv: list[str], stdin: bool = False, ready_timeout: float = 30.0) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=None,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        # readline blocks: a child that never gets ready is killed, so the script fails, not hangs.
        watchdog = threading.Timer(ready_timeout, self.proc.kill)
        watchdog.start()
        try:
            for line in self.out:
                if line.startswith("ready"):
                    return
        finally:
            watchdog.cancel()
        raise RuntimeError(f"{name} did not start (exit code {self.proc.poll()})")

    @property
    def out(self) -> IO[str]:
        assert self.proc.stdout is not None
        return self.proc.stdout

    def ask(self, line: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.out.readline()
        if not answer:
            raise RuntimeError(f"{self.name} exited (code {self.proc.poll()})")
        return answer

    def stop(self) -> None:
        if self.proc.stdin is not None:
            # The probe and the reflector end on the end of their input.
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=2)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        with contextlib.suppress(OSError):
            self.out.close()


# -- the trips ------------------------------------------------------------------------------------
@dataclass
class Trip:
    latency: float
    stages: dict[str, float] = field(default_factory=dict)


def parse_answer(answer: str, kind: str) -> tuple[float, float]:
    t_inj, t_resp, last_cmd = answer.split()
    if t_inj == "None" or t_resp == "None":
        raise RuntimeError(f"{kind} trip: no {'injected frame' if t_inj == 'None' else 'response'} observed")
    if kind == "controller" and int(last_cmd) == OPEN:
        # The contactors were already commanded open: the response would not be the safe state.
        raise RuntimeError("controller trip: BENCH_Command was not CLOSE before the injection")
    return float(t_inj), float(t_resp)


def baseline_trip(probe: Child) -> Trip:
    t_inj, t_resp = parse_answer(probe.ask("baseline"), "baseline")
    return Trip(t_resp - t_inj)


class ControllerTrip:
    """One run of the engine on the served station, tripped by the probe once its steps wait."""

    def __init__(self, station: Path, reports: Path) -> None:
        from bench.plan import build_plan  # the engine only in the controller's process

        self.plan = build_plan(SEQUENCE, station)
        self.reports = reports
        self.started: Any = None
        self.result: Any = None
        self.error: BaseException | None = None
        self.marks: dict[str, float] = {}
        self.thread = threading.Thread(target=self._run, name="controller", daemon=True)

    def _listen(self, kind: str, rel: float, fields: dict[str, Any]) -> None:
        # Called synchronously by the engine as it records: the monotonic clock is the loop's clock.
        now = time.monotonic()
        tripped = EventKind.SUPERVISOR_TRIPPED
        if kind == tripped or (kind == EventKind.EMERGENCY_STOP and tripped in self.marks):
            self.marks.setdefault(kind, now)
        elif (
            kind == EventKind.SET
            and fields.get("device") == "bms"
            and fields["requested"].get("cmd_contactors") == OPEN
        ):
            self.marks.setdefault(EventKind.SET, now)

    def _run(self) -> None:
        from bench.runner import run_plan

        try:
            self.result = run_plan(
                self.plan,
                self.reports,
                realtime=True,
                listeners=[self._listen],
                on_started=lambda s: setattr(self, "started", s),
            )
        except BaseException as exc:
            self.error = exc

    def wait_for_steps(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.started.run if self.started is not None else None
            step = run.state.step if run is not None and run.state.phase == "steps" else None
            if step is not None and step.kind == "wait":
                return
            if not self.thread.is_alive():
                raise RuntimeError(f"the run ended before its steps: {self.error or self.result.reason}")
            time.sleep(0.005)
        raise RuntimeError("the run did not reach its wait step")

    def emergency_stop(self) -> None:
        if self.started is not None and self.thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop has just closed
                self.started.loop.call_soon_threadsafe(self.started.run.emergency_stop, "benchmark interrupted")
        self.thread.join(timeout=15)

    def trip(self, probe: Child, rng: random.Random) -> Trip:
        self.thread.start()
        try:
            self.wait_for_steps()
            # A random phase against the 100 ms cycles of the plant's frames and of BENCH_Command.
            time.sleep(rng.uniform(0.02, 0.12))
            t_inj, t_resp = parse_answer(probe.ask("controller"), "controller")
            self.thread.join(timeout=30)
        finally:
            self.emergency_stop()
        if self.error is not None or self.result is None:
            raise RuntimeError(f"controller run failed: {self.error!r}")
        if "supervisor limit" not in self.result.reason:
            raise RuntimeError(f"controller run ended otherwise: {self.result.reason}")
        m = self.marks
        stages = {
            "frame on bus -> limit callback": m[EventKind.SUPERVISOR_TRIPPED] - t_inj,
            "limit callback -> e-stop requested": m[EventKind.EMERGENCY_STOP] - m[EventKind.SUPERVISOR_TRIPPED],
            "e-stop requested -> command sent": m[EventKind.SET] - m[EventKind.EMERGENCY_STOP],
            "command sent -> on bus": t_resp - m[EventKind.SET],
        }
        return Trip(t_resp - t_inj, stages)


# -- the report -----------------------------------------------------------------------------------
def pct(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def row(name: str, values: list[float]) -> str:
    ms = [v * 1e3 for v in values]
    return f"{name:40s} {pct(ms, 50):8.2f} {pct(ms, 99):8.2f} {max(ms):8.2f} {statistics.fmean(ms):8.2f}"


def report(base: list[Trip], ctrl: list[Trip], port: int, load: tuple[float, float]) -> list[Row]:
    b = [t.latency for t in base]
    c = [t.latency for t in ctrl]
    print(f"Limit-violating frame -> first safe-state command, `bench sim serve` socketcand 127.0.0.1:{port}")
    print(f"{len(ctrl)} controller trips, {len(base)} baseline trips, alternating; server-side bus timestamps")
    print(f"{os.cpu_count()} CPUs, load average {load[0]:.1f} at the start, {load[1]:.1f} at the end")
    print()
    print(f"{'path (ms)':40s} {'p50':>8s} {'p99':>8s} {'max':>8s} {'mean':>8s}")
    print(row("bare socketcand client: frame -> reply", b))
    print(row("controller: frame -> contactors OPEN", c))
    print()
    print(
        f"ratio controller / bare: p50 {pct(c, 50) / pct(b, 50):.1f}, p99 {pct(c, 99) / pct(b, 99):.1f}; "
        f"goal controller p99 <= {GOAL_P99_S * 1e3:g} ms: {'met' if pct(c, 99) <= GOAL_P99_S else 'NOT met'}"
    )
    print()
    print("controller breakdown (controller's record events on the shared monotonic clock)")
    for stage in ctrl[0].stages:
        print(row("  " + stage, [t.stages[stage] for t in ctrl]))
    rows = []
    for p, goal in ((50, ""), (99, f"<= {GOAL_P99_S * 1e3:g} ms")):
        ours, baseline = pct(c, p) * 1e3, pct(b, p) * 1e3
        figure = f"limit-violating CAN frame -> safe-state command on the bus, p{p}"
        met = ours <= GOAL_P99_S * 1e3 if goal else None
        rows.append(
            Row(
                "safe_state_latency",
                figure,
                ours,
                baseline,
                "ms",
                ours / baseline,
                "ours / bare socketcand client",
                goal,
                met,
            )
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trips", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--role", choices=["main", "probe", "reflector"], default="main", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    add_arguments(ap)
    args = ap.parse_args()
    if args.smoke:
        args.trips = SMOKE_TRIPS
    if args.role != "main":
        with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
            (run_probe if args.role == "probe" else run_reflector)(args.port)
        return
    # SIGTERM ends the script like Ctrl-C: through the finally blocks that stop the children.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="safe-state-latency-") as tmp_name:
        tmp = Path(tmp_name)
        # A trip latches the station's interlock: keep the latch of these runs away from the user's.
        os.environ["BENCH_STATE_DIR"] = str(tmp / "state")
        os.environ["BENCH_REPORT_PDF"] = "0"  # rendered after the run, outside what is timed
        from bench.interlock import Interlock

        station, port = write_station(tmp)
        me = [sys.executable, str(Path(__file__).resolve()), "--port", str(port), "--role"]
        children: list[Child] = []
        base: list[Trip] = []
        ctrl: list[Trip] = []
        load = 0.0
        failure = ""
        try:
            children.append(
                Child("bench sim serve", [sys.executable, "-m", "bench.cli", "sim", "serve", "--station", str(station)])
            )
            children.append(Child("reflector", [*me, "reflector"], stdin=True))
            probe = Child("probe", [*me, "probe"], stdin=True)
            children.append(probe)
            interlock = Interlock("sim-served")
            load = os.getloadavg()[0]
            t0 = time.monotonic()
            for i in range(args.trips):
                base.append(baseline_trip(probe))
                interlock.check("benchmark trip")
                ctrl.append(ControllerTrip(station, tmp / "reports").trip(probe, rng))
                interlock.reset(f"benchmark trip {i + 1} of {args.trips}", by="benchmarks/safe_state_latency.py")
                if (i + 1) % 50 == 0:
                    print(f"  {i + 1} trips, {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
        except KeyboardInterrupt:
            print(f"interrupted after {len(ctrl)} trips", file=sys.stderr)
        except RuntimeError as exc:  # a child or a trip that failed: said in one line, children stopped
            failure = str(exc)
        finally:
            for child in reversed(children):
                child.stop()
    if failure:
        sys.exit(f"error: after {len(ctrl)} trips: {failure}")
    if len(ctrl) >= 2:
        rows = report(base[: len(ctrl)], ctrl, port, (load, os.getloadavg()[0]))
        if len(ctrl) == args.trips:  # an interrupted run's figures are printed, not tabled
            emit(rows, args)


if __name__ == "__main__":
    main()
