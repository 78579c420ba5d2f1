"""The step kinds of the sequence language: one module of this package per kind.

Each module ``bench/stepkinds/<kind>.py`` holds its kind's whole story (model, compile,
description, executor) and exposes it as ``KIND``; its section in docs/sequences.md and its
paragraph in docs/lifecycle.md (stage 4) document it. Every module of the package is a kind and
is found here without being listed: the kinds of ``BUILT_IN`` come first, in the order the
language has always listed them (the order of the error message of a step with no known key),
any other module after them by name. :func:`register` adds a kind from elsewhere (a test's own
kind); :mod:`bench.sequence` rebuilds the sequence model whenever the kinds change.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

from bench.stepkinds.base import StepKind, StepModel

BUILT_IN = (
    "set",
    "wait",
    "wait_until",
    "measure",
    "check",
    "prompt",
    "ramp",
    "check_dtcs",
    "clear_dtcs",
    "search",
)

AnyKind = StepKind[Any, Any]
_kinds: dict[str, AnyKind] = {}
_on_change: list[Callable[[], None]] = []


def modules() -> list[str]:
    """The kind modules of the package: the built-in ones in the language's order, then the others by name."""
    found = {m.name for m in pkgutil.iter_modules(__path__)} - {"base"}
    # A set literal, not set(): once bench.stepkinds.set is imported, 'set' here is that module.
    return [n for n in BUILT_IN if n in found] + sorted(found - {*BUILT_IN})


def _loaded() -> dict[str, AnyKind]:
    if not _kinds:
        for name in modules():
            kind = importlib.import_module(f"bench.stepkinds.{name}").KIND
            assert kind.name == name, f"bench/stepkinds/{name}.py defines step kind {kind.name!r}"
            _kinds[name] = kind
    return _kinds


def names() -> tuple[str, ...]:
    """Every step kind's YAML key, in the language's order."""
    return tuple(_loaded())


def all_kinds() -> tuple[AnyKind, ...]:
    return tuple(_loaded().values())


def get(name: str) -> AnyKind:
    return _loaded()[name]


def of_model(step: StepModel) -> AnyKind:
    """The kind of a validated step."""
    for kind in _loaded().values():
        if isinstance(step, kind.model):
            return kind
    raise TypeError(step)


def register(kind: AnyKind) -> None:
    """Add a step kind to the language (after the built-in ones)."""
    kinds = _loaded()
    if kind.name in kinds:
        raise ValueError(f"step kind {kind.name!r} is already registered")
    kinds[kind.name] = kind
    _changed()


def unregister(name: str) -> None:
    if name in BUILT_IN:
        raise ValueError(f"step kind {name!r} is built in")
    del _loaded()[name]
    _changed()


def on_change(fn: Callable[[], None]) -> None:
    """Call ``fn`` whenever a kind is registered or unregistered (models built from the kinds)."""
    _on_change.append(fn)


def _changed() -> None:
    for fn in _on_change:
        fn()


__all__ = [
    "BUILT_IN",
    "AnyKind",
    "all_kinds",
    "get",
    "modules",
    "names",
    "of_model",
    "on_change",
    "register",
    "unregister",
]
