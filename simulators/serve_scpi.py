"""SCPI instruments on raw TCP sockets, the way LAN instruments serve port 5025.

One port per instrument. Each received line ('\\n' terminated, a trailing '\\r' ignored) goes
to the simulator's ``scpi(line)``, the same call the in-process transport makes; a reply, if
any, goes back '\\n' terminated. pyvisa reaches it as ``TCPIP::127.0.0.1::PORT::SOCKET``.
Several connections may be open at once (like a real instrument's socket server); they share
the instrument's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

log = logging.getLogger(__name__)

MAX_LINE = 64 * 1024


class ScpiServer:
    def __init__(self, name: str, handler: Any, host: str = "127.0.0.1", port: int = 5025) -> None:
        self.name = name
        self.handler = handler
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_LINE)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                try:
                    raw = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError:
                    return  # the client closed
                except asyncio.LimitOverrunError:
                    log.warning("%s: line longer than %d bytes; closing the connection", self.name, MAX_LINE)
                    return
                line = raw.decode("ascii", "replace").strip()
                if not line:
                    continue
                try:
                    reply = self.handler.scpi(line)
                except Exception:  # a parser bug must not take the server down with it
                    log.exception("%s: simulator failed on %r", self.name, line)
                    continue
                if reply is not None:
                    writer.write(str(reply).encode("ascii", "replace") + b"\n")
                    await writer.drain()
        except (ConnectionError, OSError):
            return
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        with contextlib.suppress(Exception):
            await self._server.wait_closed()
        self._server = None
