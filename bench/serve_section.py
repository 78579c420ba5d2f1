"""The ``serve:`` section of a station file: what ``bench sim serve`` runs and where (docs/served.md).

Apart from the command (bench/cli_sim.py), so that ``bench --help`` does not build these models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ruamel.yaml import YAML

from bench.errors import LoadError
from bench.station import LoadedStation, SimulatorEntry, load_station

REPO_ROOT = Path(__file__).resolve().parent.parent


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CanServe(_Model):
    port: int = Field(default=29536, ge=0, le=65535)
    channels: list[str] = Field(
        default=["bench0"], min_length=1, description="in-process CAN channels clients may open"
    )


class ServeSection(_Model):
    simulators: list[SimulatorEntry] | None = None
    simulators_from: str | None = Field(default=None, description="station file whose simulators are served")
    host: str = "127.0.0.1"
    can: CanServe = CanServe()
    scpi: dict[str, int] = Field(default={}, description="SCPI endpoint -> TCP port")
    serial_dir: str = "/tmp/hil-bench-sim"


def default_served_station() -> Path:
    local = Path("stations/sim-served.yaml")
    return local if local.exists() else REPO_ROOT / "stations" / "sim-served.yaml"


def inproc_can_channels(st: LoadedStation) -> list[str]:
    """The in-process CAN channels the station's devices open (``can: {interface: inproc, channel: ...}``)."""
    channels = []
    for device in st.model.devices.values():
        can = device.config.get("can")
        if isinstance(can, dict) and can.get("interface") == "inproc" and can.get("channel"):
            channels.append(str(can["channel"]))
    return list(dict.fromkeys(channels))


def serve_section(st: LoadedStation) -> tuple[ServeSection, list[SimulatorEntry], Path]:
    """The serve options, the simulators to run and the folder their relative paths start from."""
    raw = st.model.serve
    if raw is None:
        if not st.model.simulators:
            raise LoadError(f"station '{st.model.id}' has neither 'serve' nor 'simulators': nothing to serve", st.path)
        # The defaults, but the CAN channels its plants talk on (the cell BMS's bench2, not bench0).
        can = CanServe(channels=inproc_can_channels(st) or CanServe().channels)
        return ServeSection(can=can), list(st.model.simulators), st.base_dir
    try:
        section = ServeSection.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise st.source.error(["serve", *err["loc"]], err["msg"]) from None
    if section.simulators is not None and section.simulators_from is not None:
        raise st.source.error(["serve", "simulators_from"], "give 'simulators' or 'simulators_from', not both")
    if section.simulators is not None:
        return section, section.simulators, st.base_dir
    if section.simulators_from is not None:
        other = load_station(st.base_dir / section.simulators_from)
        if not other.model.simulators:
            raise st.source.error(["serve", "simulators_from"], f"{section.simulators_from} has no simulators")
        return section, list(other.model.simulators), other.base_dir
    if st.model.simulators:
        return section, list(st.model.simulators), st.base_dir
    raise st.source.error(["serve"], "needs 'simulators' or 'simulators_from'")


def apply_sets(sims: list[SimulatorEntry], sets: list[str]) -> list[dict[str, Any]]:
    configs = [dict(s.config) for s in sims]
    yaml = YAML(typ="safe")
    for item in sets:
        path, sep, text = item.partition("=")
        keys = path.strip().split(".")
        if not sep or len(keys) < 2:
            raise LoadError(f"--set {item}: expected KIND.key[.key...]=value (e.g. bms_pack.initial_soc_pct=90)")
        hits = [i for i, s in enumerate(sims) if s.kind == keys[0]]
        if not hits:
            raise LoadError(f"--set {item}: no simulator '{keys[0]}' (simulators: {', '.join(s.kind for s in sims)})")
        value = yaml.load(text) if text.strip() else ""
        for i in hits:
            node = configs[i]
            for key in keys[1:-1]:
                child = node.get(key)
                node[key] = child = dict(child) if isinstance(child, dict) else {}
                node = child
            node[keys[-1]] = value
    return configs
