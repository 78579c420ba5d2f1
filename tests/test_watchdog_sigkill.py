"""The controller dies mid-charge (SIGKILL: no signal handler, no cleanup, no safe state) while the
rig runs in another process (`bench sim serve`): the rig must reach its safe state by itself.

Two heartbeats cover this case, both on the rig's side:

* the BMS opens its contactors when the bench's cyclic BENCH_Command stops for longer than its
  command timeout (0.5 s), reporting ``fault_comm``;
* the EA PSB's interface watchdog (``SYST:COMM:WATC``, ``watchdog: 2 s`` in the station) turns
  the supply output off when no SCPI line arrives for 2 s.

The rig is watched from outside the controller without feeding either heartbeat: the supply's
watchdog counts every line it receives, from any client, so the supply is not queried until it
has been seen off. Everything is read on CAN with python-can's socketcand client: BMS_Status for
the contactors, BMS_PackValues for the pack current and the HV link voltage, which is the supply's
output voltage once the contactors are open (the set voltage while the output is on, bleeding
down once it is off). The power analyzer on the supply's output and an ``OUTP?`` to the supply
confirm the end state.

Times are measured on the frames' source timestamps, the serving loop's clock: asyncio's default
loop runs on time.monotonic(), the same CLOCK_MONOTONIC as this process on Linux, so the kill
instant and the frames share one time base and the test's own scheduling delays do not count.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import can
import cantools

from tests.conftest import OVERCHARGE, ROOT, STATE_DIR
from tests.served import DBC, load_yaml, scpi_query, sim_serve, write_stations

# The rig's timeouts under test (simulators/bms_firmware.py BmsParams, stations/sim-served.yaml).
COMMAND_TIMEOUT_S = 0.5
SUPPLY_WATCHDOG_S = 2.0
# What legitimately comes on top: the BMS reacts on its 100 ms physics tick plus its 100 ms
# reaction time, the news travels in the next 100 ms BMS_Status / BMS_PackValues frame, and the
# bench polls the supply every 200 ms, so its last line can precede the kill by that much.
TICK_S = 0.1
REACTION_S = 0.1
FRAME_S = 0.1
SUPPLY_POLL_S = 0.2
# Scheduling jitter of the serving loop on a loaded 2-core CI machine.
JITTER_S = 0.5

CONTACTORS_WITHIN_S = COMMAND_TIMEOUT_S + TICK_S + REACTION_S + FRAME_S + JITTER_S
SUPPLY_WITHIN_S = SUPPLY_WATCHDOG_S + TICK_S + FRAME_S + JITTER_S
# A supply that goes off much sooner was not switched off by its watchdog (e.g. by a server that
# reacts to the closed socket), which is not what this test proves.
SUPPLY_NOT_BEFORE_S = SUPPLY_WATCHDOG_S - SUPPLY_POLL_S - JITTER_S

# The overcharge sequence's charge (sequences/r100/overcharge.yaml defaults), from mid SOC so that
# the BMS's own over-voltage protection cannot open the contactors during the test.
CHARGE_CURRENT_A = 60.0
CHARGER_VOLTAGE_V = 1000.0
START_SOC = 50.0


@dataclass
class Seen:
    killed: float | None = None
    last_command: float = 0.0  # source time of the last BENCH_Command frame
    contactors_open: float | None = None
    fault_comm: bool = False
    fault_cell_ov: bool = False
    supply_on_open_link: float | None = None  # link at the set voltage: contactors open, output on
    supply_off: float | None = None  # link bleeding down: output off
    link_v: float = 0.0
    pack_a: float = 0.0


def _controller(station: Path, reports: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bench.cli", "run", OVERCHARGE, "--station", station, "--reports", reports, "-q"],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            # The interlock latch of a killed run must not land in the user's state folder.
            env={**os.environ, "PYTHONUNBUFFERED": "1", "BENCH_STATE_DIR": str(STATE_DIR)},
        )


def test_sigkilled_controller_leaves_the_rig_safe(tmp_path: Path) -> None:
    st = write_stations(tmp_path, initial_soc=START_SOC)
    psu_config = load_yaml(st.served)["devices"]["psu"]["config"]
    assert psu_config.get("watchdog") == "2 s", "the served station arms the supply's watchdog"
    db: Any = cantools.database.load_file(str(DBC))
    status = db.get_message_by_name("BMS_Status")
    values = db.get_message_by_name("BMS_PackValues")
    command_id = db.get_message_by_name("BENCH_Command").frame_id
    log = tmp_path / "controller.log"

    with sim_serve(st.served):
        bus = can.Bus(interface="socketcand", host="127.0.0.1", port=st.can_port, channel="bench0")
        seen = Seen()
        contactors = "?"

        def read(until: float) -> can.Message | None:
            nonlocal contactors
            msg = bus.recv(max(0.0, min(0.5, until - time.monotonic())))
            if msg is None:
                return None
            if msg.arbitration_id == command_id:
                seen.last_command = msg.timestamp
            elif msg.arbitration_id == status.frame_id:
                sig = status.decode(msg.data)
                contactors = str(sig["contactors"])
                if contactors == "OPEN" and seen.contactors_open is None and seen.killed is not None:
                    seen.contactors_open = msg.timestamp
                    seen.fault_comm = str(sig["fault_comm"]) == "ACTIVE"
                    seen.fault_cell_ov = str(sig["fault_cell_ov"]) == "ACTIVE"
            elif msg.arbitration_id == values.frame_id:
                sig = values.decode(msg.data)
                seen.link_v, seen.pack_a = float(sig["link_voltage"]), float(sig["pack_current"])
            return msg

        proc = _controller(st.served, tmp_path / "reports", log)
        try:
            # Kill while the supply really charges the pack through closed contactors.
            charging = 0
            deadline = time.monotonic() + 40
            while charging < 5 and time.monotonic() < deadline and proc.poll() is None:
                msg = read(deadline)
                if msg is not None and msg.arbitration_id == values.frame_id:
                    closed = contactors == "CLOSED"
                    charging = charging + 1 if closed and seen.pack_a >= 0.95 * CHARGE_CURRENT_A else 0
            assert charging >= 5, f"the run never charged (rc {proc.poll()}):\n{log.read_text()}"
            assert seen.last_command, "the bench's BENCH_Command frames reach the bus"
            os.kill(proc.pid, signal.SIGKILL)
            seen.killed = killed = time.monotonic()
            assert proc.wait(timeout=10) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)

        try:
            deadline = killed + SUPPLY_WITHIN_S + 5.0
            while seen.supply_off is None and time.monotonic() < deadline:
                msg = read(deadline)
                if msg is None or msg.arbitration_id != values.frame_id or seen.contactors_open is None:
                    continue
                if seen.supply_on_open_link is None and seen.link_v > 0.95 * CHARGER_VOLTAGE_V:
                    seen.supply_on_open_link = msg.timestamp
                elif seen.supply_on_open_link is not None and seen.link_v < 0.9 * CHARGER_VOLTAGE_V:
                    seen.supply_off = msg.timestamp
            # A few more frames: the contactors must stay open.
            settle = time.monotonic() + 0.3
            while time.monotonic() < settle:
                read(settle)
        finally:
            bus.shutdown()
        # The supply is off now (or the test fails anyway), so a query no longer matters to it.
        supply_output = scpi_query(st.scpi["psu"], "OUTP?")
        supply_current = scpi_query(st.scpi["psu"], "MEAS:CURR?")
        analyzer = scpi_query(st.scpi["pa"], ":NUM:NORM:NUMB 2;:NUM:NORM:ITEM1 U,1;:NUM:NORM:ITEM2 I,1;:NUM:NORM:VAL?")

    assert not list((tmp_path / "reports").glob("*/result.json")), "the killed controller wrote no result"
    # A frame still in the socket when the controller died is stamped when the server reads it.
    assert seen.last_command < killed + 0.1, "no BENCH_Command after the kill"

    assert seen.contactors_open is not None, f"contactors never reported OPEN (last: {contactors})"
    open_after_kill = seen.contactors_open - killed
    open_after_command = seen.contactors_open - seen.last_command
    assert seen.fault_comm and not seen.fault_cell_ov, "opened on the command timeout, not on a cell fault"
    assert COMMAND_TIMEOUT_S <= open_after_command <= CONTACTORS_WITHIN_S, open_after_command
    assert open_after_kill <= CONTACTORS_WITHIN_S, open_after_kill
    assert contactors == "OPEN", "and they stay open"

    assert seen.supply_on_open_link is not None, "the supply was still on when the contactors opened"
    assert seen.supply_off is not None, f"the supply's output never went off (link at {seen.link_v} V)"
    off_after_kill = seen.supply_off - killed
    assert SUPPLY_NOT_BEFORE_S <= off_after_kill <= SUPPLY_WITHIN_S, off_after_kill
    assert supply_output == "OFF"
    assert abs(float(supply_current.split()[0])) < 0.5, supply_current
    link_v, pa_current = (float(x) for x in analyzer.split(","))
    assert abs(pa_current) < 0.5 and link_v < 0.9 * CHARGER_VOLTAGE_V, analyzer
    assert abs(seen.pack_a) < 0.5, seen.pack_a
    print(
        f"contactors OPEN {open_after_kill * 1000:.0f} ms after the kill "
        f"({open_after_command * 1000:.0f} ms after the last BENCH_Command); "
        f"supply output off {off_after_kill * 1000:.0f} ms after the kill"
    )
