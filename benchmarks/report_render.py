"""Rendering the report of a 600-step run: HTML + plots + PDF, Typst against WeasyPrint.

A generated sequence of N steps (as in benchmarks/engine_steps.py, cycling through set / check /
measure, plus three display signals so that the report has its plots) runs once on the simulated
station in virtual time with a plain record. Its report is then rendered from that record,
several rounds, interleaved:

* ours: ``build_html`` (the 17025 HTML with its plots, given the sequence the run loaded, as a
  run renders it) and the PDF typeset by Typst (``bench.report.typeset``);
* baseline: the same HTML and the PDF printed by WeasyPrint from it, as runs did before.

The figure is process CPU time (Typst's threads included), median of the rounds; wall time is
printed beside it. The first round of each pays its imports (matplotlib, the typesetter) and is
left out of the median. The plots and the HTML are also timed on their own.

Every round is checked: both PDFs have the report id and "page n of N" on every page, end with
the end-of-report mark, and every word of the HTML's text is in the Typst PDF's text (white space aside).

    .venv/bin/python benchmarks/report_render.py [--steps 600] [--rounds 5] [--smoke] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.engine import Run, RunOptions  # noqa: E402
from bench.plan import build_plan  # noqa: E402
from bench.sequence import Sequence  # noqa: E402
from bench.vtime import VirtualTimeLoop  # noqa: E402
from benchmarks.engine_steps import HEAD, KINDS, STATION  # noqa: E402
from benchmarks.table import Row, add_arguments, emit  # noqa: E402

GOAL_S = 2.0
DISPLAY = "display: [bms.cell_v_max, bms.soc, psu.voltage]\nrecord_interval: 1 s\n"


def sequence(n: int, folder: Path) -> Path:
    body = "".join(KINDS[i % 3].format(i=i, v=100 + i % 50) for i in range(n))
    path = folder / f"report_{n}.yaml"
    path.write_text(HEAD.replace("steps:\n", DISPLAY + "steps:\n") + body)
    return path


def one_run(n: int, folder: Path) -> tuple[Path, Sequence]:
    plan = build_plan(sequence(n, folder), STATION)
    run_id = f"report-{n}"
    opts = RunOptions(reports_dir=folder / "reports", run_id=run_id, full_report=False)
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        result = runner.run(Run(plan, opts).execute())
    assert result.verdict.value == "PASS", result.reason
    return opts.reports_dir / run_id, plan.sequence


def timed(work: Callable[[], object]) -> tuple[float, float]:
    c0, w0 = time.process_time(), time.perf_counter()
    work()
    return time.process_time() - c0, time.perf_counter() - w0


def pages(pdf: Path) -> list[str]:
    from pypdf import PdfReader

    return [re.sub(r"\s+", " ", p.extract_text() or "") for p in PdfReader(str(pdf)).pages]


def check_pdf(pdf: Path, html_text: str, same_words: bool) -> int:
    from tests.report_support import plain_text

    texts = pages(pdf)
    rid = re.search(r'id="rid">([^<]+)<', html_text)
    assert rid is not None
    n = len(texts)
    for i, page in enumerate(texts, 1):
        assert rid.group(1) in page, f"{pdf.name}: page {i} lacks the report id"
        assert f"page {i} of {n}" in page, f"{pdf.name}: page {i} lacks 'page {i} of {n}'"
    assert f"End of report {rid.group(1)}" in texts[-1], f"{pdf.name}: no end-of-report mark on the last page"
    if same_words:
        # Line breaks fall between words or after a hyphen, and a tag between two words of the
        # HTML (u<sub>c</sub>) is no space in the PDF: compare without any white space.
        joined = "".join("".join(texts).split())
        lost = sorted(w for w in set(plain_text(html_text).split()) if w not in joined)
        assert not lost, f"{pdf.name}: words of the HTML not in the PDF: {lost[:20]}"
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=5)
    add_arguments(parser)
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.rounds = 30, 1
    os.environ.setdefault("MPLBACKEND", "Agg")
    from bench.report.render import build_html
    from bench.report.typeset import write_pdf as typst_pdf

    def weasy_pdf(text: str, target: Path) -> None:
        import logging

        from weasyprint import HTML

        logging.getLogger("weasyprint").setLevel(logging.ERROR)
        logging.getLogger("fontTools").setLevel(logging.ERROR)
        HTML(string=text, base_url=None).write_pdf(str(target))

    cost: dict[str, list[tuple[float, float]]] = {"typst": [], "weasyprint": [], "html": [], "html_no_plots": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        run_dir, loaded = one_run(args.steps, folder)

        def report_html(with_plots: bool = True) -> str:
            # As the run renders it: with the sequence it loaded (docs/reports.md).
            return build_html(run_dir, sequence=loaded, with_plots=with_plots)

        text = report_html()
        assert "<figure>" in text, "the report has no plots: the benchmark would not measure them"
        n_pages = {}
        warm_up = 0 if args.smoke else 1  # a smoke run counts its one round, imports and all
        for r in range(args.rounds + warm_up):
            for name, pdf in (("typst", typst_pdf), ("weasyprint", weasy_pdf)):
                target = folder / f"{name}.pdf"

                def render(pdf: Callable[[str, Path], object] = pdf, target: Path = target) -> None:
                    pdf(report_html(), target)

                c = timed(render)
                n_pages[name] = check_pdf(target, text, same_words=name == "typst")
                if r >= warm_up:  # the first round pays the imports
                    cost[name].append(c)
            if r >= warm_up:
                cost["html"].append(timed(report_html))
                cost["html_no_plots"].append(timed(lambda: report_html(with_plots=False)))

    def med(name: str, i: int = 0) -> float:
        return statistics.median(c[i] for c in cost[name])

    ours, base = med("typst"), med("weasyprint")
    html, bare = med("html"), med("html_no_plots")
    print(
        f"report of a {args.steps}-step run, median of {args.rounds} rounds, CPU s (wall s): "
        f"Typst {ours:.3f} ({med('typst', 1):.3f}) for {n_pages['typst']} pages, "
        f"WeasyPrint {base:.3f} ({med('weasyprint', 1):.3f}) for {n_pages['weasyprint']} pages; "
        f"of which HTML with plots {html:.3f} ({med('html', 1):.3f}), plots {html - bare:.3f}"
    )
    rows = [
        Row(
            benchmark="report_render",
            figure=f"report of a {args.steps}-step run (HTML + plots + PDF), CPU",
            ours=ours,
            baseline=base,
            unit="s",
            ratio=base / ours,
            ratio_means="speed-up of Typst over WeasyPrint",
            goal=f"<= {GOAL_S:g} s",
            met=None if args.smoke else ours <= GOAL_S,
        ),
        Row(
            benchmark="report_render",
            figure="of which the HTML with its plots, CPU",
            ours=html,
            baseline=bare,
            unit="s",
            ratio=html / bare,
            ratio_means="HTML with plots / HTML without",
        ),
    ]
    emit(rows, args)


if __name__ == "__main__":
    main()
