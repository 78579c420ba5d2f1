"""A fault-matrix campaign: every sequence against the nominal simulator and every fault mode.

Each cell is an ordinary run with its own sealed record (result, events, CAN traffic), made
without the rendered report so that hundreds of cells stay cheap; ``bench report render``
renders any cell later. Cells run in worker processes, one per core: each run owns its event
loop and virtual clock, so cells are independent and their order does not matter.

A cell that trips the station's supervisor latches an interlock of its own (a state folder
per cell): the simulated rig starts afresh for every cell, and the trip stays in the cell's record.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

from bench.device import fault_catalogue
from bench.errors import BenchError, LoadError
from bench.matrix import NOMINAL, Cell, Matrix
from bench.report.fault_matrix import render_matrix_html
from bench.station import load_station


def collect_sequences(paths: Iterable[Path]) -> dict[str, Path]:
    """Sequence files under ``paths`` (files or folders), by sequence id; ids must be unique."""
    from bench.plan import load_sequence

    found: dict[str, Path] = {}
    for p in paths:
        if not p.exists():
            raise LoadError(f"{p}: no such file or folder")
        files = sorted(p.rglob("*.yaml")) if p.is_dir() else [p]
        for f in files:
            _, model = load_sequence(f)
            if model.id in found:
                raise LoadError(f"{f}: sequence id {model.id} is also used by {found[model.id]}")
            found[model.id] = f
    if not found:
        raise LoadError(f"no sequence files (*.yaml) in {', '.join(str(p) for p in paths)}")
    return found


def station_fault_names(station: Path, wanted: str) -> list[str]:
    """``all``, ``none`` or a comma-separated list, checked against the station's simulators."""
    st = load_station(station)
    known: dict[str, str] = {}
    for sim in st.model.simulators:
        known.update(fault_catalogue(sim.kind))
    if wanted.strip() == "none":
        return []
    if wanted.strip() == "all":
        if not known:
            raise LoadError(f"station '{st.model.id}' has no simulators, so no fault modes")
        return sorted(known)
    names = [n.strip() for n in wanted.split(",") if n.strip()]
    for n in names:
        if n not in known:
            raise LoadError(f"unknown fault '{n}' (faults of this station: {', '.join(sorted(known))})")
    return names


def run_cell(
    sequence: str,
    station: str,
    fault: str,
    params: Mapping[str, str],
    out_dir: str,
    seed: int,
    campaign_id: str | None = None,
) -> Cell:
    """One cell, in a worker process. Never raises: a load error is the cell's ERROR. Its run is
    indexed with the campaign's id and its fault column, kept apart from production runs."""
    from bench.plan import build_plan, load_sequence
    from bench.results.rows import RunTags
    from bench.runner import run_plan

    _, model = load_sequence(Path(sequence))
    try:
        os.environ["BENCH_STATE_DIR"] = str(Path(out_dir) / "state" / f"{model.id}--{fault}")
        overrides = {k: v for k, v in params.items() if k in model.parameters}
        plan = build_plan(Path(sequence), Path(station), overrides, [] if fault == NOMINAL else [fault])
        t0 = time.perf_counter()
        tags = RunTags(campaign_id=campaign_id, fault=fault) if campaign_id else None
        result = run_plan(plan, Path(out_dir) / "runs", seed=seed, full_report=False, tags=tags)
    except BenchError as exc:
        return Cell(model.id, fault, "ERROR", str(exc))
    meas = [{"name": m.name, "value": m.value, "unit": m.unit, "outcome": m.outcome.value} for m in result.measurements]
    return Cell(
        model.id,
        fault,
        result.verdict.value,
        result.reason,
        result.run_id,
        round(result.sim_duration_s, 3),
        round(time.perf_counter() - t0, 3),
        result.unsafe_end,
        meas,
    )


# How much lower than its parent a campaign worker runs (Linux nice steps). A campaign is batch work
# in virtual time, and its results do not depend on when it gets the CPU; a wall-clock run on the
# same machine (a real bench, `--realtime`, a served plant) does, since a frame or a debounce tick
# served late shifts a measured reaction time. At 10 steps a busy worker gets about a tenth of the
# share of a process at the parent's priority, and all of an idle machine.
CAMPAIGN_NICENESS = 10


def campaign_pool(workers: int) -> ProcessPoolExecutor:
    """The worker processes of a campaign: fresh interpreters (no threads or loops inherited), at a
    lower priority than the caller (see CAMPAIGN_NICENESS)."""
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=get_context("spawn"), initializer=os.nice, initargs=(CAMPAIGN_NICENESS,)
    )


def run_campaign(
    sequences: Mapping[str, Path],
    station: Path,
    faults: Sequence[str],
    params: Mapping[str, str],
    out_dir: Path,
    campaign_id: str,
    started_utc: str,
    *,
    jobs: int = 0,
    seed: int = 1,
    progress: Callable[[int, int, Cell], None] | None = None,
) -> Matrix:
    from bench.runner import station_guard  # the engine's imports: only when a campaign starts

    # The campaign holds the station (its lock and interlock, in the state folder) for all its
    # cells; each cell then latches in a folder of its own (see the module's docstring).
    with station_guard(load_station(station).model.id, campaign_id, f"campaign {campaign_id}"):
        columns = [NOMINAL, *faults]
        todo = [(sid, f) for sid in sequences for f in columns]
        idle = faults_out_of_reach(sequences, station, faults, params)
        out_dir.mkdir(parents=True, exist_ok=False)
        matrix = Matrix(
            campaign_id,
            str(station),
            {k: str(v) for k, v in sequences.items()},
            list(faults),
            dict(params),
            [],
            started_utc,
        )
        t0 = time.perf_counter()
        with campaign_pool(jobs or os.cpu_count() or 1) as pool:
            futures = {
                pool.submit(
                    run_cell, str(sequences[sid]), str(station), f, dict(params), str(out_dir), seed, campaign_id
                ): (sid, f)
                for sid, f in todo
                if (sid, f) not in idle
            }
            try:
                for fut in as_completed(futures):
                    sid, f = futures[fut]
                    try:
                        cell = fut.result()
                    except Exception as exc:  # a worker that died is that cell's ERROR, not the campaign's end
                        cell = Cell(sid, f, "ERROR", f"worker failed: {type(exc).__name__}: {exc}")
                    matrix.cells.append(cell)
                    if progress is not None:
                        progress(len(matrix.cells), len(todo), cell)
            except KeyboardInterrupt:
                for fut in futures:
                    fut.cancel()
                raise
        for (sid, f), kinds in idle.items():
            nominal = matrix.cell(sid, NOMINAL)
            assert nominal is not None  # the nominal column is always run
            matrix.cells.append(stands_on_nominal(nominal, f, kinds))
            if progress is not None:
                progress(len(matrix.cells), len(todo), matrix.cells[-1])
    order = {(sid, f): i for i, (sid, f) in enumerate(todo)}
    matrix.cells.sort(key=lambda c: order[(c.sequence, c.fault)])
    matrix.wall_s = time.perf_counter() - t0
    return matrix


def faults_out_of_reach(
    sequences: Mapping[str, Path], station: Path, faults: Sequence[str], params: Mapping[str, str]
) -> dict[tuple[str, str], list[str]]:
    """Cells whose fault cannot act on the sequence, with the simulators that carry the fault.

    A fault acts only through the plant of the simulator that carries it (``plant_faults`` in the
    engine), and a run starts only the plants behind the devices it uses
    (``Plan.simulators_started``). A fault of a plant the sequence never starts leaves the run
    exactly the nominal run, so such a cell is not run again: it stands on the nominal cell
    (``Cell.same_as``). A sequence whose plan cannot be built keeps all its cells (each says why).
    """
    from bench.plan import build_plan, load_sequence

    carriers: dict[str, set[str]] = {}
    for sim in load_station(station).model.simulators:
        for f in fault_catalogue(sim.kind):
            carriers.setdefault(f, set()).add(sim.kind)
    idle: dict[tuple[str, str], list[str]] = {}
    for sid, path in sequences.items():
        try:
            _, model = load_sequence(path)
            overrides = {k: v for k, v in params.items() if k in model.parameters}
            plan = build_plan(path, station, overrides, [])
        except BenchError:
            continue
        started = {sim.kind for _, sim in plan.simulators_started()}
        for f in faults:
            kinds = carriers.get(f, set())
            if kinds and not kinds & started:
                idle[(sid, f)] = sorted(kinds)
    return idle


def stands_on_nominal(nominal: Cell, fault: str, kinds: Sequence[str]) -> Cell:
    return Cell(
        nominal.sequence,
        fault,
        nominal.verdict,
        f"not run: {fault} is a fault of the {' and '.join(kinds)} simulator, which this sequence does not"
        f" start; its run is the nominal run ({nominal.reason})",
        nominal.run_id,
        nominal.sim_s,
        0.0,
        nominal.unsafe_end,
        nominal.measurements,
        same_as=NOMINAL,
    )


def write_matrix(matrix: Matrix, out_dir: Path) -> tuple[Path, Path]:
    js = out_dir / "fault-matrix.json"
    js.write_text(json.dumps(matrix.to_json(), indent=2) + "\n", encoding="utf-8")
    html = out_dir / "fault-matrix.html"
    html.write_text(render_matrix_html(matrix), encoding="utf-8")
    return js, html


# -- the committed expectation ------------------------------------------------------------------


def load_expected(path: Path) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """(campaign params, {sequence id: {fault: verdict}}) from an expectation file."""
    from ruamel.yaml import YAML

    try:
        data = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise LoadError(f"{path}: {exc.strerror}") from None
    except Exception as exc:
        raise LoadError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict) or not isinstance(data.get("sequences"), dict):
        raise LoadError(f"{path}: expected a mapping with 'sequences: {{<id>: {{<fault>: <verdict>}}}}'")
    params = {str(k): str(v) for k, v in (data.get("params") or {}).items()}
    cells = {str(s): {str(f): str(v) for f, v in (row or {}).items()} for s, row in data["sequences"].items()}
    return params, cells


def compare(matrix: Matrix, expected: Mapping[str, Mapping[str, str]]) -> list[str]:
    """Differences between the observed matrix and the expectation, one line each."""
    diffs = []
    observed = matrix.verdicts()
    for seq in sorted(set(observed) | set(expected)):
        if seq not in expected:
            diffs.append(f"{seq}: observed but not in the expectation")
            continue
        if seq not in observed:
            diffs.append(f"{seq}: expected but not run")
            continue
        for f in sorted(set(observed[seq]) | set(expected[seq])):
            want, got = expected[seq].get(f), observed[seq].get(f)
            if want != got:
                cell = matrix.cell(seq, f)
                why = f" ({cell.reason})" if cell is not None and got != want else ""
                diffs.append(f"{seq} x {f}: expected {want or 'nothing'}, observed {got or 'nothing'}{why}")
    return diffs


def expected_yaml(matrix: Matrix) -> str:
    lines = [
        "# Expected fault matrix: the verdict of every sequence against the nominal simulator and",
        "# each fault mode (bench campaign ... --expect this file). Regenerate with --write-expected",
        "# and review every changed cell before committing it.",
        f"station: {matrix.station}",
        "params:" + ("" if matrix.params else " {}"),
        *[f"  {k}: {v}" for k, v in matrix.params.items()],
        "sequences:",
    ]
    for seq, row in matrix.verdicts().items():
        lines.append(f"  {seq}:")
        lines += [f"    {f}: {row[f]}" for f in [NOMINAL, *matrix.faults] if f in row]
    return "\n".join(lines) + "\n"


def print_progress(done: int, total: int, cell: Cell) -> None:
    reason = cell.reason if len(cell.reason) <= 90 else cell.reason[:87] + "..."
    print(
        f"[{done:>{len(str(total))}}/{total}] {cell.sequence} x {cell.fault}: {cell.verdict}"
        f" ({cell.wall_s:.1f} s) {reason}",
        file=sys.stderr,
        flush=True,
    )
