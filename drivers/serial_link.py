"""Byte pipes for serial devices: a real port through pyserial-asyncio-fast, or an in-process device.

Both give the driver the same two ends: an ``asyncio.StreamReader`` to read lines from, and a
``write(bytes)`` function. Station config (``transport:`` of a serial device)::

    transport: {inproc: h2}                                  # simulator registered by the plant
    transport: {url: /dev/ttyUSB0, baudrate: 9600}           # any pyserial URL (socket://, rfc2217://)

In-process, the endpoint is a simulated serial device with the contract::

    open(send: Callable[[bytes], None]) -> Callable[[bytes], None]   # returns its receive function
    close() -> None

``send`` feeds the driver's StreamReader directly, so bytes travel on the event loop with no
pty, thread or file descriptor: a virtual-time run stays deterministic. ``send(b"")`` is the
device hanging up: the reader ends (EOF), as a real port does when its cable is pulled.
(pyserial's ``loop://`` does not work with the asyncio packages, see reference/libraries.md
section 5.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any

from bench.device import ConfigError
from bench.errors import DeviceError

_KEYS = {"inproc", "url", "baudrate", "bytesize", "parity", "stopbits"}


class SerialLink:
    """An open byte pipe: read lines from ``reader``, send with :meth:`write`."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        write: Callable[[bytes], None],
        close: Callable[[], Any],
        port: str,
    ) -> None:
        self.reader = reader
        self._write = write
        self._close = close
        self.port = port
        self.closed = False

    def write(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionResetError(f"{self.port} is closed")
        self._write(data)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        result = self._close()
        if asyncio.iscoroutine(result):
            with contextlib.suppress(Exception):
                await result


def describe(config: Mapping[str, Any]) -> str:
    """The port as a person reads it in an error message."""
    if "inproc" in config:
        return f"inproc:{config['inproc']}"
    return str(config.get("url", "?"))


def check_config(config: Any) -> dict[str, Any]:
    if not isinstance(config, dict):
        raise ConfigError("a serial device needs 'transport: {inproc: NAME}' or 'transport: {url: PORT}'", "transport")
    unknown = sorted(set(config) - _KEYS)
    if unknown:
        raise ConfigError(f"transport: unknown key '{unknown[0]}' (keys: {', '.join(sorted(_KEYS))})", "transport")
    if ("inproc" in config) == ("url" in config):
        raise ConfigError("transport needs exactly one of 'inproc' and 'url'", "transport")
    return dict(config)


async def open_link(device: str, config: Mapping[str, Any], inproc: Mapping[str, Any]) -> SerialLink:
    port = describe(config)
    if "inproc" in config:
        endpoint = str(config["inproc"])
        target = inproc.get(endpoint)
        if target is None:
            raise DeviceError(device, f"no in-process serial device '{endpoint}' (is the station's simulator running?)")
        reader = asyncio.StreamReader()

        hung_up = False

        def to_host(data: bytes) -> None:
            nonlocal hung_up
            if hung_up or reader.at_eof():
                return
            if data:
                reader.feed_data(data)
            else:
                # The device hung up: the port ends for the driver, as a real one does when its cable is pulled.
                hung_up = True
                reader.feed_eof()

        receive = target.open(to_host)

        def close() -> None:
            with contextlib.suppress(Exception):
                target.close()
            if not reader.at_eof():
                reader.feed_eof()

        return SerialLink(reader, receive, close, port)
    try:
        import serial_asyncio_fast  # optional at import time: only a real port needs it
    except ImportError:
        raise DeviceError(
            device, "serial ports need pyserial-asyncio-fast (pip install pyserial-asyncio-fast)"
        ) from None
    options = {k: config[k] for k in ("baudrate", "bytesize", "parity", "stopbits") if k in config}
    try:
        reader, writer = await serial_asyncio_fast.open_serial_connection(url=str(config["url"]), **options)
    except Exception as exc:  # pyserial raises SerialException, OSError, ValueError ...
        raise DeviceError(device, f"cannot open serial port {port}: {exc}") from None

    async def close_writer() -> None:
        writer.close()
        await writer.wait_closed()

    return SerialLink(reader, writer.write, close_writer, port)
