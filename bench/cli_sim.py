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

A station without ``serve:`` but with ``simulators:`` is served on the defaults above, except
that the CAN channels served are the in-process ones its devices open.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from bench.errors import BenchError, LoadError

sim_app = typer.Typer(no_args_is_help=True, help="Simulated plants served over real transports.")


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
    # The station's models, the plants and the servers load here, not in `bench --help`.
    import asyncio
    import signal

    from bench.device import fault_catalogue, load_plant_builder, plant_faults
    from bench.serve_section import apply_sets, default_served_station, serve_section
    from bench.station import load_station
    from simulators.serve import ServeOptions, SimServer

    st = load_station(station or default_served_station())
    section, sims, base_dir = serve_section(st)
    configs = apply_sets(sims, set_ or [])
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
