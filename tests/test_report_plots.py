"""The report's plots: sampled signals drawn as held values, a colour per recorded instant, units on every axis.

The figures are inspected as matplotlib objects (lines, colours, labels), never as pixels:
``plots.png_base64`` is replaced by a function that keeps the figure.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bench.report import plots


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    figures: list[Any] = []

    def keep(fig: Any) -> str:
        figures.append(fig)
        return "png"

    monkeypatch.setattr(plots, "png_base64", keep)
    return figures


def _can_step() -> plots.Trace:
    # A CAN signal sampled every second that steps from 0 to 10 V between t = 3 s and t = 4 s.
    t = np.arange(0.0, 8.0, 1.0)
    return plots.Trace(t, np.where(t >= 4.0, 10.0, 0.0), "V")


def test_can_signal_is_drawn_as_held_samples_not_a_ramp(drawn: list[Any]) -> None:
    assert plots.figure("t", {"bms.pack_voltage": _can_step()}, None, [], {}) == "png"
    (line,) = drawn[0].axes[0].get_lines()
    # Held from each sample to the next: at 3.5 s the line shows the 0 V of 3 s, not half-way up a ramp.
    assert line.get_drawstyle() == "steps-post"


def test_each_recorded_instant_has_its_own_colour_and_a_legend(drawn: list[Any]) -> None:
    marks = [plots.Marker(2.0, "@t_a"), plots.Marker(5.0, "@t_b"), plots.Marker(6.0, "trip: x", "#b30000")]
    plots.figure("t", {"bms.pack_voltage": _can_step()}, None, marks, {})
    ax = drawn[0].axes[0]
    vertical = [ln for ln in ax.get_lines() if ln.get_linestyle() == ":"]
    colours = [ln.get_color() for ln in vertical]
    assert len(colours) == 3 and len(set(colours)) == 3, colours
    legend = ax.get_legend()
    assert legend is not None
    texts = [t.get_text() for t in legend.get_texts()]
    assert any("@t_a" in t for t in texts) and any("@t_b" in t for t in texts), texts
    # The legend's colours are the lines' colours, in the same order.
    assert [h.get_color() for h in legend.legend_handles] == colours


def test_every_axis_names_its_unit(drawn: list[Any]) -> None:
    traces = {
        "bms.pack_voltage": _can_step(),
        "pa.voltage_1": plots.Trace(np.array([0.0, 5.0]), np.array([700.0, 701.0]), "V"),
        "bms.contactors": plots.Trace(np.array([0.0, 5.0]), np.array([0.0, 1.0]), states={0: "OPEN", 1: "CLOSED"}),
        "daq.cell_v_max_id": plots.Trace(np.array([0.0, 5.0]), np.array([3.0, 7.0])),
    }
    plots.figure("t", traces, None, [], {})
    labels = [ax.get_ylabel() for ax in drawn[0].axes]
    assert labels == [
        "bms.pack_voltage\n[V]",
        "pa.voltage_1\n[V]",
        "bms.contactors\n[state]",
        "daq.cell_v_max_id\n[1]",
    ]
    assert drawn[0].axes[-1].get_xlabel() == "time since run start [s]"
    # Plain tick values: no "+7e2" offset over an axis, easily misread as part of the unit.
    plain = [ax for ax in drawn[0].axes if "[state]" not in ax.get_ylabel()]
    assert all(ax.yaxis.get_major_formatter().get_useOffset() is False for ax in plain)


def test_a_trace_known_only_at_recorded_events_says_so_on_its_panel(drawn: list[Any]) -> None:
    traces = {"pa.voltage_1": plots.Trace(np.array([0.0, 60.0]), np.array([700.0, 701.0]), "V", note="every 60 s")}
    plots.figure("t", traces, None, [], {})
    assert [t.get_text() for t in drawn[0].axes[0].texts] == ["every 60 s"]
