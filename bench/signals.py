"""The signal bus: the latest value of every signal, and who wants to hear about changes.

Drivers publish samples ``(name, value, t)``: a float in the signal's own unit, stamped with
the source timestamp (the CAN frame's time, the instrument reply's time) on the event-loop
clock. Units and state names live in the catalog (:class:`bench.expr.SignalInfo`), so a
sample stays three machine words on the hot path.

Waiting is push-driven: subscribers are called synchronously on every sample of the signals
they watch. Nothing polls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from bench.expr import Env, SignalInfo

Callback = Callable[[str, float, float], None]


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    value: float
    t: float
    unit: str
    state: str | None = None


class Subscription:
    __slots__ = ("_bus", "callback", "names")

    def __init__(self, bus: SignalBus, names: frozenset[str], callback: Callback) -> None:
        self._bus = bus
        self.names = names
        self.callback = callback

    def cancel(self) -> None:
        self._bus._unsubscribe(self)


class SignalBus:
    def __init__(self, catalog: Mapping[str, SignalInfo]) -> None:
        self.catalog = catalog
        self.values: dict[str, float] = {}
        self.times: dict[str, float] = {}
        self.marks: dict[str, float] = {}
        self.env = Env(self.values, self.marks)
        self._subs: dict[str, list[Subscription]] = {}
        self._history: dict[str, list[tuple[float, float]]] = {}
        self.count = 0

    def publish(self, name: str, value: float, t: float) -> None:
        self.values[name] = value
        self.times[name] = t
        self.count += 1
        hist = self._history.get(name)
        if hist is not None:
            hist.append((t, value))
        subs = self._subs.get(name)
        if subs:
            for sub in tuple(subs):
                sub.callback(name, value, t)

    def subscribe(self, names: Iterable[str], callback: Callback) -> Subscription:
        sub = Subscription(self, frozenset(names), callback)
        for n in sub.names:
            self._subs.setdefault(n, []).append(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        for n in sub.names:
            subs = self._subs.get(n)
            if subs and sub in subs:
                subs.remove(sub)

    def keep_history(self, name: str) -> None:
        self._history.setdefault(name, [])

    def history(self, name: str, since: float) -> list[tuple[float, float]]:
        return [s for s in self._history.get(name, ()) if s[0] >= since]

    def sample(self, name: str) -> Sample | None:
        if name not in self.values:
            return None
        info = self.catalog.get(name)
        value = self.values[name]
        unit = info.unit.text if info else ""
        return Sample(name, value, self.times[name], unit, info.state_name(value) if info else None)

    def latest_time(self, names: Iterable[str]) -> float | None:
        times = [self.times[n] for n in names if n in self.times]
        return max(times) if times else None
