"""One topic router for everything in the lab that reads the broker: the agent, the snapshot
behind ``bench lab status`` and ``bench lab watch``.

A route is a topic pattern written with the topic tree's own builders (``Topics``) and ``{name}``
for a level that varies, the pydantic model its payload must be, and the handler that gets the
validated message. Every payload is decoded by ``protocol.decode`` (size limit, unknown keys
refused), and a message that names a bench or a job must name the one of its topic: the broker's
ACL lets a bench publish only under its own name, so a ``bench`` (or ``job``) field that differs
from the topic is a message that speaks for somebody else, and it is refused like a malformed one.
An empty payload is a cleared retained message; only a route that says what that means gets it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from bench.lab.protocol import MAX_MESSAGE_BYTES, ProtocolError, decode

R = TypeVar("R")
M = TypeVar("M", bound=BaseModel)

# Levels of a topic that, when the message has a field of the same name, must agree with it.
OWN_LEVELS = ("bench", "job")


def _is_variable(level: str) -> bool:
    return level.startswith("{") and level.endswith("}")


class Arrival:
    """How a message came: its topic, the values of the pattern's ``{name}`` levels, and whether it
    was retained (already on the broker when the subscriber came) or read as part of the retained
    history up to a barrier (bench/lab/mqtt.py ``start_barrier``)."""

    # A plain class with slots: one is made for each of the tens of thousands of messages of a
    # history read.
    __slots__ = ("history", "levels", "retained", "topic")

    def __init__(self, topic: str, levels: Mapping[str, str], retained: bool = False, history: bool = False) -> None:
        self.topic = topic
        self.levels = levels
        self.retained = retained
        self.history = history

    def __getitem__(self, name: str) -> str:
        return self.levels[name]


@dataclass(frozen=True)
class Route(Generic[R]):
    pattern: tuple[str, ...]
    model: type[BaseModel]
    handle: Callable[[Any, Arrival], R]
    cleared: Callable[[Arrival], R] | None = None
    group: str = ""  # a label the user of the router may ask about (``Router.match``)
    # (position, text) of the fixed levels and (position, name) of the varying ones
    fixed: tuple[tuple[int, str], ...] = field(init=False)
    varying: tuple[tuple[int, str], ...] = field(init=False)

    def __post_init__(self) -> None:
        levels = list(enumerate(self.pattern))
        object.__setattr__(self, "fixed", tuple((i, x) for i, x in levels if not _is_variable(x)))
        object.__setattr__(self, "varying", tuple((i, x[1:-1]) for i, x in levels if _is_variable(x)))

    @property
    def filter(self) -> str:
        """The subscription that receives what this route takes (``{name}`` levels as ``+``)."""
        return "/".join("+" if _is_variable(level) else level for level in self.pattern)

    def match(self, levels: list[str]) -> dict[str, str] | None:
        """The values of the varying levels when ``levels`` (same number as the pattern) match."""
        for i, text in self.fixed:
            if levels[i] != text:
                return None
        found = {name: levels[i] for i, name in self.varying}
        return None if "" in found.values() else found


Match = tuple[Route[R], dict[str, str]]


class Router(Generic[R]):
    """Topic patterns -> validated messages -> handlers; the first route that matches a topic wins.

    ``refused`` hears every message that is malformed, too large or speaks for another bench or
    job (one line each); without it they are dropped. A handler may raise ``ProtocolError`` too.
    """

    def __init__(
        self, *, limit: int = MAX_MESSAGE_BYTES, refused: Callable[[str, ProtocolError], None] | None = None
    ) -> None:
        self.limit = limit
        self.refused = refused
        self.routes: list[Route[R]] = []
        self._by_depth: dict[int, list[Route[R]]] = {}  # routes by their number of levels

    def on(
        self,
        pattern: str,
        model: type[M],
        handle: Callable[[M, Arrival], R],
        *,
        cleared: Callable[[Arrival], R] | None = None,
        group: str = "",
    ) -> None:
        route: Route[R] = Route(tuple(pattern.split("/")), model, handle, cleared, group)
        self.routes.append(route)
        self._by_depth.setdefault(len(route.pattern), []).append(route)

    def match(self, topic: str) -> Match[R] | None:
        """The route that takes a topic and the values of its varying levels; None: no route does."""
        levels = topic.split("/")
        for route in self._by_depth.get(len(levels), ()):
            found = route.match(levels)
            if found is not None:
                return route, found
        return None

    def dispatch(self, topic: str, payload: bytes, *, retained: bool = False, history: bool = False) -> R | None:
        """Hand one message to its route's handler and return what the handler returns; None when no
        route takes the topic, the payload is empty and the route ignores that, or it is refused."""
        return self.deliver(self.match(topic), topic, payload, retained=retained, history=history)

    def deliver(
        self, found: Match[R] | None, topic: str, payload: bytes, *, retained: bool = False, history: bool = False
    ) -> R | None:
        """``dispatch`` for a topic already matched (``match``)."""
        if found is None:
            return None
        route, levels = found
        at = Arrival(topic, levels, retained, history)
        try:
            if not payload:
                return None if route.cleared is None else route.cleared(at)
            msg = decode(route.model, payload, self.limit)
            for name in OWN_LEVELS:
                said = getattr(msg, name, None)
                if name in levels and isinstance(said, str) and said != levels[name]:
                    raise ProtocolError(f"message names {name} {said} but came on the topic of {name} {levels[name]}")
            return route.handle(msg, at)
        except ProtocolError as exc:
            if self.refused is not None:
                self.refused(topic, exc)
            return None
