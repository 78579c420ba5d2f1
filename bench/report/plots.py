"""Plots of the key signals of a run, rendered from the record (MF4/BLF + events), never live state.

CAN signals are decoded from the run's ``can.mf4`` with asammdf (vectorised); signals that are
not on CAN (a supply polled over SCPI) come from the ``snapshot``/``set``/``condition_met``
events. Long traces are reduced to min/max per pixel column before plotting, so that a spike is
never lost and a two-hour run plots as fast as a two-minute one.

Every signal is sampled: it is drawn as held from one sample to the next (``steps-post``), never
interpolated, so a step never looks like a ramp that starts before it. A trace known only at
recorded events says so on its panel (its ``note``), and every y axis names its unit.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

_MAX_POINTS = 1500
_PANEL_IN = 1.2  # height of one panel (inches): three panels and their axes fit a third of a page


@dataclass
class Trace:
    t: np.ndarray
    v: np.ndarray
    unit: str = ""
    states: dict[int, str] = field(default_factory=dict)
    note: str = ""  # how the trace was sampled, when coarser than its source (shown on its panel)


@dataclass
class Marker:
    t: float
    label: str
    color: str = ""  # empty: a colour of its own from MARK_COLOURS (the recorded instants)


# Colours of the recorded instants (@marks), one per distinct label; none is the colour of a
# trace, a limit or a fixed kind of event (trip red, cleanup grey, fault purple, contactor green).
MARK_COLOURS = ("#ff7f0e", "#17becf", "#e377c2", "#8c564b", "#bcbd22", "#008080", "#d4a017", "#000080")


def coloured(markers: Sequence[Marker]) -> list[Marker]:
    """The markers, each one without a colour given one of its own label (the same label, the same colour)."""
    by_label: dict[str, str] = {}
    out = []
    for mk in markers:
        if not mk.color:
            colour = by_label.setdefault(mk.label, MARK_COLOURS[len(by_label) % len(MARK_COLOURS)])
            mk = Marker(mk.t, mk.label, colour)
        out.append(mk)
    return out


def axis_label(name: str, tr: Trace) -> str:
    """The y label: the signal and its unit; a state signal's unit is its states, a bare number's is 1."""
    unit = tr.unit or ("state" if tr.states else "1")
    return f"{name}\n[{unit}]"


def decode_can(mf4: Path, dbc: Sequence[Path], wanted: Mapping[str, str]) -> dict[str, Trace]:
    """``wanted``: record signal name (``bms.cell_v_max``) -> DBC signal name (``cell_v_max``)."""
    from asammdf import MDF

    out: dict[str, Trace] = {}
    if not mf4.is_file() or not dbc:
        return out
    with MDF(str(mf4)) as mdf:
        decoded = mdf.extract_bus_logging(
            database_files={"CAN": [(str(p), 0) for p in dbc]}, ignore_value2text_conversion=True
        )
        names = set(decoded.channels_db)
        for name, short in wanted.items():
            if short not in names:
                continue
            sig = decoded.get(short, raw=False)
            samples = np.asarray(sig.samples)
            if samples.dtype.kind not in "fiu":
                # A signal with value tables (states) comes back as text; its raw codes are what we plot.
                sig = decoded.get(short, raw=True)
                samples = np.asarray(sig.samples)
            if samples.dtype.kind not in "fiu":
                continue
            out[name] = Trace(np.asarray(sig.timestamps, dtype=float), samples.astype(float), str(sig.unit or ""))
        decoded.close()
    return out


def decode_blf(blf: Path, dbc: Sequence[Path], wanted: Mapping[str, str]) -> dict[str, Trace]:
    """Decode only the ``wanted`` signals from the raw BLF, vectorised.

    ``wanted``: record signal name (``bms.cell_v_max``) -> DBC signal name (``cell_v_max``).
    Little-endian (Intel) signals of non-multiplexed messages are extracted with numpy bit
    operations on the frames' 8 data bytes; anything else is decoded frame by frame by cantools.
    Cheaper than decoding every signal of the archive: a report needs a handful.
    """
    import cantools

    from bench.record.mf4 import read_blf

    out: dict[str, Trace] = {}
    if not blf.is_file() or not dbc:
        return out
    frames = read_blf(blf)
    if len(frames) == 0:
        return out
    words = np.ascontiguousarray(frames.data).view("<u8").ravel()
    for p in dbc:
        db: Any = cantools.database.load_file(str(p), strict=False)
        for msg in getattr(db, "messages", []):
            for sig in msg.signals:
                names = [n for n, short in wanted.items() if short == sig.name and n not in out]
                if not names:
                    continue
                mask = (frames.arbitration_id == msg.frame_id) & (frames.extended == int(msg.is_extended_frame))
                if not mask.any():
                    continue
                t = frames.t[mask]
                if sig.byte_order == "little_endian" and not msg.is_multiplexed() and sig.length <= 64:
                    raw = (words[mask] >> np.uint64(sig.start)) & np.uint64(
                        (1 << sig.length) - 1 if sig.length < 64 else ~0
                    )
                    vals = raw.astype(np.float64)
                    if sig.is_signed:
                        vals = np.where(raw >= (1 << (sig.length - 1)), vals - float(1 << sig.length), vals)
                    vals = vals * float(sig.scale) + float(sig.offset)
                else:
                    data = frames.data[mask]
                    vals = np.asarray(
                        [float(msg.decode(bytes(row), decode_choices=False).get(sig.name, np.nan)) for row in data]
                    )
                states = {int(k): str(v) for k, v in sig.choices.items()} if sig.choices else {}
                for n in names:
                    out[n] = Trace(t, vals, str(sig.unit or ""), dict(states))
    return out


def reduce(t: np.ndarray, v: np.ndarray, n: int = _MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Min/max decimation into ``n/2`` buckets: keeps every extreme, drops what a pixel hides."""
    if t.size <= n:
        return t, v
    buckets = n // 2
    edges = np.linspace(0, t.size, buckets + 1).astype(int)
    starts = edges[:-1]
    lo = np.minimum.reduceat(v, starts)
    hi = np.maximum.reduceat(v, starts)
    tt = t[starts]
    return np.repeat(tt, 2), np.column_stack([lo, hi]).ravel()


def png_base64(fig: Any) -> str:
    """The figure as a base64 PNG for an <img> in a report (closed once drawn)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def figure(
    title: str,
    traces: Mapping[str, Trace],
    window: tuple[float, float] | None,
    markers: Sequence[Marker],
    limits: Mapping[str, Sequence[tuple[float, str]]],
) -> str | None:
    """One PNG (base64) with a panel per trace; None when there is nothing to draw."""
    fig = build_figure(title, traces, window, markers, limits)
    return None if fig is None else png_base64(fig)


def build_figure(
    title: str,
    traces: Mapping[str, Trace],
    window: tuple[float, float] | None,
    markers: Sequence[Marker],
    limits: Mapping[str, Sequence[tuple[float, str]]],
) -> Any:
    """The matplotlib figure of :func:`figure` (a panel per trace); None when there is nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    for name, tr in traces.items():
        t, v = tr.t, tr.v
        if window is not None:
            keep = (t >= window[0]) & (t <= window[1])
            # One sample on each side: the one before holds into the window, so it is drawn from its start.
            idx = np.flatnonzero(keep)
            if idx.size:
                lo, hi = max(idx[0] - 1, 0), min(idx[-1] + 1, t.size - 1)
                t, v = t[lo : hi + 1], v[lo : hi + 1]
            else:
                continue
        if t.size == 0:
            continue
        panels.append((name, tr, *reduce(t, v)))
    if not panels:
        return None
    markers = coloured(markers)
    height = _PANEL_IN * len(panels) + 0.7
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, height), sharex=True, squeeze=False)
    for ax, (name, tr, t, v) in zip(axes[:, 0], panels, strict=True):
        ax.plot(t, v, lw=0.9, color="#1f4e9c", drawstyle="steps-post")
        if window is not None:
            ax.set_xlim(*window)
        ax.set_ylabel(axis_label(name, tr), fontsize=7)
        ax.tick_params(labelsize=7)
        if not tr.states:
            # Plain values on the ticks: an offset ("+7.276e2" over the axis) is easily misread.
            ax.ticklabel_format(axis="y", useOffset=False, style="plain")
        ax.grid(alpha=0.3)
        if tr.note:
            box = {"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1}  # readable over the trace
            ax.text(0.005, 0.97, tr.note, transform=ax.transAxes, fontsize=6, color="#555555", va="top", bbox=box)
        for value, label in limits.get(name, []):
            ax.axhline(value, color="#b35900", ls="--", lw=0.9)
            ax.annotate(
                label,
                (1.0, value),
                xycoords=("axes fraction", "data"),
                fontsize=6,
                color="#b35900",
                ha="right",
                va="bottom",
            )
        if tr.states:
            ticks = sorted({int(x) for x in np.unique(v)} & set(tr.states))
            ax.set_yticks(ticks, [tr.states[k] for k in ticks], fontsize=6)
        for mk in markers:
            if window is None or window[0] <= mk.t <= window[1]:
                ax.axvline(mk.t, color=mk.color, lw=1.0, ls=":")
    # Events go into a legend, not onto the plot: instants a few ms apart would print on top of each other.
    from matplotlib.lines import Line2D

    shown = [mk for mk in markers if window is None or window[0] <= mk.t <= window[1]]
    if shown:
        handles = [Line2D([], [], color=mk.color, ls=":", lw=1.4) for mk in shown[:8]]
        axes[0, 0].legend(handles, [f"{mk.label} ({mk.t:.3f} s)" for mk in shown[:8]], fontsize=6, loc="best")
    axes[-1, 0].set_xlabel("time since run start [s]", fontsize=7)
    fig.suptitle(title, fontsize=9)
    # Fixed margins instead of tight_layout(): it measures every tick label (0.6 s per figure).
    fig.subplots_adjust(left=0.14, right=0.98, top=1 - 0.35 / height, bottom=0.45 / height, hspace=0.12)
    return fig
