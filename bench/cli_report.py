"""``bench report ...`` and ``bench keys ...`` (the calibration gate of every run is in bench/runner.py).

Registered on the main app by ``bench/cli.py``. Heavy imports (the Typst typesetter, matplotlib,
asammdf, cryptography) happen inside the commands, so ``bench --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bench.errors import LoadError

report_app = typer.Typer(no_args_is_help=True, help="Render, amend and combine ISO/IEC 17025 reports.")
keys_app = typer.Typer(no_args_is_help=True, help="The station signing key (Ed25519).")


@report_app.command("render")
def render(
    run_dir: Annotated[Path, typer.Argument(help="a run folder")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="folder to write to (not the run)")] = None,
    pdf: Annotated[bool, typer.Option("--pdf/--no-pdf", help="also write report.pdf")] = True,
) -> None:
    """Render the report of a run again from its record, into another folder (the record is never changed).

    A run that never sealed its record (killed or crashed: no manifest.json) is rendered as an
    INCOMPLETE document from its intact events, without a verdict.
    """
    from bench.record.verify import is_sealed

    sealed = is_sealed(run_dir)
    if not (run_dir / "result.json").is_file() and (sealed or not (run_dir / "events.jsonl").is_file()):
        raise LoadError(f"{run_dir}: not a run folder (no result.json)")
    out = output or Path(f"{run_dir}-rendered")
    if out.resolve() == run_dir.resolve():
        raise LoadError("the run folder is the record; render into another folder")
    out.mkdir(parents=True, exist_ok=True)
    if sealed:
        from bench.report.render import render_report

        files = render_report(run_dir, out, pdf=pdf)
    else:
        files = _render_incomplete(run_dir, out, pdf=pdf)
    for f in files:
        typer.echo(f"wrote {f}")


def _render_incomplete(run_dir: Path, out: Path, *, pdf: bool) -> list[Path]:
    from bench.record.verify import inspect_unsealed
    from bench.report.incomplete import build_incomplete_html
    from bench.report.render import write_pdf

    text = build_incomplete_html(run_dir, inspect_unsealed(run_dir))
    html_path = out / "report.html"
    html_path.write_text(text, encoding="utf-8")
    typer.echo(f"{run_dir}: unsealed run rendered as INCOMPLETE (no verdict)", err=True)
    return [html_path, write_pdf(text, out / "report.pdf")] if pdf else [html_path]


@report_app.command("amend")
def amend(
    run_dir: Annotated[Path, typer.Argument(help="the run folder whose report is amended")],
    reason: Annotated[str, typer.Option(help="why the report is amended (ISO/IEC 17025 7.8.8)")],
    by: Annotated[str, typer.Option(help="person responsible for the amendment")],
    pdf: Annotated[bool, typer.Option("--pdf/--no-pdf", help="also write report.pdf")] = True,
) -> None:
    """Issue an amended report with a new id that references and supersedes the original."""
    from bench.record.verify import is_sealed
    from bench.report.amend import amend_report

    if not (run_dir / "result.json").is_file():
        raise LoadError(f"{run_dir}: not a run folder (no result.json)")
    if not is_sealed(run_dir):
        # Its result is pinned by nothing: an amended report would lend it a verdict it cannot prove.
        raise LoadError(f"{run_dir}: unsealed run (no manifest.json) cannot be amended; `bench report render` shows it")
    out, report_id = amend_report(run_dir, reason=reason, by=by, pdf=pdf)
    typer.echo(f"amended report {report_id} in {out}")


@report_app.command("campaign")
def campaign(
    runs: Annotated[list[Path], typer.Argument(help="run folders")],
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write")] = Path("campaign.html"),
    trend: Annotated[
        list[str] | None,
        typer.Option("--trend", help="add the X/MR control chart of this measurement across the runs (repeatable)"),
    ] = None,
) -> None:
    """One summary report over many runs (each run keeps its own full report)."""
    from bench.report.render import render_campaign

    render_campaign(runs, output, trend or [])
    typer.echo(f"wrote {output}")


@keys_app.command("init")
def keys_init(
    directory: Annotated[
        Path | None, typer.Option("--dir", help="key folder [default: $BENCH_KEY_DIR or ~/.config/hil-bench]")
    ] = None,
    force: Annotated[bool, typer.Option(help="replace an existing key")] = False,
) -> None:
    """Create the station's Ed25519 signing key (kept outside the repository)."""
    from bench.record.signing import fingerprint, init_key

    try:
        path, pub = init_key(directory, force)
    except FileExistsError as exc:
        raise LoadError(str(exc)) from None
    typer.echo(f"created {path} (public key {pub}, fingerprint {fingerprint(pub)})")


@keys_app.command("show")
def keys_show() -> None:
    """Show the station's public key."""
    from bench.record.signing import key_dir, load_key

    key = load_key()
    if key is None:
        raise LoadError(f"no station key in {key_dir()} (create one with `bench keys init`)")
    typer.echo(f"{key.public_b64}  fingerprint {key.fingerprint}  ({key_dir()})")
