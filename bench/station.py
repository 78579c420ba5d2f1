"""The station file: which devices a bench has, how to reach them, and how to make them safe."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bench.report.equipment import DecisionRule, Instrument, Laboratory, SignalSource
from bench.sequence import ID_PATTERN
from bench.yamlsource import YamlSource, load_model

LISTEN_DEFAULT = "127.0.0.1:8080"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SafeState(_Model):
    set: dict[str, str | int | float] = Field(description="values that make the device safe")
    verify: str = Field(description="condition that proves the device is safe (read back)")
    within: str = Field("2 s", description="how long the read-back may take")

    @field_validator("set", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: str(x) if isinstance(x, int | float) and not isinstance(x, bool) else x for k, x in v.items()}
        return v


class DeviceEntry(_Model):
    driver: str = Field(description="driver name, registered under the 'bench.drivers' entry point group")
    config: dict[str, Any] = {}
    safe_state: SafeState | None = None
    doc: str = ""


class Limit(_Model):
    name: str
    when: str = Field(description="condition that must never become true, whatever sequence runs")


class SimulatorEntry(_Model):
    kind: str = Field(description="plant name, registered under the 'bench.simulators' entry point group")
    config: dict[str, Any] = {}
    devices: list[str] = Field(
        [], description="station devices this plant stands behind; started only for runs that use one (empty: always)"
    )


class UiSettings(_Model):
    """The ``ui:`` section: how ``bench ui`` serves this station to the browsers at the bench."""

    serial_pattern: str | None = Field(
        default=None,
        description="regular expression a DUT serial typed or scanned at the browser station must match "
        "(whole text); none: any non-empty serial",
    )
    accounts: str | None = Field(
        default=None, description="accounts file of the browser station (relative paths: to the station file)"
    )
    listen: str = Field(
        default=LISTEN_DEFAULT, description="HOST:PORT the browser station listens on (`bench ui --listen`)"
    )

    @field_validator("serial_pattern")
    @classmethod
    def _pattern(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"'{v}' is not a regular expression ({exc})") from None
        return v

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        parse_listen(v)
        return v


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for an IPv6 host) -> (host, port); ValueError naming the text."""
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"'{text}' is not HOST:PORT (e.g. 127.0.0.1:8080)")
    return host, int(port)


class Station(_Model):
    id: str = Field(pattern=ID_PATTERN, description="names the station's interlock latch and lock files")
    title: str = ""
    simulated: bool = False
    virtual_time: bool = Field(False, description="run on a virtual clock by default (simulated stations only)")
    devices: dict[str, DeviceEntry] = Field(min_length=1)
    simulators: list[SimulatorEntry] = []
    faults: list[str] = Field([], description="fault modes injected into the simulators by default")
    # Read by `bench sim serve` only (bench/cli_sim.py); `bench run` starts nothing from it.
    serve: dict[str, Any] | None = Field(
        None, description="plants `bench sim serve` runs for this station and where it serves them (docs/served.md)"
    )
    # ISO/IEC 17025 reporting (bench/report/equipment.py, docs/reports.md).
    laboratory: Laboratory | None = None
    equipment: list[Instrument] = Field([], description="equipment register: instruments with calibration")
    signal_sources: dict[str, SignalSource] = Field(
        {},
        description="resolution/accuracy/period of DUT signals; a key may be an fnmatch pattern (a signal's own key first)",
    )
    decision_rule: DecisionRule = Field("simple", description="statement of conformity: simple or guard_band")
    limits: list[Limit] = Field([], description="hard limits held by the supervisor for every sequence; a trip latches")
    estop: str | None = Field(None, description="condition of an emergency-stop input (e.g. a digital input signal)")
    # Where this bench's runs are indexed (bench/results/store.py); BENCH_RESULTS overrides it.
    results: str | None = Field(
        None,
        description="results database URL: sqlite:///PATH or postgresql://USER@HOST/DB (docs/results.md); "
        "BENCH_RESULTS overrides it; default: a SQLite file in the user's data folder",
    )
    # Bench-agent settings (library, DUT type, capabilities); validated by bench/lab/agent.py, docs/lab.md.
    lab: dict[str, Any] = Field({}, description="settings of this bench in a lab of benches over MQTT (docs/lab.md)")
    ui: UiSettings = Field(
        UiSettings(), description="the browser operator station of this bench (`bench ui`, docs/ui.md)"
    )

    @field_validator("devices")
    @classmethod
    def _names(cls, v: dict[str, DeviceEntry]) -> dict[str, DeviceEntry]:
        for name in v:
            if not name.isidentifier() or not name.islower():
                raise ValueError(f"device name '{name}' must be a lower-case identifier")
        return v

    @field_validator("results")
    @classmethod
    def _results_url(cls, v: str | None) -> str | None:
        # Found at load, not after the first run: the engines the results database runs on.
        if v is not None and not re.match(r"^(sqlite|postgres|postgresql)(\+\w+)?://", v):
            raise ValueError(f"'{v}' is not a database URL (sqlite:///PATH or postgresql://USER@HOST/DB)")
        return v

    @model_validator(mode="after")
    def _simulated_devices(self) -> Station:
        for sim in self.simulators:
            for dev in sim.devices:
                if dev not in self.devices:
                    raise ValueError(f"simulator {sim.kind}: device '{dev}' is not on this station")
        return self


class LoadedStation:
    def __init__(self, source: YamlSource, model: Station) -> None:
        self.source = source
        self.model = model

    @property
    def path(self) -> Path:
        return self.source.path

    @property
    def base_dir(self) -> Path:
        return self.source.path.resolve().parent


def load_station(path: Path) -> LoadedStation:
    return LoadedStation(*load_model(path, "station", Station))
