"""Checking a plant's config section against a table of keys: one clear error per bad key."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

NUM = (int, float)
# key: (types, default, lower bound (exclusive when the last field is True), upper bound, open lower bound)
Spec = tuple[tuple[type, ...], Any, float | None, float | None, bool]


def check_section(plant: str, section: Any, spec: Mapping[str, Spec], where: str) -> dict[str, Any]:
    """``section`` with defaults filled in; a ValueError naming ``plant`` and the key otherwise.

    ``where`` is the prefix of nested sections (``"bms."``); numbers come back as floats.
    """
    if not isinstance(section, Mapping):
        raise ValueError(f"{plant} config: {where or 'config'} must be a mapping, got {section!r}")
    unknown = sorted(set(section) - set(spec))
    if unknown:
        raise ValueError(f"{plant} config: unknown key '{where}{unknown[0]}' (valid: {', '.join(spec)})")
    out: dict[str, Any] = {}
    for key, (types, default, lo, hi, open_lo) in spec.items():
        value: Any = section.get(key, default)
        if value is None or types == (dict,):
            if value is not None and not isinstance(value, Mapping):
                raise ValueError(f"{plant} config: {where}{key} must be a mapping, got {value!r}")
            out[key] = value
            continue
        name = f"{where}{key}"
        type_ok = isinstance(value, types) and not isinstance(value, bool)
        if not type_ok:
            kind = "a string" if types == (str,) else "an integer" if types == (int,) else "a number"
            raise ValueError(f"{plant} config: {name} must be {kind}, got {value!r}")
        if types is NUM and not math.isfinite(value):
            raise ValueError(f"{plant} config: {name} must be finite, got {value!r}")
        too_low = lo is not None and (value <= lo if open_lo else value < lo)
        if too_low or (hi is not None and value > hi):
            bounds = f"{'>' if open_lo else '>='} {lo}" if lo is not None else ""
            bounds += (" and " if bounds and hi is not None else "") + (f"<= {hi}" if hi is not None else "")
            raise ValueError(f"{plant} config: {name} must be {bounds}, got {value!r}")
        out[key] = float(value) if types is NUM else value
    return out
