"""The trend chart of one measurement across runs: an X (individuals) panel over its MR panel.

Drawn with matplotlib's Agg back-end, in the style of the run report's plots
(bench/report/plots.py: the same trace and limit colours, small fonts, fixed margins). Points a
Nelson test flags are ringed in red; where the series is grouped by DUT software version, each
version's span is shaded alternately and named above the X panel.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.results.spc import Chart

TRACE = "#1f4e9c"  # the report plots' trace colour
LIMIT = "#b35900"  # the report plots' limit colour
FLAG = "#d62728"


def _version_spans(versions: Sequence[str | None]) -> list[tuple[int, int, str]]:
    """Runs of equal consecutive versions: (first index, last index, version)."""
    spans: list[tuple[int, int, str]] = []
    for i, v in enumerate(versions):
        label = v or "unknown"
        if spans and spans[-1][2] == label:
            spans[-1] = (spans[-1][0], i, label)
        else:
            spans.append((i, i, label))
    return spans


def trend_figure(
    c: Chart,
    starts: Sequence[datetime],
    title: str,
    unit: str = "",
    versions: Sequence[str | None] | None = None,
) -> Any:
    """The matplotlib figure of the X and MR charts of ``c``, one point per run at its start."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(starts) != len(c.values):
        raise ValueError(f"{len(c.values)} values but {len(starts)} run starts")
    height = 4.6
    fig, (ax, mr_ax) = plt.subplots(2, 1, figsize=(9, height), sharex=True, height_ratios=(2, 1))
    x = list(starts)
    ax.plot(x, c.values, lw=0.8, color=TRACE, marker="o", ms=2.5)
    for value, label, style in (
        (c.ucl, f"UCL {c.ucl:.4g}", "--"),
        (c.centre, f"mean {c.centre:.4g}", "-"),
        (c.lcl, f"LCL {c.lcl:.4g}", "--"),
    ):
        ax.axhline(value, color=LIMIT, ls=style, lw=0.9)
        ax.annotate(
            label, (1.0, value), xycoords=("axes fraction", "data"), fontsize=6, color=LIMIT, ha="right", va="bottom"
        )
    flagged = c.flagged
    if flagged:
        ax.scatter(
            [x[i] for i in flagged],
            [c.values[i] for i in flagged],
            s=40,
            facecolors="none",
            edgecolors=FLAG,
            lw=1.2,
            zorder=3,
        )
        rules = ", ".join(str(v.rule.number) for v in c.violations)
        ax.text(
            0.005, 0.97, f"flagged by Nelson test {rules}", transform=ax.transAxes, fontsize=6, color=FLAG, va="top"
        )
    ax.set_ylabel(f"value [{unit}]" if unit else "value", fontsize=7)
    # Plain values on the ticks: an offset over the axis is easily misread (as in the run report).
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")

    mr_x = x[1:]
    mr_ax.plot(mr_x, c.moving_ranges, lw=0.8, color=TRACE, marker="o", ms=2)
    mr_ax.axhline(c.mr_ucl, color=LIMIT, ls="--", lw=0.9)
    mr_ax.axhline(c.mr_bar, color=LIMIT, ls="-", lw=0.9)
    mr_ax.annotate(
        f"UCL {c.mr_ucl:.4g}",
        (1.0, c.mr_ucl),
        xycoords=("axes fraction", "data"),
        fontsize=6,
        color=LIMIT,
        ha="right",
        va="bottom",
    )
    if c.mr_beyond:
        mr_ax.scatter(
            [x[i] for i in c.mr_beyond],
            [c.moving_ranges[i - 1] for i in c.mr_beyond],
            s=40,
            facecolors="none",
            edgecolors=FLAG,
            lw=1.2,
            zorder=3,
        )
    mr_ax.set_ylabel("moving range", fontsize=7)
    mr_ax.set_xlabel("run start (UTC)", fontsize=7)

    if versions is not None:
        for n, (first, last, label) in enumerate(_version_spans(versions)):
            if n % 2:
                for a in (ax, mr_ax):
                    a.axvspan(x[first], x[last], color="#999999", alpha=0.12, lw=0)
            ax.annotate(
                label,
                (x[first], 1.0),
                xycoords=("data", "axes fraction"),
                fontsize=6,
                color="#555555",
                ha="left",
                va="bottom",
                rotation=30,
            )
    for a in (ax, mr_ax):
        a.tick_params(labelsize=7)
        a.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=0.1, right=0.98, top=0.86 if versions is not None else 0.92, bottom=0.17, hspace=0.1)
    return fig


def write_png(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
