"""`bench sim serve` itself: its endpoints, each protocol from a stock client, clean stops, bad input."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import can
import pytest
import serial
from can.interfaces.socketcand.socketcand import SocketCanDaemonBus

from tests.conftest import OVERCHARGE, ROOT, bench
from tests.served import OTHER_SCPI, Served, Stations, load_yaml, scpi_query, sim_serve, write_stations


@pytest.fixture(scope="module")
def stations(tmp_path_factory: pytest.TempPathFactory) -> Stations:
    return write_stations(tmp_path_factory.mktemp("cli"), initial_soc=50)


@pytest.fixture(scope="module")
def served(stations: Stations) -> Iterator[Served]:
    with sim_serve(stations.served) as s:
        yield s


def test_prints_one_line_per_endpoint(served: Served, stations: Stations) -> None:
    text = "\n".join(served.banner)
    assert f"socketcand 127.0.0.1:{stations.can_port} channel bench0" in text
    assert stations.visa("psu") in text and stations.visa("pa") in text
    assert str(stations.serial_dir / "h2") in text
    # The rig's other instruments (fault boxes, pack emulation, chamber) and the fuel-cell plant's
    # exhaust analyser are served too, each on the port the station gives it.
    for endpoint in OTHER_SCPI:
        assert stations.visa(endpoint) in text
    assert str(stations.serial_dir / "h2x") in text
    kinds = [line.split()[0] for line in served.banner[1:-1]]
    assert sorted(kinds) == ["can"] + ["scpi"] * (2 + len(OTHER_SCPI)) + ["serial"] * 2


def test_socketcand_client_receives_frames_and_gets_uds_answers(served: Served, stations: Stations) -> None:
    bus = can.Bus(interface="socketcand", host="127.0.0.1", port=stations.can_port, channel="bench0")
    try:
        seen: set[int] = set()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not {0x100, 0x110} <= seen:
            msg = bus.recv(0.5)
            if msg is not None:
                seen.add(msg.arbitration_id)
                assert not msg.is_extended_id and msg.timestamp > 0
        assert {0x100, 0x110} <= seen, f"BMS frames bridged from the in-process channel: {sorted(seen)}"
        # UDS ReadDataByIdentifier F195 (software version) as an ISO-TP single frame.
        bus.send(can.Message(arbitration_id=0x7E0, is_extended_id=False, data=bytes([3, 0x22, 0xF1, 0x95, 0, 0, 0, 0])))
        reply = None
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and reply is None:
            msg = bus.recv(0.5)
            if msg is not None and msg.arbitration_id == 0x7E8:
                reply = msg
        assert reply is not None, "the BMS answered over the served CAN"
        # "BMS-SIM 1.0.0" needs 16 bytes with the header: an ISO-TP first frame (0x1, length 0x010).
        assert bytes(reply.data)[:5] == bytes([0x10, 0x10, 0x62, 0xF1, 0x95]), bytes(reply.data).hex()
    finally:
        bus.shutdown()


def test_unknown_channel_is_refused(served: Served, stations: Stations) -> None:
    with pytest.raises(can.CanError, match="could not open bus can7") as refused:
        can.Bus(interface="socketcand", host="127.0.0.1", port=stations.can_port, channel="can7")
    # python-can's socketcand client raises from its constructor with its socket still open: the
    # half-built bus is in the traceback; its socket is closed here, not by the garbage collector.
    tb: TracebackType | None = refused.tb
    while tb is not None:
        bus = tb.tb_frame.f_locals.get("self")
        if isinstance(bus, SocketCanDaemonBus):
            vars(bus)["_SocketCanDaemonBus__socket"].close()  # its private attribute, name-mangled
        tb = tb.tb_next


def test_scpi_socket(served: Served, stations: Stations) -> None:
    assert scpi_query(stations.scpi["psu"], "*IDN?").startswith("EA Elektro-Automatik,PSB")
    assert scpi_query(stations.scpi["pa"], "*IDN?").startswith("YOKOGAWA,WT5000")


def test_serial_sensor_on_the_pty(served: Served, stations: Stations) -> None:
    port = serial.Serial(str(stations.serial_dir / "h2"), 19200, timeout=3)
    try:
        port.write(b"ID?\r\n")
        lines = [port.readline() for _ in range(3)]
    finally:
        port.close()
    assert any(line.startswith(b"$ID,H2scan,") for line in lines), lines
    assert any(line.startswith(b"$H2,") for line in lines), "the sensor streams while the port is open"


def _serve_proc(station: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "sim", "serve", "--station", str(station), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stops_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    st = write_stations(tmp_path)
    proc = _serve_proc(st.served)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("ready"):
                break
        assert (st.serial_dir / "h2").is_symlink()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopped" in out and "Traceback" not in err
    assert not (st.serial_dir / "h2").exists(), "the pty link is removed"
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", st.scpi["psu"])) != 0, "the ports are closed"


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    st = write_stations(tmp_path)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", st.scpi["psu"]))
        blocker.listen()
        r = bench("sim", "serve", "--station", st.served, timeout=30)
    assert r.rc == 3
    assert r.err.startswith("error: cannot serve: ") and "address already in use" in r.err.lower(), r.err
    assert len(r.err.strip().splitlines()) == 1
    assert not (st.serial_dir / "h2").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "nope.initial_soc_pct=90"], "no simulator 'nope'"),
        (["--set", "bms_pack.initial_soc_pct=500"], "initial_soc_pct must be"),
        (["--fault", "no_such_fault"], "unknown fault 'no_such_fault'"),
    ],
)
def test_bad_options(tmp_path: Path, args: list[str], message: str) -> None:
    st = write_stations(tmp_path)
    r = bench("sim", "serve", "--station", st.served, *args, timeout=30)
    assert r.rc == 2, r.out + r.err
    assert message in r.err and len(r.err.strip().splitlines()) == 1, r.err


# Each served station and the in-process station whose plants it serves.
SERVED_PAIRS = {"sim-served.yaml": "sim.yaml", "sim-cells-served.yaml": "sim-cells.yaml"}


def test_station_templates_validate() -> None:
    r = bench("validate", ROOT / "stations" / "lab-example.yaml", *(ROOT / "stations" / s for s in SERVED_PAIRS))
    assert r.rc == 0, r.err


def _without_pipes(device: dict[str, Any]) -> dict[str, Any]:
    """A device section without what only says where the device is: its doc, transports, CAN endpoint."""

    def strip(node: Any) -> Any:
        if isinstance(node, list):
            return [strip(item) for item in node]
        if not isinstance(node, dict):
            return node
        out = {k: strip(v) for k, v in node.items() if k not in ("doc", "transport")}
        if isinstance(out.get("can"), dict):
            out["can"] = {k: v for k, v in out["can"].items() if k not in ("interface", "host", "port")}
        return out

    return dict(strip(device))


@pytest.mark.parametrize(("served", "inproc"), SERVED_PAIRS.items())
def test_a_served_station_has_the_in_process_devices_with_other_pipes(served: str, inproc: str) -> None:
    """Same drivers, configs and safe states as the station it serves; only the pipes differ."""
    served_st = load_yaml(ROOT / "stations" / served)
    inproc_st = load_yaml(ROOT / "stations" / inproc)
    assert served_st["serve"]["simulators_from"] == inproc
    assert served_st["virtual_time"] is False and inproc_st["virtual_time"] is True
    for name, device in served_st["devices"].items():
        assert name in inproc_st["devices"], f"{served}: {name} is not a device of {inproc}"
        assert _without_pipes(device) == _without_pipes(inproc_st["devices"][name]), name
    # Every port a device reaches is one the server opens.
    serve = served_st["serve"]
    text = (ROOT / "stations" / served).read_text()
    for port in [serve["can"]["port"], *serve["scpi"].values()]:
        assert f"port: {port}," in text or f"::{port}::SOCKET" in text, port


def test_fault_on_a_served_station_points_to_the_server() -> None:
    run = bench("run", OVERCHARGE, "--station", ROOT / "stations" / "sim-served.yaml", "--fault", "slow_reaction")
    assert run.rc == 2
    assert "bench sim serve --station <this file> --fault slow_reaction" in run.err
