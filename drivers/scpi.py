"""SCPI instruments: one transport, one lock, read-back of every setpoint, error queue drained.

The transport is a pipe for SCPI text. ``inproc`` hands the text to a simulator's SCPI parser
in the same process (the same text a real instrument would get); network and serial
transports plug in beside it.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Mapping
from typing import Any

from bench.device import ConfigError
from bench.errors import DeviceError


class ScpiTransport(abc.ABC):
    @abc.abstractmethod
    async def write(self, text: str) -> None: ...

    @abc.abstractmethod
    async def query(self, text: str) -> str: ...

    async def close(self) -> None:  # noqa: B027 - transports without resources need nothing
        pass


class InProcTransport(ScpiTransport):
    """Calls ``handler.scpi(line)`` of a simulator registered under an in-process endpoint name."""

    def __init__(self, handler: Any) -> None:
        self._handler = handler

    async def write(self, text: str) -> None:
        self._handler.scpi(text)

    async def query(self, text: str) -> str:
        reply = self._handler.scpi(text)
        if reply is None:
            raise TimeoutError(f"no reply to '{text}'")
        return str(reply)


def open_transport(device: str, config: Mapping[str, Any], inproc: Mapping[str, Any]) -> ScpiTransport:
    if "inproc" in config:
        endpoint = str(config["inproc"])
        if endpoint not in inproc:
            raise DeviceError(device, f"no in-process instrument '{endpoint}' (is the station's simulator running?)")
        return InProcTransport(inproc[endpoint])
    raise ConfigError("transport needs 'inproc: <endpoint>'", "transport")


class ScpiInstrument:
    """Serialises all traffic to one instrument and turns instrument errors into step errors."""

    def __init__(self, device: str, transport: ScpiTransport) -> None:
        self.device = device
        self.transport = transport
        # One conversation at a time: interleaved queries get each other's replies.
        self.lock = asyncio.Lock()

    async def query(self, text: str) -> str:
        async with self.lock:
            try:
                return (await self.transport.query(text)).strip()
            except TimeoutError as exc:
                raise DeviceError(self.device, f"timeout waiting for the reply to '{text}': {exc}") from None

    async def write(self, text: str) -> None:
        async with self.lock:
            await self.transport.write(text)

    async def check_errors(self, context: str) -> None:
        """Drain ``SYST:ERR?``; the first error fails the command group with the instrument's words."""
        first: str | None = None
        for _ in range(32):
            reply = await self.query("SYST:ERR?")
            code = reply.split(",", 1)[0].strip()
            if code in ("0", "+0"):
                break
            first = first or reply
        if first is not None:
            raise DeviceError(self.device, f"instrument error after {context}: {first}")

    async def identify(self) -> dict[str, str]:
        idn = await self.query("*IDN?")
        parts = [p.strip() for p in idn.split(",")]
        parts += [""] * (4 - len(parts))
        return {"maker": parts[0], "model": parts[1], "serial": parts[2], "firmware": ",".join(parts[3:]).strip(",")}


def parse_number(reply: str) -> float:
    """``'812.40 V'`` or ``'8.124E+02'`` -> 812.4."""
    text = reply.strip().split()[0] if reply.strip() else ""
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"not a number: '{reply}'") from None
