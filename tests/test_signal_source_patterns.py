"""A signal_sources key may be an fnmatch pattern, as an equipment register key may: one entry for
every cell voltage of a BMS instead of one per cell. A signal's own entry comes first."""

from __future__ import annotations

import math

import pytest

from bench.report.equipment import SignalSource, instant_uncertainty, signal_source, signal_uncertainty

SOURCES = {
    "cbms.temp_fault_kind": SignalSource(period="100 ms"),
    "cbms.cell_v_*": SignalSource(resolution="1 mV", accuracy="5 mV", period="100 ms"),
    "cbms.cell_v_007": SignalSource(accuracy="10 mV", period="50 ms"),
    "cbms.temp_[0-9]*": SignalSource(accuracy="0.5 K", period="200 ms"),
}


def test_a_pattern_entry_gives_every_signal_it_matches_its_accuracy() -> None:
    unc = signal_uncertainty("cbms.cell_v_012", 4.2, [], SOURCES)
    assert unc is not None
    assert unc.u_base == pytest.approx(math.hypot(0.005 / math.sqrt(3), 0.001 / math.sqrt(12)))


def test_a_signals_own_entry_comes_before_a_pattern() -> None:
    assert signal_source("cbms.cell_v_007", SOURCES) is SOURCES["cbms.cell_v_007"]
    unc = signal_uncertainty("cbms.cell_v_007", 4.2, [], SOURCES)
    assert unc is not None and unc.u_base == pytest.approx(0.010 / math.sqrt(3))


def test_a_pattern_matches_only_what_it_says() -> None:
    assert signal_source("cbms.temp_02", SOURCES) is SOURCES["cbms.temp_[0-9]*"]
    assert signal_source("cbms.temp_fault_kind", SOURCES) is SOURCES["cbms.temp_fault_kind"]
    assert signal_source("cbms.temp_fault_sensor", SOURCES) is None
    assert signal_uncertainty("cbms.cell_v", 4.2, [], SOURCES) is None


def test_an_instant_on_a_patterned_signal_has_its_update_period() -> None:
    inst = instant_uncertainty({"cbms.cell_v_003"}, SOURCES)
    assert inst is not None
    assert inst[1] == pytest.approx(0.1 / math.sqrt(12))
    assert "cbms.cell_v_003" in inst[0]
