"""SCPI instruments: one transport, one lock, read-back of every setpoint, error queue drained.

The transport is a pipe for SCPI text. ``inproc`` hands the text to a simulator's SCPI parser
in the same process (the same text a real instrument would get); ``visa`` opens a VISA
resource through pyvisa with the pure-Python pyvisa-py backend (no vendor VISA needed)::

    transport: {inproc: psu}
    transport: {visa: "TCPIP::192.168.0.20::5025::SOCKET", timeout: 2 s}
    transport: {visa: "ASRL/dev/ttyUSB0::INSTR", timeout: 2 s, read_termination: "\\n", baud_rate: 115200}

pyvisa blocks, so every VISA call runs off the event loop, in one worker thread per
instrument, while the instrument's lock is held: concurrent queries to one resource get each
other's replies (reference/libraries.md section 4).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable, Mapping
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

    Why not ``asyncio.to_thread``: its hop through the shared default executor cost 75-110 us
    per call on the 2-core machine, against 30 us for this queue (benchmarks/scpi_roundtrip.py),
    on a query that takes ~90 us. And one thread per instrument serialises the calls even when
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


class VisaTransport(ScpiTransport):
    """A VISA resource (TCPIP SOCKET, INSTR, ASRL ...) through pyvisa, opened on first use.

    Every blocking call runs in the instrument's own worker thread (:class:`_Worker`).
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
    ) -> None:
        self.device = device
        self.resource = resource
        self.timeout = timeout
        self.read_termination = read_termination
        self.write_termination = write_termination
        self.backend = backend
        self.options = dict(options or {})
        self._inst: Any = None
        self._worker: _Worker | None = None
        # After a timeout the late reply may still come; it must not be taken as the next one's.
        self._stale = False

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
                raise TimeoutError(f"no reply within {self.timeout:g} s ({self.resource})") from None
            raise DeviceError(self.device, f"{what} on {self.resource} failed: {exc.description}") from None
        except (OSError, ValueError) as exc:
            # pyvisa-py connects a TCP socket without waiting: a closed port shows up on the first write.
            text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise DeviceError(self.device, f"cannot reach {self.resource}: {text}") from None
        except Exception as exc:  # pyvisa-py raises a bare Exception for "could not connect"
            raise DeviceError(self.device, f"cannot open {self.resource}: {exc}") from None

    async def _run(self, what: str, fn: Callable[[Any], _T]) -> _T:
        if self._worker is None:
            self._worker = _Worker(f"visa-{self.device}")
        return await self._worker.call(lambda: self._call(what, fn))

    async def write(self, text: str) -> None:
        await self._run(f"write '{text}'", lambda inst: inst.write(text))

    async def query(self, text: str) -> str:
        reply: str = await self._run(f"query '{text}'", lambda inst: inst.query(text))
        return reply

    async def close(self) -> None:
        worker, self._worker = self._worker, None
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
            code = reply.split(",", 1)[0].strip()
            if code in ("0", "+0"):
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


def parse_number(reply: str) -> float:
    """``'812.40 V'`` or ``'8.124E+02'`` -> 812.4."""
    text = reply.strip().split()[0] if reply.strip() else ""
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"not a number: '{reply}'") from None
