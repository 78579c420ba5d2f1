"""NTC thermistor models: the resistance a BMS's temperature input must see at a temperature, and back.

Two models, their parameters from the station (``ntc:`` of a cell emulator device):

* beta: ``R(T) = R25 · exp(B · (1/T − 1/T25))``, T in kelvin::

      ntc: {model: beta, r25: 10 kohm, beta: 3435, t25: 25 degC}

* Steinhart–Hart: ``1/T = A + B·ln R + C·(ln R)³``; the resistance at T is the one real root of
  that cubic in ln R (Cardano's formula; with B > 0 and C ≥ 0 the function is monotonic)::

      ntc: {model: steinhart_hart, a: 1.009249522e-3, b: 2.378405444e-4, c: 2.019202697e-7}

A bad parameter is a :class:`bench.device.ConfigError` naming it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from bench.device import ConfigError, config_quantity

KELVIN_AT_0C = 273.15
_KEYS = {"beta": {"model", "r25", "beta", "t25"}, "steinhart_hart": {"model", "a", "b", "c"}}


class NtcModel(Protocol):
    def resistance(self, celsius: float) -> float:
        """Ohms at ``celsius``."""

    def temperature(self, ohms: float) -> float:
        """degC at ``ohms``."""


@dataclass(frozen=True)
class BetaModel:
    r25: float  # ohm at t25
    beta: float  # K
    t25_c: float = 25.0

    def resistance(self, celsius: float) -> float:
        t, t0 = celsius + KELVIN_AT_0C, self.t25_c + KELVIN_AT_0C
        return self.r25 * math.exp(self.beta * (1.0 / t - 1.0 / t0))

    def temperature(self, ohms: float) -> float:
        t0 = self.t25_c + KELVIN_AT_0C
        return 1.0 / (1.0 / t0 + math.log(ohms / self.r25) / self.beta) - KELVIN_AT_0C


@dataclass(frozen=True)
class SteinhartHart:
    a: float
    b: float
    c: float

    def resistance(self, celsius: float) -> float:
        inv_t = 1.0 / (celsius + KELVIN_AT_0C)
        if self.c == 0.0:
            return math.exp((inv_t - self.a) / self.b)
        # C·x³ + B·x + (A − 1/T) = 0 with x = ln R: one real root (B, C > 0), by Cardano.
        y = (self.a - inv_t) / (2.0 * self.c)
        z = math.sqrt((self.b / (3.0 * self.c)) ** 3 + y * y)
        return math.exp(math.cbrt(z - y) - math.cbrt(z + y))

    def temperature(self, ohms: float) -> float:
        x = math.log(ohms)
        return 1.0 / (self.a + self.b * x + self.c * x**3) - KELVIN_AT_0C


def ntc_model(config: Any, key: str = "ntc") -> NtcModel:
    """The model a station's ``ntc:`` mapping describes; a ConfigError naming the bad parameter."""
    if not isinstance(config, Mapping):
        raise ConfigError(f"{key}: expected a mapping like {{model: beta, r25: 10 kohm, beta: 3435}}", key)
    model = config.get("model")
    if model not in _KEYS:
        raise ConfigError(f"{key}.model: expected 'beta' or 'steinhart_hart', got {model!r}", key)
    unknown = sorted(set(config) - _KEYS[model])
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}: unknown key (keys: {', '.join(sorted(_KEYS[model]))})", key)
    if model == "beta":
        r25 = _quantity(config, "r25", "ohm", key)
        beta = _number(config, "beta", key, unit="K")
        t25 = _quantity(config, "t25", "degC", key, default="25 degC")
        if not r25 > 0:
            raise ConfigError(f"{key}.r25: must be > 0 ohm, got {config['r25']!r}", key)
        if not beta > 0:
            raise ConfigError(f"{key}.beta: must be > 0 K, got {config['beta']!r}", key)
        if not t25 > -KELVIN_AT_0C:
            raise ConfigError(f"{key}.t25: must be above absolute zero, got {config.get('t25')!r}", key)
        return BetaModel(r25, beta, t25)
    a, b, c = (_number(config, k, key) for k in ("a", "b", "c"))
    if not b > 0:
        raise ConfigError(f"{key}.b: must be > 0 (R falls as T rises), got {config['b']!r}", key)
    if c < 0:
        raise ConfigError(f"{key}.c: must be >= 0 (one resistance per temperature), got {config['c']!r}", key)
    return SteinhartHart(a, b, c)


def _number(config: Mapping[str, Any], name: str, key: str, unit: str | None = None) -> float:
    if name not in config:
        raise ConfigError(f"{key}.{name}: missing", key)
    value = config[name]
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if unit is not None and isinstance(value, str):
        return _quantity(config, name, unit, key)
    raise ConfigError(f"{key}.{name}: expected a number, got {value!r}", key)


def _quantity(config: Mapping[str, Any], name: str, unit: str, key: str, default: str | None = None) -> float:
    raw = config.get(name, default)
    if raw is None:
        raise ConfigError(f"{key}.{name}: missing", key)
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        raw = f"{raw} {unit}"  # a bare number is in the key's own unit
    value = config_quantity(str(raw), unit, f"{key}.{name}", key)
    if not math.isfinite(value):
        raise ConfigError(f"{key}.{name}: must be finite, got {raw!r}", key)
    return value
