"""The end of a run's record (stage 7 of docs/lifecycle.md): the verdict, result.json, the
reports, ``run_ended`` and the manifest; then (stage 8) the PDF of the sealed report.

Runs after the safe state was read back and the devices were closed. The verdict is the stop
reason (or the first failure, or PASS), then a failed cleanup step turns a PASS into ERROR, an
unsafe end names the device, and a record that could not be written makes it ERROR naming the
write. Nothing written here may raise into the run: a failed write is noted by the recorder and
the record is sealed for what it holds.

The PDF comes after the seal: the verdict, the record and the manifest are final before it is
typeset, so a typesetter that fails cannot change any of them. What failed is written into
``report-pdf.json`` (bench/record/pdfseal.py) and said in one line on stderr; the run's verdict
and exit code stay what the record says.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from typing import Any

from bench import __version__
from bench.clock import utc
from bench.events import EventKind
from bench.record import file_sha256
from bench.report import runtime
from bench.result import Outcome, Parameter, RunResult, Verdict
from bench.runcontext import RunContext, rounded


async def finish_record(ctx: RunContext) -> RunResult:
    assert ctx.rec is not None
    plan = ctx.plan
    verdict, reason = Verdict.PASS, "all steps passed and every measurement is within its limits"
    if ctx.stop is not None:
        verdict, reason = ctx.stop
    elif ctx.first_fail is not None:
        verdict, reason = Verdict.FAIL, ctx.first_fail
    failed_cleanup = [s for s in ctx.step_results if s.phase == "cleanup" and s.outcome != Outcome.PASS]
    if verdict == Verdict.PASS and failed_cleanup:
        verdict, reason = Verdict.ERROR, f"cleanup step '{failed_cleanup[0].name}': {failed_cleanup[0].message}"
    unsafe = [s.device for s in ctx.safe_readbacks if not s.safe]
    if unsafe:
        # The rig may still be energised: that outranks whatever the test itself concluded.
        unsafe_end = f"UNSAFE END: safe state not confirmed for {', '.join(unsafe)}"
        if verdict == Verdict.PASS:
            # The line under the verdict ERROR says why it is ERROR, not that everything passed.
            verdict, reason = Verdict.ERROR, unsafe_end
        else:
            reason += f"; {unsafe_end}"
    end = ctx.now()
    ctx.rec.close_traffic()
    verdict, reason = _with_record_failure(ctx, verdict, reason)
    wall = ctx.opt.wall_clock() if ctx.opt.wall_clock else 0.0
    seq = plan.sequence
    result = RunResult(
        run_id=ctx.opt.run_id,
        verdict=verdict,
        reason=reason,
        sequence={
            "id": seq.id,
            "title": seq.title,
            "version": seq.version,
            "basis": seq.basis.model_dump(),
            "path": str(plan.sequence_source.path),
            "sha256": plan.sequence_sha256,
        },
        station={
            "id": plan.station.model.id,
            "title": plan.station.model.title,
            "path": str(plan.station.path),
            "sha256": plan.station.source.sha256,
            "simulated": plan.station.model.simulated,
            "virtual_time": ctx.opt.virtual_time,
        },
        parameters=[
            Parameter(name=p.name, value=str(p.value), default=str(p.default), overridden=p.overridden, doc=p.doc)
            for p in plan.params.values()
        ],
        faults=list(plan.faults),
        seed=ctx.opt.seed,
        started_utc=ctx.opt.started_utc,
        ended_utc=utc(ctx.opt.start_epoch + (end - ctx.state.t0)),
        sim_duration_s=rounded(end - ctx.state.t0),
        wall_duration_s=round(wall, 3),
        steps=ctx.step_results,
        measurements=ctx.measurements,
        marks=dict(ctx.bus.marks),
        devices=ctx.identities,
        safe_state=ctx.safe_readbacks,
        dtcs=ctx.dtc_reads,
        operator_entries=ctx.operator_entries,
        unsafe_end=bool(unsafe),
        record_error=ctx.rec.write_error,
        code_version=__version__,
        operator=ctx.opt.operator,
        decision_rule=runtime.decision_rule(plan),
        deviations=ctx.deviations + _skipped(ctx),
        environment=runtime.environment(plan, ctx.bus),
        equipment=runtime.equipment_record(plan, _date(ctx.opt.start_epoch)),
    )
    ctx.state.verdict, ctx.state.reason = verdict, reason
    rec = ctx.rec
    hashes: dict[str, str] = {}
    try:
        # A record that already failed gets no 17025 rendering: it would only fail again.
        hashes = rec.write_outputs(result, full=ctx.opt.full_report and rec.write_error is None)
    except OSError as exc:
        rec.note_write_failure("result.json / junit.xml", exc)
    _mark_record_failure(ctx, result)
    problems: dict[str, Any] = {}
    if rec.render_error:
        problems.update(render_error=rec.render_error, report_degraded=True)
    if rec.write_error:
        problems.update(record_error=rec.write_error, events_lost=rec.events_lost, frames_lost=rec.frames_lost)
    ctx.event(
        EventKind.RUN_ENDED,
        verdict=result.verdict.value,
        reason=result.reason,
        frames=rec.frames,
        outputs=hashes,
        **problems,
    )
    ctx.state.phase = "done"
    info: dict[str, Any] = {
        "run_id": ctx.opt.run_id,
        "sequence": {"id": seq.id, "version": seq.version, "sha256": plan.sequence_sha256},
        "station": {"id": plan.station.model.id, "sha256": plan.station.source.sha256},
        "dbc": {p.name: file_sha256(p) for p in plan.files()},
        "code_version": __version__,
        "verdict": result.verdict.value,
    }
    if rec.write_error:
        # Sealed for what it holds, and saying plainly that it does not hold everything.
        info["record_error"] = rec.write_error
    if rec.render_error:
        info["report_degraded"] = rec.render_error
    try:
        rec.seal(info)
    except OSError as exc:
        rec.note_write_failure("manifest.json", exc)
    _mark_record_failure(ctx, result)
    return result


def typeset_pdf(ctx: RunContext) -> None:
    """Stage 8: ``report.pdf`` from the sealed ``report.html``, and ``report-pdf.json`` vouching for it.

    Never raises: the run is over and its record sealed. A failure leaves no PDF, and the seal
    file names what failed (or, on a disk too full for that, nothing is written after the seal).
    """
    rec = ctx.rec
    if rec is None or not rec.pdf_pending or ctx.state.phase != "done":
        return
    from bench.record.pdfseal import PDF_NAME, seal_pdf
    from bench.report import render

    t = time.perf_counter()
    target = rec.dir / PDF_NAME
    error: str | None = None
    try:
        render.write_pdf((rec.dir / "report.html").read_text(encoding="utf-8"), target)
    except Exception as exc:  # any failure of the typesetter is the report's, never the run's
        error = f"pdf: {type(exc).__name__}: {exc}"
        with contextlib.suppress(OSError):
            target.unlink(missing_ok=True)  # a half-written PDF must not look like a report
    try:
        seal_pdf(rec.dir, error, _typesetter())
    except Exception as exc:  # a full disk, or a key that cannot be read: no seal file
        error = "; ".join(filter(None, [error, f"report-pdf.json: {type(exc).__name__}: {exc}"]))
        with contextlib.suppress(OSError):
            target.unlink(missing_ok=True)  # not vouched for: `bench verify` would call it added
    rec.pdf_error = error
    rec.timings["pdf_s"] = time.perf_counter() - t


def _typesetter() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"typst {version('typst')}"
    except PackageNotFoundError:
        return "typst"


def _skipped(ctx: RunContext) -> list[str]:
    """Steps of the method that were not performed (the run ended before them)."""
    done = {s.name for s in ctx.step_results if s.phase == "steps"}
    missing = [s.name for s in ctx.plan.steps if s.name not in done]
    return [f"steps not performed (run ended early): {', '.join(missing)}"] if missing else []


def _with_record_failure(ctx: RunContext, verdict: Verdict, reason: str) -> tuple[Verdict, str]:
    """The verdict once the record could not be written: ERROR, naming the failed write."""
    error = ctx.rec.write_error if ctx.rec is not None else None
    if error is None or reason.startswith("record could not be written"):
        return verdict, reason
    text = f"record could not be written: {error}"
    return Verdict.ERROR, text if verdict == Verdict.PASS else f"{text}; the run: {verdict.value}: {reason}"


def _mark_record_failure(ctx: RunContext, result: RunResult) -> None:
    """Carry a write failure found while writing the outputs into the result (in memory)."""
    if ctx.rec is None or ctx.rec.write_error is None:
        return
    result.verdict, result.reason = _with_record_failure(ctx, result.verdict, result.reason)
    result.record_error = result.record_error or ctx.rec.write_error
    ctx.state.verdict, ctx.state.reason = result.verdict, result.reason


def _date(epoch: float) -> dt.date:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).date()
