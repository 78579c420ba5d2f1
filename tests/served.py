"""Helpers for the served-transport tests: station copies on free ports, and `bench sim serve` as a fixture.

Every test gets its own ports and its own pty folder, so served tests can run beside each
other and beside a developer's own `bench sim serve` on the default ports.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from tests.conftest import ROOT
from tests.ports import free_ports

SERVED_STATION = ROOT / "stations" / "sim-served.yaml"
SIM_STATION = ROOT / "stations" / "sim.yaml"
DBC = ROOT / "dbc" / "bms.dbc"
# A pack that reaches its over-voltage threshold ~15 s after the charge starts, so that a served
# (real-time) overcharge run takes well under a minute; the start-SOC check is widened to match.
HIGH_SOC = 99.4
# The served DAQ's mainframes, in the order of its config (transport, then mainframes).
DAQ_SCPI = ("daq", "daq2", "daq3", "daq4")
# SCPI endpoints of the simulated station besides psu and pa (the DAQ's get their ports below;
# `cells` is the cell emulator's bus, which the bms_cells plant registers).
OTHER_SCPI = ("fib", "emu", "chamber", "fcio", "cells", *DAQ_SCPI)
SHORT_OVERCHARGE = ["-p", "soc_max=100 %", "-p", "observation=5 s"]


def load_yaml(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = YAML(typ="safe").load(path.read_text())
    return data


def dump_yaml(data: dict[str, Any], path: Path) -> Path:
    yaml = YAML(typ="safe")
    yaml.default_flow_style = False
    with path.open("w") as f:
        yaml.dump(data, f)
    return path


@dataclass
class Stations:
    inproc: Path
    served: Path
    can_port: int
    scpi: dict[str, int]
    serial_dir: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def visa(self, endpoint: str) -> str:
        return f"TCPIP::127.0.0.1::{self.scpi[endpoint]}::SOCKET"


def write_stations(tmp: Path, initial_soc: float = HIGH_SOC, psu: dict[str, Any] | None = None) -> Stations:
    """Copies of sim.yaml and sim-served.yaml with the same plant, on free ports, in ``tmp``.

    ``psu`` replaces keys of the served station's psu config (e.g. its transport).
    """
    tmp.mkdir(parents=True, exist_ok=True)
    sim = load_yaml(SIM_STATION)
    for entry in [*sim["devices"].values(), *sim["simulators"]]:
        if "dbc" in entry["config"]:
            entry["config"]["dbc"] = str(ROOT / "dbc" / Path(entry["config"]["dbc"]).name)
    for s in sim["simulators"]:
        if s["kind"] == "bms_pack":
            s["config"]["initial_soc_pct"] = initial_soc
    inproc = dump_yaml(sim, tmp / "sim.yaml")

    can_port, psu_port, pa_port, *others = free_ports(3 + len(OTHER_SCPI))
    serial_dir = tmp / "serial"
    served = load_yaml(SERVED_STATION)
    dev = served["devices"]
    dev["bms"]["config"]["dbc"] = str(DBC)
    dev["bms"]["config"]["can"]["port"] = can_port
    dev["psu"]["config"]["transport"]["visa"] = f"TCPIP::127.0.0.1::{psu_port}::SOCKET"
    dev["pa"]["config"]["transport"]["visa"] = f"TCPIP::127.0.0.1::{pa_port}::SOCKET"
    dev["h2"]["config"]["transport"]["url"] = str(serial_dir / "h2")
    other_ports = dict(zip(OTHER_SCPI, others, strict=True))
    daq = dev["daq"]["config"]
    for frame, endpoint in zip([daq, *daq["mainframes"]], DAQ_SCPI, strict=True):
        frame["transport"]["visa"] = f"TCPIP::127.0.0.1::{other_ports[endpoint]}::SOCKET"
    dev["psu"]["config"].update(psu or {})
    served["serve"].update(
        simulators_from=str(inproc),
        can={"port": can_port, "channels": ["bench0"]},
        # Every SCPI endpoint on a free port, so that served tests never collide.
        scpi={"psu": psu_port, "pa": pa_port, **dict(zip(OTHER_SCPI, others, strict=True))},
        serial_dir=str(serial_dir),
    )
    return Stations(
        inproc,
        dump_yaml(served, tmp / "sim-served.yaml"),
        can_port,
        {"psu": psu_port, "pa": pa_port, **dict(zip(OTHER_SCPI, others, strict=True))},
        serial_dir,
    )


def served_on_free_ports(served: Path, tmp: Path) -> tuple[Path, dict[int, int]]:
    """A copy of the served station ``served`` in ``tmp`` whose every port is a free one.

    Each port of its ``serve:`` section (CAN and SCPI) is replaced by a free port, in the section
    and in the devices that reach it; relative paths (DBCs, ``simulators_from``) become absolute.
    A device port the section does not serve is a KeyError: the file reaches nothing it serves.
    Returns the copy and the map from each port of the file to the port of the copy.
    """
    tmp.mkdir(parents=True, exist_ok=True)
    station = load_yaml(served)
    serve = station["serve"]
    old = [serve["can"]["port"], *serve.get("scpi", {}).values()]
    moved = dict(zip(old, free_ports(len(old)), strict=True))
    serve["can"]["port"] = moved[serve["can"]["port"]]
    serve["scpi"] = {name: moved[port] for name, port in serve.get("scpi", {}).items()}
    serve["simulators_from"] = str((served.parent / serve["simulators_from"]).resolve())

    def repoint(node: Any) -> None:
        # Every CAN port and TCPIP resource of a device, nested ones (a DAQ's mainframes) too.
        if isinstance(node, list):
            for item in node:
                repoint(item)
        if not isinstance(node, dict):
            return
        if isinstance(node.get("can"), dict) and "port" in node["can"]:
            node["can"]["port"] = moved[node["can"]["port"]]
        if str(node.get("visa", "")).startswith("TCPIP::"):
            prefix, port, suffix = node["visa"].rsplit("::", 2)
            node["visa"] = f"{prefix}::{moved[int(port)]}::{suffix}"
        for value in node.values():
            repoint(value)

    for device in station["devices"].values():
        config = device["config"]
        if "dbc" in config:
            config["dbc"] = str((served.parent / config["dbc"]).resolve())
        repoint(config)
    return dump_yaml(station, tmp / served.name), moved


@dataclass
class Served:
    proc: subprocess.Popen[str]
    banner: list[str]


@contextlib.contextmanager
def sim_serve(station: Path, *args: str, ready_timeout: float = 30.0) -> Iterator[Served]:
    """`bench sim serve` in a subprocess until the block ends; always stopped, killed if it hangs."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "sim", "serve", "--station", str(station), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    banner: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + ready_timeout
        # readline blocks; a watchdog kills a server that never gets ready so the test fails, not hangs.
        watchdog = threading.Timer(ready_timeout, proc.kill)
        watchdog.start()
        try:
            for line in proc.stdout:
                banner.append(line.rstrip("\n"))
                if line.startswith("ready"):
                    break
        finally:
            watchdog.cancel()
        if not banner or not banner[-1].startswith("ready") or time.monotonic() > deadline:
            raise AssertionError("bench sim serve did not start:\n" + "\n".join(banner))
        yield Served(proc, banner)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()


class MuteInstrument:
    """A TCP port that accepts connections and reads lines but never answers (a hung instrument)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port: int = self.sock.getsockname()[1]
        self.received: list[str] = []
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        buf = b""
        with contextlib.suppress(OSError):
            while chunk := conn.recv(4096):
                buf += chunk
                *lines, buf = buf.split(b"\n")
                self.received += [line.decode(errors="replace").strip() for line in lines]

    def close(self) -> None:
        self._stop.set()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.close()
        self.sock.close()
        self._thread.join(timeout=2)


def scpi_query(port: int, text: str, timeout: float = 2.0) -> str:
    """One query straight to a served instrument, bypassing the bench (to check what it ended as)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(text.encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        return buf.decode().strip()
