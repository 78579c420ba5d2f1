"""``bench campaign``: the fault matrix over a folder of sequences (bench/campaign.py, docs/campaign.md).

Exit codes: 0 when the matrix is convincing (and matches ``--expect`` if given), 1 when it is not
(a nominal run that fails, an empty row or column, a cell that differs from the expectation),
2 for bad input, 6 when the station's interlock is latched (or its state folder not writable),
7 when another run holds the station.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from bench.clock import utc
from bench.errors import LoadError
from bench.suggest import did_you_mean


def campaign(
    paths: Annotated[list[Path], typer.Argument(help="sequence files or folders (searched for *.yaml)")],
    station: Annotated[Path | None, typer.Option(help="station file [default: stations/sim.yaml]")] = None,
    faults: Annotated[
        str, typer.Option(help="'all' (every fault mode of the station's simulators), 'none', or a comma list")
    ] = "all",
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="name=value for every sequence that declares the parameter"),
    ] = None,
    reports: Annotated[Path, typer.Option(help="folder for the campaign folder")] = Path("reports"),
    jobs: Annotated[int, typer.Option(help="worker processes [default: one per core]")] = 0,
    seed: Annotated[int, typer.Option(help="random seed of the simulators, the same for every cell")] = 1,
    expect: Annotated[
        Path | None, typer.Option(help="expected matrix (YAML); any differing cell fails the campaign")
    ] = None,
    write_expected: Annotated[
        Path | None, typer.Option(help="write the observed matrix as an expectation file, for review")
    ] = None,
) -> None:
    """Run every sequence against the nominal simulator and every fault mode; write the fault matrix."""
    import uuid6

    from bench.campaign import (
        collect_sequences,
        compare,
        expected_yaml,
        load_expected,
        print_progress,
        run_campaign,
        station_fault_names,
        write_matrix,
    )
    from bench.cli_args import default_station, parse_pairs

    station_path = station or default_station()
    params = parse_pairs(param, "-p")
    expected = None
    exp_params: dict[str, str] = {}
    if expect is not None:
        exp_params, expected = load_expected(expect)
        if exp_params and exp_params != params:
            shown = " ".join(f"-p '{k}={v}'" for k, v in exp_params.items())
            raise LoadError(f"{expect} was recorded with {shown}; run the campaign with the same parameters")
    sequences = collect_sequences(paths)
    fault_names = station_fault_names(station_path, faults)
    # Fail on a bad sequence or parameter before the first of hundreds of runs starts.
    from bench.plan import build_plan, load_sequence

    declared: set[str] = set()
    for path in sequences.values():
        _, model = load_sequence(path)
        build_plan(path, station_path, {k: v for k, v in params.items() if k in model.parameters})
        declared.update(model.parameters)
    # A parameter no sequence declares is a typo, unless it belongs to the expectation's profile
    # (a slice of the matrix may not contain the sequences that declare it).
    unknown = [k for k in params if k not in declared and k not in exp_params]
    if unknown:
        raise LoadError(f"-p {unknown[0]}: no sequence declares this parameter{did_you_mean(unknown[0], declared)}")
    campaign_id = str(uuid6.uuid7())
    out = reports / campaign_id
    started = utc(time.time())
    total = len(sequences) * (len(fault_names) + 1)
    typer.echo(
        f"campaign {campaign_id}: {len(sequences)} sequences x (nominal + {len(fault_names)} fault modes)"
        f" = {total} runs on {station_path}",
        err=True,
    )
    matrix = run_campaign(
        sequences, station_path, fault_names, params, out, campaign_id, started, jobs=jobs, seed=seed,
        progress=print_progress,
    )  # fmt: skip
    js, html = write_matrix(matrix, out)
    typer.echo(f"wrote {html}")
    typer.echo(f"wrote {js}")
    if write_expected is not None:
        write_expected.write_text(expected_yaml(matrix), encoding="utf-8")
        typer.echo(f"wrote {write_expected}")
    problems = matrix.findings()
    if expected is not None:
        problems += compare(matrix, expected)
    for p in problems:
        typer.echo(f"finding: {p}", err=True)
    counts = {v: sum(1 for c in matrix.cells if c.verdict == v) for v in ("PASS", "FAIL", "ABORTED", "ERROR")}
    typer.echo(
        f"{len(matrix.cells)} runs in {matrix.wall_s:.0f} s: "
        + ", ".join(f"{n} {v}" for v, n in counts.items())
        + (
            f"; {len(problems)} finding(s)"
            if problems
            else "; the matrix is complete" + (" and as expected" if expected else "")
        )
    )
    if problems:
        raise typer.Exit(1)
