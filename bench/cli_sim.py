"""``bench sim serve``: run a station's simulated plants on the wall clock, served over real transports.

The plants are built through the ``bench.simulators`` entry point group, exactly as the engine
builds them for an in-process run; simulators/serve.py then serves what they registered. The
station's ``serve:`` section says what to run and where (docs/served.md)::

    serve:
      simulators_from: sim.yaml          # the plants of another station file (or `simulators: [...]`)
      host: 127.0.0.1
      can: {port: 29536, channels: [bench0]}
      scpi: {psu: 5025, pa: 5026}        # endpoint -> TCP port
      serial_dir: /tmp/hil-bench-sim     # a pty per serial endpoint, linked as <serial_dir>/<endpoint>

A station without ``serve:`` but with ``simulators:`` is served on the defaults above.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ruamel.yaml import YAML

from bench.device import fault_catalogue, load_plant_builder, plant_faults
from bench.errors import BenchError, LoadError
from bench.station import LoadedStation, SimulatorEntry, load_station

sim_app = typer.Typer(no_args_is_help=True, help="Simulated plants served over real transports.")

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


def _serve_section(st: LoadedStation) -> tuple[ServeSection, list[SimulatorEntry], Path]:
    """The serve options, the simulators to run and the folder their relative paths start from."""
    raw = st.model.serve
    if raw is None:
        if not st.model.simulators:
            raise LoadError(f"station '{st.model.id}' has neither 'serve' nor 'simulators': nothing to serve", st.path)
        return ServeSection(), list(st.model.simulators), st.base_dir
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


def _apply_sets(sims: list[SimulatorEntry], sets: list[str]) -> list[dict[str, Any]]:
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


@sim_app.command()
def serve(
    station: Annotated[Path | None, typer.Option(help="station file [default: stations/sim-served.yaml]")] = None,
    port_offset: Annotated[int, typer.Option(help="add this to every TCP port (parallel servers)")] = 0,
    serial_dir: Annotated[Path | None, typer.Option(help="folder of the serial ports' links")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a plant setting: KIND.key=value")] = None,
    fault: Annotated[list[str] | None, typer.Option("--fault", help="inject a simulator fault mode")] = None,
    seed: Annotated[int, typer.Option(help="seed of the simulators' random numbers")] = 1,
) -> None:
    """Run the station's simulated plants on the wall clock and serve them on 127.0.0.1 until Ctrl-C."""
    from simulators.serve import ServeOptions, SimServer

    st = load_station(station or default_served_station())
    section, sims, base_dir = _serve_section(st)
    configs = _apply_sets(sims, set_ or [])
    faults = list(dict.fromkeys([*st.model.faults, *(fault or [])]))
    known: dict[str, str] = {}
    for sim in sims:
        known.update(fault_catalogue(sim.kind))
    for f in faults:
        if f not in known:
            raise LoadError(f"unknown fault '{f}' (faults of these simulators: {', '.join(sorted(known))})")
    options = ServeOptions(
        host=section.host,
        can_port=section.can.port,
        can_channels=list(section.can.channels),
        scpi_ports=dict(section.scpi),
        serial_dir=serial_dir or Path(section.serial_dir),
        port_offset=port_offset,
    )

    async def main() -> None:
        registered: dict[str, Any] = {}
        plants = []
        for i, (sim, config) in enumerate(zip(sims, configs, strict=True)):
            builder = load_plant_builder(sim.kind)
            if "dbc" in config:
                config["dbc"] = str((base_dir / str(config["dbc"])).resolve())
            try:
                own = plant_faults(sim.kind, faults)
                plants.append(builder(config, faults=own, seed=seed + i, register=registered.__setitem__))
            except ValueError as exc:
                raise LoadError(f"simulator {sim.kind}: {exc}") from None
        server = SimServer(plants, registered, options)
        try:
            endpoints = await server.start()
        except OSError as exc:
            raise BenchError(f"cannot serve: {exc}") from None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        kinds = ", ".join(f"{s.kind} (seed {seed + i})" for i, s in enumerate(sims))
        print(
            f"serving station {st.model.id}: {kinds} on the wall clock"
            + (f", faults: {', '.join(faults)}" if faults else "")
        )
        for ep in endpoints:
            print(f"  {ep.kind:6s} {ep.name:8s} {ep.address}" + (f"    {ep.detail}" if ep.detail else ""))
        print("ready; Ctrl-C stops", flush=True)
        try:
            await stop.wait()
        finally:
            await server.stop()
        print("stopped", flush=True)

    with asyncio.Runner() as runner:
        runner.run(main())
    sys.stdout.flush()
