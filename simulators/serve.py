"""Serve simulated plants over real transports: CAN by socketcand, SCPI on TCP, serial on ptys.

``bench sim serve`` (bench/cli_sim.py) builds the plants with the same ``build_plant`` entry
point the engine uses and hands them here with what they registered. This module knows
nothing of the engine or the drivers: it only moves CAN frames, SCPI lines and bytes.

An endpoint a plant registers is served by what it offers: ``scpi(line)`` -> a TCP port;
``open(send)`` / ``close()`` -> a pty.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulators.serve_can import SocketcandServer
from simulators.serve_scpi import ScpiServer
from simulators.serve_serial import PtyServer


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    can_port: int = 29536
    can_channels: list[str] = field(default_factory=lambda: ["bench0"])
    # SCPI endpoint -> TCP port; endpoints not listed get the ports after the highest one listed.
    scpi_ports: dict[str, int] = field(default_factory=dict)
    scpi_base_port: int = 5025
    serial_dir: Path = Path("/tmp/hil-bench-sim")
    port_offset: int = 0


@dataclass(frozen=True)
class Endpoint:
    kind: str  # can | scpi | serial
    name: str
    address: str  # what a station file puts in its transport
    detail: str = ""


def is_scpi(obj: Any) -> bool:
    return callable(getattr(obj, "scpi", None))


def is_serial(obj: Any) -> bool:
    return callable(getattr(obj, "open", None)) and callable(getattr(obj, "close", None))


class SimServer:
    def __init__(self, plants: Sequence[Any], registered: Mapping[str, Any], options: ServeOptions) -> None:
        self.plants = list(plants)
        self.registered = dict(registered)
        self.opt = options
        self._servers: list[Any] = []
        self.endpoints: list[Endpoint] = []

    def _scpi_port(self, name: str, taken: set[int]) -> int:
        if name in self.opt.scpi_ports:
            return self.opt.scpi_ports[name] + self.opt.port_offset
        port = max([*self.opt.scpi_ports.values(), self.opt.scpi_base_port - 1]) + 1 + self.opt.port_offset
        while port in taken:
            port += 1
        return port

    async def start(self) -> list[Endpoint]:
        """Start the plants, then every server; on any failure stop what was started and raise."""
        try:
            for plant in self.plants:
                await plant.start()
            host = self.opt.host
            can_srv = SocketcandServer(self.opt.can_channels, host, self.opt.can_port + self.opt.port_offset)
            await can_srv.start()
            self._servers.append(can_srv)
            for ch in self.opt.can_channels:
                self.endpoints.append(
                    Endpoint(
                        "can",
                        ch,
                        f"socketcand {host}:{can_srv.port} channel {ch}",
                        f"can: {{interface: socketcand, host: {host}, port: {can_srv.port}, channel: {ch}}}",
                    )
                )
            taken = {can_srv.port}
            for name, obj in self.registered.items():
                if is_scpi(obj):
                    scpi = ScpiServer(name, obj, host, self._scpi_port(name, taken))
                    await scpi.start()
                    taken.add(scpi.port)
                    self._servers.append(scpi)
                    resource = f"TCPIP::{host}::{scpi.port}::SOCKET"
                    self.endpoints.append(Endpoint("scpi", name, resource, f'transport: {{visa: "{resource}"}}'))
                elif is_serial(obj):
                    pty = PtyServer(name, obj, self.opt.serial_dir / name)
                    await pty.start()
                    self._servers.append(pty)
                    self.endpoints.append(
                        Endpoint("serial", name, str(pty.link), f"transport: {{url: {pty.link}}} ({pty.slave_name})")
                    )
        except BaseException:
            await self.stop()
            raise
        return self.endpoints

    async def stop(self) -> None:
        servers, self._servers = self._servers, []
        for server in reversed(servers):
            with contextlib.suppress(Exception):
                await server.stop()
        for plant in reversed(self.plants):
            with contextlib.suppress(Exception):
                await plant.stop()
