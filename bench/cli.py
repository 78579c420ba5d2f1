"""The ``bench`` command line.

Exit codes: 0 PASS, 1 FAIL, 2 bad input (nothing was run), 3 ERROR, 4 ABORTED, 6 station interlock latched,
or the state folder that holds it not writable (nothing was run), 7 station busy (another run holds
it; nothing was run), 5 unsafe end (a device's safe state was not confirmed after the run),
8 report degraded (the verdict was PASS but the report could not be completely written; the record is complete).
Every error is one line on stderr; set BENCH_DEBUG=1 to see tracebacks of internal errors.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

from bench.heldback import hold_back, placeholder

# typer's rich help imports rich's Markdown renderer (markdown-it) and Traceback renderer (pygments)
# at its top, for help text written in Markdown and for pretty tracebacks: this app has neither
# (rich_markup_mode "rich", pretty_exceptions_enable False). Held back, they cost `bench --help`
# nothing; used after all, they load then.
hold_back(
    "typer.rich_utils",
    {
        "rich.markdown": placeholder("rich.markdown", "Markdown"),
        "rich.traceback": placeholder("rich.traceback", "Traceback"),
    },
)

import typer  # noqa: E402  (after the hold-back above, which must precede typer's first import)

from bench.cli_args import default_station, parse_pairs  # noqa: E402
from bench.errors import BenchError, LoadError  # noqa: E402

# Every other module of the bench is imported inside the command that uses it: `bench --help`
# builds its text from the signatures alone, and the models, parsers and drivers behind them cost
# most of a second (tests/test_lazy_imports.py, benchmarks/startup.py).
if TYPE_CHECKING:
    from bench.engine import Run

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Hardware-in-the-loop safety test bench controller.",
)


@app.command()
def run(
    sequence: Annotated[Path, typer.Argument(help="sequence file (YAML)")],
    station: Annotated[Path | None, typer.Option(help="station file [default: stations/sim.yaml]")] = None,
    param: Annotated[list[str] | None, typer.Option("-p", "--param", help="override a parameter: name=value")] = None,
    fault: Annotated[list[str] | None, typer.Option("--fault", help="inject a simulator fault mode")] = None,
    seed: Annotated[int, typer.Option(help="seed of the simulators' random numbers")] = 1,
    realtime: Annotated[bool, typer.Option("--realtime", help="run on the wall clock, not in virtual time")] = False,
    reports: Annotated[Path, typer.Option(help="where run folders are written")] = Path("reports"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress, only the summary")] = False,
    answers: Annotated[
        Path | None, typer.Option(help="answers to operator prompts (YAML: step name -> answer)")
    ] = None,
    allow_out_of_cal: Annotated[
        str | None, typer.Option(help="run with instruments past their calibration due date; REASON is reported")
    ] = None,
    allow_identity_mismatch: Annotated[
        str | None, typer.Option(help="run although an identity differs from the register; REASON is reported")
    ] = None,
    operator: Annotated[
        str | None, typer.Option(help="who runs the test, for the record and the report [default: the login name]")
    ] = None,
) -> None:
    """Run a sequence on a station and write its record under reports/<run-id>/."""
    from bench.console import Console, RunView, print_parameters, print_summary, run_exit_code
    from bench.plan import build_plan
    from bench.results.rows import RunTags
    from bench.runner import new_run_id, run_plan

    plan = build_plan(sequence, station or default_station(), parse_pairs(param, "-p"), fault or [])
    run_id = new_run_id()
    console = Console(highlight=False, soft_wrap=True, emoji=False)
    indexed: list[str] = []

    def view(engine: Run) -> AbstractContextManager[Any]:
        # Entered once every guard has passed, right before the first device moves.
        if quiet:
            return contextlib.nullcontext()
        clock = "virtual time" if engine.opt.virtual_time else "wall clock"
        console.print(
            f"[bold]{plan.sequence.id}[/] v{plan.sequence.version} on station "
            f"[bold]{plan.station.model.id}[/] ({clock}, seed {seed})"
            + (f", faults: {', '.join(plan.faults)}" if plan.faults else "")
        )
        print_parameters(console, plan)
        return RunView(engine, console)

    result = run_plan(
        plan,
        reports,
        run_id=run_id,
        seed=seed,
        realtime=realtime,
        answers=answers,
        interactive=sys.stdin.isatty(),
        allow_out_of_cal=allow_out_of_cal,
        allow_identity_mismatch=allow_identity_mismatch,
        view=view,
        signals=True,
        on_indexed=indexed.append,
        tags=RunTags(operator=operator.strip() or None) if operator is not None else None,
    )
    # The run is over and recorded: a late Ctrl-C has nothing left to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    print_summary(console, result, str(reports / run_id))
    for line in indexed:  # where the results database has it (docs/results.md)
        console.print(line, markup=False)
    raise typer.Exit(run_exit_code(result))


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="sequence or station files")],
    station: Annotated[Path | None, typer.Option(help="station to check sequences against")] = None,
) -> None:
    """Check sequence and station files without running them."""
    from bench import origins
    from bench.plan import build_plan, check_station
    from bench.station import load_station

    for path in files:
        kind = _kind(path)
        if kind == "station":
            # The same checks `bench run` makes of a station before any device moves.
            notes = check_station(load_station(path)).notes
        else:
            plan = build_plan(path, station or default_station())
            notes = plan.notes
            # Stricter than a run: every limit names its origin and every source its confidence tag.
            refused = origins.problems(plan.sequence)
            if refused:
                raise plan.sequence_source.error(*refused[0])
        typer.echo(f"{path}: ok ({kind})")
        if kind == "sequence":
            for line in origins.describe(plan.sequence):
                typer.echo(f"  {line}")
        for note in notes:
            typer.echo(f"  note: {note}")


def _kind(path: Path) -> str:
    """'station' or 'sequence', from the file's top-level keys (a station has devices, a sequence steps)."""
    from bench.sequence import Sequence
    from bench.station import Station
    from bench.yamlsource import load_yaml

    try:
        keys = set(load_yaml(path, "sequence").root)
    except LoadError:
        return "sequence"  # unreadable: loading it as a sequence reports why, with its line
    station_only = set(Station.model_fields) - set(Sequence.model_fields)
    sequence_only = set(Sequence.model_fields) - set(Station.model_fields)
    if "devices" in keys or (keys & station_only and not keys & sequence_only):
        return "station"
    return "sequence"


@app.command()
def schema(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write to this file")] = None,
    what: Annotated[str, typer.Option(help="'sequence', 'station' or 'result' (result.json)")] = "sequence",
) -> None:
    """Write the JSON Schema of the sequence, station or result.json format."""
    from pydantic import BaseModel

    from bench.result import RunResult
    from bench.sequence import Sequence
    from bench.station import Station

    models: dict[str, type[BaseModel]] = {"sequence": Sequence, "station": Station, "result": RunResult}
    if what not in models:
        raise LoadError(f"--what must be 'sequence', 'station' or 'result', not '{what}'")
    model = models[what]
    text = json.dumps(model.model_json_schema(by_alias=True), indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}")


@app.command()
def verify(
    run_dir: Annotated[Path, typer.Argument(help="a run folder under reports/")],
    trust: Annotated[Path | None, typer.Option(help="file of trusted public keys (base64, one a line)")] = None,
    require_signature: Annotated[
        bool,
        typer.Option(
            "--require-signature",
            help="refuse an unsigned record (also: BENCH_REQUIRE_SIGNATURE=1)",
            show_default=False,
        ),
    ] = False,
) -> None:
    """Prove a run's record is complete and unchanged (hash chain, file hashes, signature).

    Exit 0: intact (signed, or unsigned and allowed); 1: changed, incomplete (unsealed) or
    unsigned where a signature is required; 2: not a run folder or a bad policy value.
    """
    from bench.record import verify_run
    from bench.record.signing import has_station_key, key_dir, signature_requirement
    from bench.record.verify import inspect_unsealed, is_sealed, signature_state

    if not run_dir.is_dir():
        raise LoadError(f"{run_dir}: not a run folder")
    required_by = signature_requirement(require_signature)
    if not is_sealed(run_dir):
        # A killed or crashed run: say how far its hash chain holds. Never "intact": nothing
        # pins the end of the log or the other files.
        unsealed = inspect_unsealed(run_dir)
        typer.echo(f"{run_dir}: {unsealed.summary()}")
        for p in unsealed.problems:
            typer.echo(f"{run_dir}/{p.where}: {p.message}", err=True)
        raise typer.Exit(1)
    problems = verify_run(run_dir, trust)
    if problems:
        for p in problems:
            typer.echo(f"{run_dir}/{p.where}: {p.message}", err=True)
        raise typer.Exit(1)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    counts = f"{manifest['events']['lines']} events, {len(manifest['files'])} files"
    signature = signature_state(run_dir)
    if signature.signed:
        typer.echo(f"{run_dir}: intact and signed ({counts}; {signature.text})")
        return
    if required_by is not None:
        typer.echo(f"{run_dir}: UNSIGNED record refused ({required_by}): {signature.text}", err=True)
        raise typer.Exit(1)
    if has_station_key():
        typer.echo(
            f"WARNING: {run_dir} is UNSIGNED, but this machine holds a station key ({key_dir()}) and signs "
            "the runs it seals: this record was sealed elsewhere, or rewritten and its signature removed; "
            "use --require-signature (or BENCH_REQUIRE_SIGNATURE=1) to refuse unsigned records",
            err=True,
        )
    typer.echo(f"{run_dir}: intact but UNSIGNED ({counts}): {signature.text}")


@app.command("reset-interlock")
def reset_interlock(
    reason: Annotated[str, typer.Option(help="why it is safe to run again (recorded)")],
    station: Annotated[Path | None, typer.Option(help="station file")] = None,
    by: Annotated[str, typer.Option(help="who resets it (recorded)")] = os.environ.get("USER", "unknown"),
) -> None:
    """Clear a latched supervisor trip of a station, with a recorded reason."""
    from bench.interlock import reset_station
    from bench.station import load_station

    st = load_station(station or default_station())
    typer.echo(reset_station(st.model.id, reason, by))


@app.command()
def faults(station: Annotated[Path | None, typer.Option(help="station file")] = None) -> None:
    """List the fault modes of the station's simulators."""
    from bench.device import fault_catalogue
    from bench.station import load_station

    st = load_station(station or default_station())
    # A fault of a shared model (the H2 sensor) acts on every plant that has one: listed once.
    plants: dict[str, tuple[str, list[str]]] = {}
    for sim in st.model.simulators:
        for name, doc in fault_catalogue(sim.kind).items():
            plants.setdefault(name, (doc, []))[1].append(sim.kind)
    for name, (doc, kinds) in sorted(plants.items()):
        typer.echo(f"{name:36s} {doc}" + (f" [{', '.join(kinds)}]" if len(st.model.simulators) > 1 else ""))


@app.command()
def sequences(sequence_file: Annotated[Path, typer.Argument(help="sequence file")]) -> None:
    """Show a sequence's parameters with their defaults and sources."""
    from bench.plan import load_sequence

    _, model = load_sequence(sequence_file)
    for name, p in model.parameters.items():
        origin = f"  ({p.origin})" if p.origin else ""
        typer.echo(f"{name:24s} {p.default:>12s}  {p.doc}{origin}" + (f"  [{p.source}]" if p.source else ""))


def _register_subcommands() -> None:
    # Reports, amendments and keys live in their own module (bench/cli_report.py).
    from bench.cli_report import keys_app, report_app

    app.add_typer(report_app, name="report")
    app.add_typer(keys_app, name="keys")
    # Start from a supplier's DBC: `bench dbc show`, `bench station new` (docs/own-device.md).
    from bench.cli_dbc import dbc_app, station_app

    app.add_typer(dbc_app, name="dbc")
    app.add_typer(station_app, name="station")
    # A lab of benches over MQTT: `bench agent`, `bench lab ...` (bench/cli_lab.py, docs/lab.md).
    from bench.cli_lab import register as register_lab

    register_lab(app)
    from bench.cli_sim import sim_app  # `bench sim serve` (served simulators, docs/served.md)

    app.add_typer(sim_app, name="sim")
    from bench.cli_campaign import campaign  # the fault matrix (bench/campaign.py)

    app.command()(campaign)
    from bench.cli_signals import signals  # what a sequence may name (docs/signals/)

    app.command()(signals)
    from bench.cli_db import register as register_db  # the results database (docs/results.md)

    register_db(app)
    from bench.cli_ui import ui_app  # the operator station in the browser (docs/ui.md)

    app.add_typer(ui_app, name="ui")


_register_subcommands()


def _stderr() -> Any:
    from bench.console import stderr_console

    return stderr_console()


def _aborted_exit_code() -> int:
    from bench.console import EXIT_CODES
    from bench.result import Verdict

    return EXIT_CODES[Verdict.ABORTED]


def _is_record_stage_interrupted(exc: BaseException) -> bool:
    # Raised by a run only: when its module was never imported, this cannot be one.
    stopping = sys.modules.get("bench.stopping")
    return stopping is not None and isinstance(exc, stopping.RecordStageInterrupted)


def _internal_error(exc: Exception) -> NoReturn:
    """A fault of the bench itself: one line and exit 3 (the traceback with BENCH_DEBUG=1)."""
    if os.environ.get("BENCH_DEBUG"):
        raise exc
    _stderr().print(f"internal error: {type(exc).__name__}: {exc} (set BENCH_DEBUG=1 for details)", markup=False)
    sys.exit(3)


def main() -> None:
    try:
        rc = app(standalone_mode=False)
        sys.exit(rc if isinstance(rc, int) else 0)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except BenchError as exc:
        _stderr().print(f"error: {exc}", markup=False, highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _stderr().print("interrupted", markup=False)
        sys.exit(_aborted_exit_code())
    except OSError as exc:
        if exc.filename is None or os.environ.get("BENCH_DEBUG"):
            _internal_error(exc)
        # A file a command was told to write or read (an -o path, an input) that the system
        # refuses: bad input, like a path that does not exist, not a fault of the bench.
        path = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
        _stderr().print(f"error: {path}: {exc.strerror or exc}", markup=False, highlight=False)
        sys.exit(2)
    except Exception as exc:  # click's usage errors and anything unexpected: one line, never a traceback
        err = _stderr()
        # typer vendors click; its usage errors carry format_message() and exit code 2.
        format_message = getattr(exc, "format_message", None)
        if callable(format_message) and getattr(exc, "exit_code", None) == 2:
            err.print(f"error: {format_message()}", markup=False)
            sys.exit(2)
        if type(exc).__name__ == "Abort":
            sys.exit(_aborted_exit_code())
        _internal_error(exc)
    except BaseException as exc:  # a BaseException, so that no `except Exception` of a run swallows it
        if not _is_record_stage_interrupted(exc):
            raise  # SystemExit
        # a second stop signal after the safe state (bench/stopping.py)
        _stderr().print(str(exc), markup=False, highlight=False, emoji=False)
        sys.exit(_aborted_exit_code())


if __name__ == "__main__":
    main()
