"""SCPI instruments: one transport, one lock, read-back of every setpoint, error queue drained.

The transport is a pipe for SCPI text. ``inproc`` hands the text to a simulator's SCPI parser
in the same process (the same text a real instrument would get); ``visa`` opens a VISA
resource through pyvisa with the pure-Python pyvisa-py backend (no vendor VISA needed)::

    transport: {inproc: psu}
    transport: {visa: "TCPIP::192.168.0.20::5025::SOCKET", timeout: 2 s}
    transport: {visa: "ASRL/dev/ttyUSB0::INSTR", timeout: 2 s, read_termination: "\\n", baud_rate: 115200}

pyvisa blocks, so every pyvisa call runs off the event loop, in one worker thread per
instrument. On a ``TCPIP::host::port::SOCKET`` resource pyvisa-py opens a plain TCP socket: pyvisa
opens, configures and closes it, and the writes and queries run on the event loop on that
socket, without a thread hop. Either way the instrument's lock is held for each command:
concurrent queries to one resource get each other's replies (reference/libraries.md section 4).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import queue
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from bench.device import ConfigError
from bench.errors import DeviceError, ExpressionError
from bench.units import TIME, parse_quantity


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


_T = TypeVar("_T")
_VISA_KEYS = {"visa", "timeout", "read_termination", "write_termination", "baud_rate", "backend"}
_rm_lock = threading.Lock()
_resource_managers: dict[str, Any] = {}


def _resource_manager(backend: str) -> Any:
    # One ResourceManager per backend and process: creating one loads the backend each time.
    with _rm_lock:
        if backend not in _resource_managers:
            import pyvisa  # optional at import time: only VISA transports need it

            _resource_managers[backend] = pyvisa.ResourceManager(backend)
        return _resource_managers[backend]


class _Worker:
    """One thread that makes every blocking call of one instrument, in order.

    Why not ``asyncio.to_thread``: its hop through the shared default executor costs more than
    this queue (2.4-2.6 against 2.0-2.1 times a bare pyvisa query on the 2-core machine,
    benchmarks/scpi_roundtrip.py). And one thread per instrument serialises the calls even when
    an ``await`` is cancelled: a cancelled call still finishes reading its reply before the next
    one talks to the instrument.
    """

    _STOP = object()

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # A daemon: a call hung in a driver library must not keep the process alive at exit.
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is self._STOP:
                return
            loop, fut, fn = job
            try:
                result, error = fn(), None
            except BaseException as exc:
                result, error = None, exc
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_resolve, fut, result, error)

    async def call(self, fn: Callable[[], _T]) -> _T:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[_T] = loop.create_future()
        self._jobs.put((loop, fut, fn))
        return await fut

    def stop(self) -> None:
        self._jobs.put(self._STOP)


def _resolve(fut: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if fut.done():  # cancelled while the call ran
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)


class _SocketLink(asyncio.Protocol):
    """The connected socket of a pyvisa-py SOCKET session, read and written on the event loop.

    A protocol rather than ``loop.sock_recv``: the socket stays registered with the loop's
    selector, where ``sock_recv`` registers and unregisters it on every reply (two system
    calls). And one timer per link, pushed forward lazily, rather than ``asyncio.timeout`` per
    query: arming and cancelling a timer per query cost ~12 us here, an eighth of the whole
    round trip to the served simulator.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, termination: bytes, timeout: float) -> None:
        self.loop = loop
        self.termination = termination
        self.timeout = timeout
        self.rx = bytearray()  # received and not yet taken as a reply
        self.received = 0  # bytes received in all: tells a clear when the line has gone quiet
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[BaseException | None] = loop.create_future()
        self._waiter: asyncio.Future[None] | None = None
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.rx += data
        self.received += len(data)
        waiter = self._waiter
        # Only the new tail can complete a termination that was not there before.
        tail = max(0, len(self.rx) - len(data) - len(self.termination) + 1)
        if waiter is not None and not waiter.done() and self.rx.find(self.termination, tail) >= 0:
            waiter.set_result(None)

    def eof_received(self) -> bool:
        return False  # the instrument hung up: close, connection_lost(None) follows

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    @property
    def deadline(self) -> float:
        return self._deadline

    async def reply(self, deadline: float | None = None) -> bytes | None:
        """The next reply without its termination; None if the connection is lost first.

        Raises TimeoutError at ``deadline`` (loop time; default: the link's timeout from now).
        """
        self._deadline = self.loop.time() + self.timeout if deadline is None else deadline
        if self._timer is None or self._timer.when() > self._deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_at(self._deadline, self._expire)
        while (end := self.rx.find(self.termination)) < 0:
            if self.lost.done():
                return None
            waiter = self._waiter = self.loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        answer = bytes(self.rx[:end])
        del self.rx[: end + len(self.termination)]
        self._deadline = 0.0
        return answer

    def _expire(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done() or self._deadline == 0.0:
            return  # idle, or the reply is in: the next query arms the timer again
        if self.loop.time() >= self._deadline:
            waiter.set_exception(TimeoutError())
        else:  # a later query than the one this timer was armed for is waiting
            self._timer = self.loop.call_at(self._deadline, self._expire)

    async def clear(self) -> None:
        """What pyvisa-py's clear() does on a SOCKET: drop unread input, and what still comes
        until the line has been quiet for 100 ms."""
        while True:
            seen = self.received
            await asyncio.sleep(0.1)
            if self.received == seen or self.lost.done():
                break
        self.rx.clear()

    async def close(self) -> None:
        if self.transport is not None:
            self.transport.close()  # what was written still goes out first
            try:
                async with asyncio.timeout(self.timeout):
                    await asyncio.shield(self.lost)
            except TimeoutError:
                self.transport.abort()
                await asyncio.shield(self.lost)


class VisaTransport(ScpiTransport):
    """A VISA resource (TCPIP SOCKET, INSTR, ASRL ...) through pyvisa, opened on first use.

    pyvisa opens, configures and closes the resource, in the instrument's own worker thread
    (:class:`_Worker`), and makes every call for most resource kinds. A
    ``TCPIP::host::port::SOCKET`` resource opened by pyvisa-py is plain text on a connected TCP
    socket, so once pyvisa has opened it, writes and queries run on the event loop on that same
    socket (:class:`_SocketLink`): the two thread hops per query through the worker cost as much
    as the query itself (benchmarks/scpi_roundtrip.py). ``native_socket=False`` keeps them in pyvisa.
    """

    def __init__(
        self,
        device: str,
        resource: str,
        *,
        timeout: float = 2.0,
        read_termination: str = "\n",
        write_termination: str = "\n",
        backend: str = "@py",
        options: Mapping[str, Any] | None = None,
        native_socket: bool = True,
    ) -> None:
        self.device = device
        self.resource = resource
        self.timeout = timeout
        self.read_termination = read_termination
        self.write_termination = write_termination
        self.backend = backend
        self.options = dict(options or {})
        self.native_socket = native_socket
        self._inst: Any = None
        self._worker: _Worker | None = None
        self._link: _SocketLink | None = None
        self._encoding = "ascii"
        # After a timeout the late reply may still come; it must not be taken as the next one's.
        self._stale = False
        # Replies still due to cancelled queries on the link, and when the last of them is late.
        self._owed = 0
        self._owed_until = 0.0
        # The worker thread puts the pyvisa calls in order; calls on the loop need their own,
        # also for a caller that uses the transport without ScpiInstrument's lock.
        self._lock = asyncio.Lock()

    def _open(self) -> Any:
        if self._inst is None:
            rm = _resource_manager(self.backend)
            # Explicit terminations: a SOCKET resource's defaults (None / CRLF) time out every query.
            self._inst = rm.open_resource(
                self.resource,
                read_termination=self.read_termination,
                write_termination=self.write_termination,
                timeout=int(self.timeout * 1000),
                open_timeout=int(self.timeout * 1000),
                **self.options,
            )
        return self._inst

    def _call(self, what: str, fn: Callable[[Any], _T]) -> _T:
        from pyvisa import VisaIOError, constants

        try:
            inst = self._open()
            if self._stale:
                inst.clear()  # device clear; on a SOCKET resource pyvisa-py discards what is unread
                self._stale = False
            return fn(inst)
        except VisaIOError as exc:
            if exc.error_code == constants.StatusCode.error_timeout:
                self._stale = True
                raise TimeoutError(self._timeout_text()) from None
            raise DeviceError(self.device, f"{what} on {self.resource} failed: {exc.description}") from None
        except (OSError, ValueError) as exc:
            # pyvisa-py connects a TCP socket without waiting: a closed port shows up on the first write.
            raise DeviceError(self.device, f"cannot reach {self.resource}: {_os_text(exc)}") from None
        except Exception as exc:  # pyvisa-py raises a bare Exception for "could not connect"
            raise DeviceError(self.device, f"cannot open {self.resource}: {exc}") from None

    def _timeout_text(self) -> str:
        return f"no reply within {self.timeout:g} s ({self.resource})"

    async def _run(self, what: str, fn: Callable[[Any], _T]) -> _T:
        if self._worker is None:
            self._worker = _Worker(f"visa-{self.device}")
        return await self._worker.call(lambda: self._call(what, fn))

    async def _ensure_open(self, what: str) -> _SocketLink | None:
        """Opens the resource; the link for I/O on the loop, or None to go through pyvisa."""
        if self._inst is None:
            await self._run(what, lambda inst: None)
            sock = self._session_socket(self._inst) if self.native_socket else None
            if sock is not None:
                loop = asyncio.get_running_loop()
                link = _SocketLink(loop, self.read_termination.encode(self._encoding), self.timeout)
                await loop.create_connection(lambda: link, sock=sock)
                self._link = link
        return self._link

    def _session_socket(self, inst: Any) -> socket.socket | None:
        try:
            from pyvisa_py.tcpip import TCPIPSocketSession  # type: ignore[import-untyped]
        except ImportError:  # another backend: pyvisa-py is not even installed
            return None
        session = getattr(inst.visalib, "sessions", {}).get(inst.session)
        sock = getattr(session, "interface", None)
        if not isinstance(session, TCPIPSocketSession) or not isinstance(sock, socket.socket):
            return None
        # Without a termination only pyvisa's own rules know where a reply ends.
        if not self.read_termination:
            return None
        self._encoding = inst.encoding
        # VISA's default (VI_ATTR_TCPIP_NODELAY true), which pyvisa-py leaves unset: with Nagle on,
        # a query sent right after a write waits for the instrument's delayed ACK of the write,
        # 40 ms on Linux (pyvisa-py's socket has proto 0, so asyncio does not set it either).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    async def write(self, text: str) -> None:
        async with self._lock:
            link = await self._ensure_open(f"write '{text}'")
            if link is None:
                await self._run(f"write '{text}'", lambda inst: inst.write(text))
            else:
                await self._exchange(link, f"write '{text}'", text, reply=False)

    async def query(self, text: str) -> str:
        async with self._lock:
            link = await self._ensure_open(f"query '{text}'")
            if link is None:
                reply: str = await self._run(f"query '{text}'", lambda inst: inst.query(text))
                return reply
            return await self._exchange(link, f"query '{text}'", text, reply=True)

    async def _exchange(self, link: _SocketLink, what: str, text: str, *, reply: bool) -> str:
        if self._owed:
            # Queries whose awaits were cancelled after they were sent: their replies come first.
            # Waiting for them, up to their own deadline, is what the worker thread does for a
            # cancelled pyvisa call; a quiet-line clear alone misses a reply slower than 100 ms.
            try:
                while self._owed:
                    if await link.reply(self._owed_until) is None:
                        break
                    self._owed -= 1
            except TimeoutError:
                self._stale = True
            self._owed, self._owed_until = 0, 0.0
        if self._stale:
            await link.clear()
            self._stale = False
        assert link.transport is not None
        if not link.lost.done():
            link.transport.write((text + self.write_termination).encode(self._encoding))
        if link.transport.is_closing():  # a refused or reset connection shows on the first send
            await asyncio.shield(link.lost)
        if not reply or link.lost.done():
            self._raise_if_lost(link, what)
            return ""
        try:
            answer = await link.reply()
        except TimeoutError:
            # The late reply may still come: the next call clears the line first, as pyvisa does.
            self._stale = True
            raise TimeoutError(self._timeout_text()) from None
        except asyncio.CancelledError:
            self._owed += 1
            self._owed_until = max(self._owed_until, link.deadline)
            raise
        if answer is None:
            self._raise_if_lost(link, what)
            raise AssertionError("unreachable: no reply and the connection still up")
        try:
            return answer.decode(self._encoding)
        except UnicodeDecodeError:
            raise DeviceError(
                self.device, f"{what} on {self.resource}: the reply is not {self._encoding} text"
            ) from None

    def _raise_if_lost(self, link: _SocketLink, what: str) -> None:
        if not link.lost.done():
            return
        exc = link.lost.result()
        if exc is None:
            raise DeviceError(self.device, f"{what} on {self.resource} failed: the instrument closed the connection")
        raise DeviceError(self.device, f"cannot reach {self.resource}: {_os_text(exc)}")

    async def close(self) -> None:
        async with self._lock:
            worker, self._worker = self._worker, None
            link, self._link = self._link, None
            if link is not None:
                # asyncio's transport lets go of the socket before pyvisa closes the session.
                await link.close()
            if worker is None:
                return

            def close() -> None:
                if self._inst is not None:
                    inst, self._inst = self._inst, None
                    inst.close()

            try:
                await worker.call(close)
            finally:
                worker.stop()


def _os_text(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def _visa_transport(device: str, config: Mapping[str, Any]) -> VisaTransport:
    unknown = sorted(set(config) - _VISA_KEYS)
    if unknown:
        raise ConfigError(f"transport: unknown key '{unknown[0]}' (keys: {', '.join(sorted(_VISA_KEYS))})", "transport")
    timeout = config.get("timeout", "2 s")
    if isinstance(timeout, int | float) and not isinstance(timeout, bool):
        seconds = float(timeout)
    else:
        try:
            q = parse_quantity(str(timeout))
        except ExpressionError as exc:
            raise ConfigError(f"transport: timeout: {exc}", "transport") from None
        if q.dim != TIME:
            raise ConfigError(f"transport: timeout must be a duration such as '2 s', got '{timeout}'", "transport")
        seconds = q.base
    if not seconds > 0:
        raise ConfigError(f"transport: timeout must be > 0, got '{timeout}'", "transport")
    options = {"baud_rate": int(config["baud_rate"])} if "baud_rate" in config else {}
    return VisaTransport(
        device,
        str(config["visa"]),
        timeout=seconds,
        read_termination=str(config.get("read_termination", "\n")),
        write_termination=str(config.get("write_termination", "\n")),
        backend=str(config.get("backend", "@py")),
        options=options,
    )


def check_transport(config: Any) -> None:
    """Refuse a bad transport at load time (``bench validate``), before anything connects."""
    if not isinstance(config, Mapping) or ("inproc" in config) == ("visa" in config):
        raise ConfigError("transport needs exactly one of 'inproc: <endpoint>' and 'visa: <resource>'", "transport")
    if "visa" in config:
        _visa_transport("?", config)


def open_transport(device: str, config: Mapping[str, Any], inproc: Mapping[str, Any]) -> ScpiTransport:
    if "inproc" in config:
        endpoint = str(config["inproc"])
        if endpoint not in inproc:
            raise DeviceError(device, f"no in-process instrument '{endpoint}' (is the station's simulator running?)")
        return InProcTransport(inproc[endpoint])
    if "visa" in config:
        return _visa_transport(device, config)
    raise ConfigError("transport needs 'inproc: <endpoint>' or 'visa: <resource>'", "transport")


class ScpiInstrument:
    """Serialises all traffic to one instrument and turns instrument errors into step errors."""

    def __init__(self, device: str, transport: ScpiTransport, error_query: str = "SYST:ERR?") -> None:
        self.device = device
        self.transport = transport
        # SCPI-1999 says SYSTem:ERRor?; some makers use their own (Yokogawa WT: :STATus:ERRor?).
        self.error_query = error_query
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
        """Drain the error queue; the first error fails the command group with the instrument's words."""
        first: str | None = None
        for _ in range(32):
            reply = await self.query(self.error_query)
            if no_error(reply):
                break
            first = first or reply
        if first is not None:
            raise DeviceError(self.device, f"instrument error after {context}: {first}")

    async def release(self, command: str) -> None:
        """Hand the instrument back to its front panel and close the transport; never raises."""
        with contextlib.suppress(Exception):
            await self.write(command)
        with contextlib.suppress(Exception):
            await self.transport.close()

    async def identify(self) -> dict[str, str]:
        idn = await self.query("*IDN?")
        parts = [p.strip() for p in idn.split(",")]
        parts += [""] * (4 - len(parts))
        return {"maker": parts[0], "model": parts[1], "serial": parts[2], "firmware": ",".join(parts[3:]).strip(",")}


def no_error(reply: str) -> bool:
    """Whether an error query's reply (``0,"No error"``, ``+0,...``) says the queue is empty."""
    return reply.split(",", 1)[0].strip() in ("0", "+0")


def channel_list(channels: Iterable[int]) -> str:
    """[1, 2, 3, 5] -> ``(@1:3,5)``: a SCPI channel list, sorted, consecutive channels as ranges."""
    parts: list[str] = []
    run: list[int] = []
    for ch in sorted(channels):
        if run and ch == run[-1] + 1:
            run.append(ch)
            continue
        if run:
            parts.append(f"{run[0]}:{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [ch]
    if run:
        parts.append(f"{run[0]}:{run[-1]}" if len(run) > 1 else str(run[0]))
    return "(@" + ",".join(parts) + ")"


def parse_number(reply: str) -> float:
    """``'812.40 V'`` or ``'8.124E+02'`` -> 812.4."""
    text = reply.strip().split()[0] if reply.strip() else ""
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"not a number: '{reply}'") from None


def parse_on_off(reply: str) -> int:
    """``'ON'`` / ``'1'`` -> 1, ``'OFF'`` / ``'0'`` -> 0."""
    text = reply.strip().upper()
    if text in ("ON", "1"):
        return 1
    if text in ("OFF", "0"):
        return 0
    raise ValueError(f"not ON/OFF: '{reply}'")
