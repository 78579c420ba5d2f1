"""The station file: which devices a bench has, how to reach them, and how to make them safe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bench.yamlsource import YamlSource, load_yaml, plain


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


class SimulatorEntry(_Model):
    kind: str = Field(description="plant name, registered under the 'bench.simulators' entry point group")
    config: dict[str, Any] = {}


class Station(_Model):
    id: str
    title: str = ""
    simulated: bool = False
    virtual_time: bool = Field(False, description="run on a virtual clock by default (simulated stations only)")
    devices: dict[str, DeviceEntry] = Field(min_length=1)
    simulators: list[SimulatorEntry] = []
    faults: list[str] = Field([], description="fault modes injected into the simulators by default")

    @field_validator("devices")
    @classmethod
    def _names(cls, v: dict[str, DeviceEntry]) -> dict[str, DeviceEntry]:
        for name in v:
            if not name.isidentifier() or not name.islower():
                raise ValueError(f"device name '{name}' must be a lower-case identifier")
        return v


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
    src = load_yaml(path, "station")
    try:
        model = Station.model_validate(plain(src.root))
    except ValidationError as exc:
        raise src.validation_error(exc) from None
    return LoadedStation(src, model)
