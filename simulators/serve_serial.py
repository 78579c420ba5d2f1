"""A simulated serial device on a pseudo-terminal, under a stable path.

The host opens the pty's slave side like any serial port (``/dev/ttyUSB0`` on a physical
bench); the server owns the master side. ``os.openpty`` names the slave ``/dev/pts/N`` with a
number that changes every time, so the server publishes a symlink ``<directory>/<endpoint>``
that a station file can name.

The serial device contract (see simulators/h2_sensor.py)::

    open(send: Callable[[bytes], None]) -> Callable[[bytes], None]   # returns its receive function
    close() -> None

A device that hangs up (``send(b"")``, a pulled cable) takes the pty away: the host's port
fails on its next read and the link is removed.

The device is opened when a host opens the port and closed when the host closes it, as the
in-process link does, so behaviour timed from "port opened" (a sensor that goes silent) is the
same on both. Whether a host has the port open is read from the master: with no slave open it
polls POLLHUP. While nobody has it open, the server checks again every :data:`ATTACH_POLL_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import tty
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ATTACH_POLL_S = 0.05


class PtyServer:
    def __init__(self, name: str, device: Any, link: Path) -> None:
        self.name = name
        self.device = device
        self.link = link
        self.slave_name = ""
        self._master = -1
        self._poll = select.poll()
        self._receive: Any = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        master, slave = os.openpty()
        # Raw on the master too: no echo and no CR/LF translation of the device's bytes.
        tty.setraw(master)
        self.slave_name = os.ttyname(slave)
        # Only the host holds the slave open, so POLLHUP on the master tells "nobody attached".
        os.close(slave)
        os.set_blocking(master, False)
        self._master = master
        self._poll.register(master, select.POLLIN)
        self.link.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()
        self.link.symlink_to(self.slave_name)
        self._watch()

    def _attached(self) -> bool:
        return not any(ev & select.POLLHUP for _, ev in self._poll.poll(0))

    def _watch(self) -> None:
        """While detached: look for a host every ATTACH_POLL_S (the master reads EIO, no add_reader)."""
        self._timer = None
        if self._master < 0 or self._loop is None:
            return
        if self._attached():
            self._receive = self.device.open(self._send)
            self._loop.add_reader(self._master, self._readable)
        else:
            self._timer = self._loop.call_later(ATTACH_POLL_S, self._watch)

    def _detach(self) -> None:
        if self._loop is not None and self._master >= 0:
            self._loop.remove_reader(self._master)
        if self._receive is not None:
            self._receive = None
            with contextlib.suppress(Exception):
                self.device.close()
        self._watch()

    def _readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except BlockingIOError:
            return
        except OSError:  # EIO: the host closed the port
            self._detach()
            return
        if not data:
            self._detach()
            return
        if self._receive is not None:
            try:
                self._receive(data)
            except Exception:
                log.exception("%s: device failed on %r", self.name, data)

    def _send(self, data: bytes) -> None:
        if not data:
            self._hang_up()
            return
        # Bytes sent while nobody listens are lost, as on a real line; they must not wait in the
        # pty's buffer and reach the next host late.
        if self._master < 0 or not self._attached():
            return
        try:
            os.write(self._master, data)
        except BlockingIOError:
            log.warning("%s: host does not read; %d bytes dropped", self.name, len(data))
        except OSError:
            pass

    def _hang_up(self) -> None:
        """The device hung up (``send(b"")``): the port goes away for good, like a pulled USB adapter.

        Closing the master makes the host's next read fail (EIO), and the link disappears.
        """
        if self._master < 0:
            return
        if self._loop is not None:
            self._loop.remove_reader(self._master)
        self._receive = None
        self._poll.unregister(self._master)
        os.close(self._master)
        self._master = -1
        with contextlib.suppress(FileNotFoundError):
            if self.link.is_symlink():
                self.link.unlink()

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._master >= 0:
            if self._loop is not None:
                self._loop.remove_reader(self._master)
            with contextlib.suppress(Exception):
                self.device.close()
            self._receive = None
            os.close(self._master)
            self._master = -1
        with contextlib.suppress(FileNotFoundError):
            if self.link.is_symlink():
                self.link.unlink()
