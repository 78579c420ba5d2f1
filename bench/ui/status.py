"""The bench's status before a run: its interlock, who holds it, its devices and its instruments' calibration.

Everything is read from where the run path reads it (the interlock latch, the station lock, the
station file's equipment register), so the page shows what the next run will meet. A device's
state is what can be known without connecting it: an in-process simulator, a TCP endpoint that
answers or not, a serial port or CAN interface present or not. While a run holds the station its
devices are not probed (they are the run's).
"""

from __future__ import annotations

import datetime as dt
import socket
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.errors import BenchError
from bench.interlock import Interlock, reset_station
from bench.report.equipment import calibration_status
from bench.station import DeviceEntry, load_station
from bench.stationlock import holder

PROBE_TIMEOUT_S = 0.5  # a LAN instrument answers a TCP connect in milliseconds
# What ``state`` of a device can be; the page translates these words.
SIMULATED, REACHABLE, UNREACHABLE, PRESENT, MISSING, UNCHECKED, IN_USE = (
    "simulated",
    "reachable",
    "unreachable",
    "present",
    "missing",
    "unchecked",
    "in_use",
)
DEVICE_STATES = (SIMULATED, REACHABLE, UNREACHABLE, PRESENT, MISSING, UNCHECKED, IN_USE)


def _visa_socket(resource: str) -> tuple[str, int] | None:
    """(host, port) of a raw-socket VISA resource ``TCPIP[n]::HOST::PORT::SOCKET``; None for any other."""
    parts = resource.split("::")
    if len(parts) == 4 and parts[0].upper().startswith("TCPIP") and parts[3].upper() == "SOCKET" and parts[2].isdigit():
        return parts[1], int(parts[2])
    return None


def _endpoint(entry: DeviceEntry) -> tuple[str, tuple[str, int] | Path | None, bool]:
    """(endpoint text, what to probe: (host, port), a path that must exist, or None; in-process)."""
    cfg: Mapping[str, Any] = entry.config
    transport = cfg.get("transport")
    if isinstance(transport, Mapping):
        if "inproc" in transport:
            return f"in-process {transport['inproc']}", None, True
        if "visa" in transport:
            resource = str(transport["visa"])
            return resource, _visa_socket(resource), False
        if "url" in transport:
            url = str(transport["url"])
            if "://" in url:  # a pyserial URL: socket://, rfc2217://
                parts = urlsplit(url)
                try:
                    port = parts.port
                except ValueError:
                    port = None
                return url, (parts.hostname, port) if parts.hostname and port else None, False
            return url, Path(url), False
    can = cfg.get("can")
    if isinstance(can, Mapping):
        interface, channel = str(can.get("interface", "")), str(can.get("channel", ""))
        if interface == "inproc":
            return f"in-process CAN {channel}", None, True
        if interface == "socketcand" and can.get("host") and can.get("port"):
            host, port = str(can["host"]), int(can["port"])
            return f"socketcand {host}:{port} {channel}", (host, port), False
        if interface == "socketcan":
            return f"socketcan {channel}", Path("/sys/class/net") / channel, False
        return f"{interface} {channel}".strip(), None, False
    return "", None, False


def _probe(target: tuple[str, int] | Path | None) -> tuple[str, str]:
    """(state, detail) of a device endpoint, without speaking its protocol."""
    if target is None:
        return UNCHECKED, "not checked before a run (connected when a run starts)"
    if isinstance(target, Path):
        return (PRESENT, str(target)) if target.exists() else (MISSING, f"{target}: no such device")
    host, port = target
    t0 = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        return UNREACHABLE, f"{host}:{port}: {exc.strerror or exc}"
    return REACHABLE, f"{host}:{port} answered in {(time.monotonic() - t0) * 1000:.0f} ms"


def _devices(devices: Mapping[str, DeviceEntry], busy: bool) -> list[dict[str, Any]]:
    found = {name: _endpoint(entry) for name, entry in devices.items()}
    probed = {name: target for name, (_, target, inproc) in found.items() if not inproc and not busy}
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(probed)))) as pool:
        results = dict(zip(probed, pool.map(_probe, probed.values()), strict=True))
    out = []
    for name, entry in devices.items():
        text, _, inproc = found[name]
        if inproc:
            state, detail = SIMULATED, "in-process simulator, started with the run"
        elif busy:
            state, detail = IN_USE, "connected by the run that holds the station"
        else:
            state, detail = results[name]
        out.append(
            {"name": name, "driver": entry.driver, "endpoint": text, "state": state, "detail": detail, "doc": entry.doc}
        )
    return out


def station_status(station_path: Path) -> dict[str, Any]:
    """The bench as the page shows it before a run (a station file that does not load: LoadError)."""
    st = load_station(station_path)
    m = st.model
    try:
        latch = Interlock(m.id).state()
    except BenchError as exc:  # the state folder takes no file: no run starts (fail closed)
        latch = {"reason": str(exc), "t_utc": "", "run_id": ""}
    try:
        by = holder(m.id)
    except (BenchError, OSError):
        by = None
    today = dt.datetime.now(dt.UTC).date()
    equipment = [
        {
            "asset_id": c.instrument.asset_id,
            "device": c.instrument.device,
            "maker": c.instrument.maker,
            "model": c.instrument.model,
            "serial": c.instrument.serial,
            "due": c.instrument.calibration.due.isoformat() if c.instrument.calibration else None,
            "ok": c.ok,
            "text": c.text,
        }
        for c in calibration_status(m.equipment, today)
    ]
    return {
        "id": m.id,
        "title": m.title,
        "simulated": m.simulated,
        "virtual_time": m.virtual_time,
        "interlock": {
            "tripped": latch is not None,
            "reason": (latch or {}).get("reason"),
            "at": (latch or {}).get("t_utc"),
            "run_id": (latch or {}).get("run_id"),
        },
        "lock": {"held": by is not None, "by": by},
        "devices": _devices(m.devices, by is not None),
        "equipment": equipment,
    }


def reset_interlock(station_path: Path, reason: str, by: str) -> str:
    """Reset the station's latched interlock as ``bench reset-interlock`` does (the same log line); the outcome.

    An empty reason is refused (LoadError, one line); so is a reset the state folder cannot record.
    """
    return reset_station(load_station(station_path).model.id, reason, by, asked_as="the reason")
