"""The register's part of a measurement's uncertainty is read once per register entry.

``signal_uncertainty`` keeps what depends only on the instrument's ranges (or the signal
source's entry) and computes per reading only what depends on the value: which range holds
it and the reading term. These tests hold that split to the figures the register gives, and
show that an edited entry is read again (the cache is keyed on the entry's content).
"""

from __future__ import annotations

import math

import pytest

from bench.report.equipment import Instrument, Range, SignalSource, signal_uncertainty
from bench.units import parse_unit


def _range(**fields: object) -> Range:
    return Range.model_validate(fields)


def _source(**fields: object) -> SignalSource:
    return SignalSource.model_validate(fields)


def _dmm(*ranges: Range, asset_id: str = "DMM-1") -> Instrument:
    return Instrument.model_validate(
        {
            "asset_id": asset_id,
            "device": "dmm",
            "maker": "m",
            "model": "m",
            "serial": "1",
            "signals": {"v": list(ranges)},
        }
    )


def test_the_range_and_the_reading_term_follow_each_value() -> None:
    # Listed largest first: the smallest range that holds the value is chosen, every time.
    ins = _dmm(_range(range="100 V", reading_pct=0.1), _range(range="10 V", reading_pct=0.1, absolute="2 mV"))
    for value, rng, half in [(5.0, "10 V", 0.005 + 0.002), (50.0, "100 V", 0.05), (7.0, "10 V", 0.007 + 0.002)]:
        u = signal_uncertainty("dmm.v", value, [ins], {}, parse_unit("V"))
        assert u is not None
        assert u.u_base == pytest.approx(half / math.sqrt(3))
        assert f"on the {rng} range" in u.budget[0]
        assert u.budget[0].endswith(f"u = {half / math.sqrt(3):.4g} V")


def test_an_edited_register_entry_is_read_again() -> None:
    before = signal_uncertainty("dmm.v", 5.0, [_dmm(_range(range="10 V", reading_pct=0.1))], {})
    after = signal_uncertainty("dmm.v", 5.0, [_dmm(_range(range="10 V", reading_pct=0.2))], {})
    assert before is not None and after is not None
    assert after.u_base == pytest.approx(2 * before.u_base)
    src = signal_uncertainty("x.s", 1.0, [], {"x.s": _source(accuracy="5 mV")})
    edited = signal_uncertainty("x.s", 1.0, [], {"x.s": _source(accuracy="10 mV")})
    assert src is not None and edited is not None
    assert edited.u_base == pytest.approx(2 * src.u_base)
    assert edited.budget == ["x.s accuracy ±10 mV (rectangular): u = 0.005774"]


def test_each_reading_gets_its_own_budget_list() -> None:
    src = {"x.s": _source(accuracy="5 mV", resolution="1 mV")}
    first = signal_uncertainty("x.s", 1.0, [], src)
    assert first is not None
    first.budget.append("changed by its reader")
    second = signal_uncertainty("x.s", 1.0, [], src)
    assert second is not None and len(second.budget) == 2


def test_an_unreadable_term_counts_only_on_the_range_that_holds_the_value() -> None:
    ins = _dmm(_range(range="10 V", reading_pct=0.1), _range(range="100 V", absolute="not a quantity"))
    assert signal_uncertainty("dmm.v", 5.0, [ins], {}) is not None
    assert signal_uncertainty("dmm.v", 50.0, [ins], {}) is None
    assert signal_uncertainty("dmm.v", 5.0, [_dmm(_range(range="ten volts"))], {}) is None


def test_a_signal_listed_without_ranges_has_no_uncertainty() -> None:
    # An entry with no range states no accuracy: no U (it used to end the run with an IndexError).
    assert signal_uncertainty("dmm.v", 5.0, [_dmm()], {}) is None


def test_the_ranges_are_read_once_not_per_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    read = []
    spec_text = Range.spec_text

    def counted(self: Range) -> str:
        read.append(self.range)
        return spec_text(self)

    monkeypatch.setattr(Range, "spec_text", counted)
    # An entry no other test reads, so that the first reading here is the one that reads it.
    ins = _dmm(_range(range="10 V", reading_pct=0.1), _range(range="100 V", reading_pct=0.1), asset_id="DMM-READ-ONCE")
    for value in (1.0, 2.0, 50.0, 3.0):
        assert signal_uncertainty("dmm.v", value, [ins], {}) is not None
    assert sorted(read) == ["10 V", "100 V"]
