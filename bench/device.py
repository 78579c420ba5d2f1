"""What the engine needs from a driver, and what a driver gets from the engine.

Drivers live in the ``drivers`` package and are found by name through the ``bench.drivers``
entry point group, so the engine never imports them. A driver declares its signals before it
connects (so sequences are checked at load time), publishes samples to the signal bus, and
applies commands.
"""

from __future__ import annotations

import abc
import asyncio
import functools
from collections.abc import Callable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

import can

from bench.dtccodes import ALL_DTC_GROUPS, Dtc
from bench.errors import DeviceError, ExpressionError, LoadError
from bench.expr import SignalInfo as SignalInfo  # re-exported: drivers take it from their contract
from bench.units import TIME, parse_quantity, parse_unit

Publish = Callable[[str, float, float], None]

# How long the engine gives a device's connect() unless its driver says otherwise
# (``Driver.connect_timeout``): enough to open a transport and read a first answer.
DEFAULT_CONNECT_TIMEOUT = 10.0


class ConfigError(ValueError):
    """A driver's station configuration is wrong; the message names the key."""

    def __init__(self, message: str, key: str | None = None) -> None:
        self.key = key
        super().__init__(message)


def config_quantity(text: str, unit: str, name: str, key: str | None = None) -> float:
    """``text``, a station value with a unit, in ``unit``; a duration must be above zero.

    ``name`` is what the message calls it (``poll_interval``, ``ntc.r25``), ``key`` the station
    key the error points at (default: ``name``).
    """
    key = name if key is None else key
    try:
        q = parse_quantity(text)
    except ExpressionError as exc:
        raise ConfigError(f"{name}: {exc}", key) from None
    want = parse_unit(unit)
    if want.dim == TIME and (q.dim != TIME or q.base <= 0):
        raise ConfigError(f"{name}: expected a duration > 0, got '{text}'", key)
    if q.dim != want.dim:
        raise ConfigError(f"{name}: expected a value in {unit}, got '{text}'", key)
    return want.from_base(q.base)


@dataclass
class DeviceContext:
    """Handed to every driver at connect time."""

    loop: asyncio.AbstractEventLoop
    publish: Publish
    # Raw bus traffic for the record (``tx`` True for frames the bench sent).
    record_frame: Callable[[can.Message, bool], None]
    # Report a fault that makes the device unusable; the engine aborts the run with it.
    fault: Callable[[str, str], None]
    # In-process endpoints registered by simulated plants (e.g. a supply's SCPI handler).
    inproc: Mapping[str, Any] = field(default_factory=dict)
    # Start a background task of a device; if it dies, the run stops with the device named
    # (a dead poll or transmit task must never leave the engine waiting forever).
    spawn: Callable[[str, Coroutine[Any, Any, None], str], asyncio.Task[None]] | None = None
    # Signals the run refers to anywhere (None: all). A driver may skip decoding the others: a
    # frame's raw bytes are recorded whatever it carries.
    wanted: Collection[str] | None = None
    # Received frames for the record in one call, in bus order: ``record_frame(msg, False)`` for
    # each, which it is when None.
    record_frames: Callable[[list[can.Message]], None] | None = None

    def start_task(self, device: str, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        if self.spawn is not None:
            return self.spawn(device, coro, name)
        return self.loop.create_task(coro, name=name)


class Driver(abc.ABC):
    """Base class of all drivers: one instance per device of a station."""

    def __init__(self, name: str, config: Mapping[str, Any], base_dir: Path) -> None:
        self.name = name
        self.config = dict(config)
        self.base_dir = base_dir

    def check_keys(self, allowed: Collection[str]) -> None:
        """Refuse configuration keys the driver does not know (a typo must not be ignored)."""
        unknown = sorted(set(self.config) - set(allowed))
        if unknown:
            raise ConfigError(f"unknown key '{unknown[0]}' (keys: {', '.join(sorted(allowed))})", unknown[0])

    def config_quantity(self, key: str, default: str, unit: str) -> float:
        """A configuration value with a unit, in ``unit``; a duration must be above zero."""
        return config_quantity(str(self.config.get(key, default)), unit, key)

    @abc.abstractmethod
    def signals(self) -> list[SignalInfo]:
        """Every signal of the device, named ``<device>.<signal>``, known before connecting."""

    def update_period(self, signal: str) -> float | None:
        """How often ``signal`` gets a new sample, in seconds (None: when it is set, or not periodic).

        Shown by ``bench signals``: a condition on a signal sampled every second cannot see a
        100 ms event.
        """
        return None

    def files(self) -> list[Path]:
        """Files the driver's behaviour depends on (DBCs ...), hashed into the record."""
        return []

    @abc.abstractmethod
    async def connect(self, ctx: DeviceContext) -> None:
        """Open the transport and start publishing samples."""

    @property
    def connect_timeout(self) -> float:
        """The longest ``connect()`` may take, in seconds, the driver's own waits included.

        The engine gives up on the device after this long. A driver whose own wait may be longer
        (a CAN device waiting for a slow cyclic message) returns more, so that its own error,
        which names what is missing, comes before the engine's.
        """
        return DEFAULT_CONNECT_TIMEOUT

    async def identify(self) -> dict[str, str]:
        """Identity of the instrument or DUT (maker, model, serial, firmware ...)."""
        return {}

    @property
    def supports_dtcs(self) -> bool:
        """True when the DUT's diagnostic trouble codes can be read and cleared (docs/dtc.md).

        The engine reads them at the start and the end of a run, and the ``check_dtcs`` and
        ``clear_dtcs`` steps may name the device only when this is true.
        """
        return False

    async def read_dtcs(self, status_mask: int) -> list[Dtc]:
        """The DTCs whose status has a bit of ``status_mask`` (UDS 0x19 0x02); a ``DeviceError`` if refused."""
        raise DeviceError(self.name, "has no DTC memory to read")

    async def clear_dtcs(self, group: int = ALL_DTC_GROUPS) -> None:
        """Clear the DTC memory (UDS 0x14), all groups by default; a ``DeviceError`` if refused."""
        raise DeviceError(self.name, "has no DTC memory to clear")

    @abc.abstractmethod
    async def set(self, values: Mapping[str, float]) -> dict[str, float]:
        """Apply signal values (short names, in the signal's unit); return what was read back."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop tasks and close the transport. Must not raise."""


@functools.cache
def _installed(group: str) -> dict[str, EntryPoint]:
    # Reading the installed distributions' metadata costs ~10 ms a call and a plan asks once per
    # device; what is installed does not change while a process runs.
    return {ep.name: ep for ep in entry_points(group=group)}


def load_driver(kind: str) -> type[Driver]:
    eps = _installed("bench.drivers")
    if kind not in eps:
        raise LoadError(f"unknown driver '{kind}' (installed: {', '.join(sorted(eps)) or 'none'})")
    cls = eps[kind].load()
    if not (isinstance(cls, type) and issubclass(cls, Driver)):
        raise LoadError(f"driver '{kind}' does not implement bench.device.Driver")
    return cls


def load_plant_builder(kind: str) -> Callable[..., Any]:
    eps = _installed("bench.simulators")
    if kind not in eps:
        raise LoadError(f"unknown simulator '{kind}' (installed: {', '.join(sorted(eps)) or 'none'})")
    builder: Callable[..., Any] = eps[kind].load()
    return builder


def fault_catalogue(kind: str) -> dict[str, str]:
    module = load_plant_builder(kind).__module__
    import importlib

    cat = getattr(importlib.import_module(module), "fault_catalogue", None)
    return dict(cat()) if callable(cat) else {}


def plant_faults(kind: str, faults: Sequence[str]) -> list[str]:
    """The faults of ``faults`` that belong to simulator ``kind``: a station's plants share one list."""
    own = fault_catalogue(kind)
    return [f for f in faults if f in own]
