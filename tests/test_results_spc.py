"""The X/MR chart, the Nelson tests and Cp/Cpk on series small enough to check by hand."""

from __future__ import annotations

import pytest

from bench.results.spc import D2, D4, SpcError, capability, chart, special_causes


def _flags(values: list[float]) -> dict[int, tuple[int, ...]]:
    """Which test flags which points, with the centre line at 0 and sigma 1 (values are z scores)."""
    return {v.rule.number: v.points for v in special_causes(values, centre=0.0, sigma=1.0)}


def test_chart_limits_from_the_mean_moving_range() -> None:
    c = chart([1, 3, 2, 4, 3])
    # mean 13/5; moving ranges 2, 1, 2, 1: MR-bar 1.5
    assert c.centre == pytest.approx(2.6)
    assert c.moving_ranges == (2, 1, 2, 1)
    assert c.mr_bar == pytest.approx(1.5)
    assert c.sigma == pytest.approx(1.5 / 1.128)
    assert c.ucl == pytest.approx(2.6 + 3 * 1.5 / 1.128)
    assert c.lcl == pytest.approx(2.6 - 3 * 1.5 / 1.128)
    assert c.mr_ucl == pytest.approx(3.267 * 1.5)
    assert (D2, D4) == (1.128, 3.267)
    assert c.violations == () and c.mr_beyond == ()


def test_a_jump_beyond_the_moving_range_limit_is_flagged_on_the_mr_chart() -> None:
    c = chart([0, 1, 0, 1, 0, 1, 0, 1, 0, 9], baseline=9)
    # MR-bar of the first nine is 1, so the last range (9) is above D4 * 1
    assert c.mr_beyond == (9,)
    assert c.violations[0].rule.number == 1 and c.violations[0].points == (9,)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0, 0.5, 3.5, -0.2], {1: (2,)}),
        ([0.5] * 10, {2: (8, 9)}),
        ([-0.3, -0.2, -0.1, 0.1, 0.2, 0.3], {3: (5,)}),
        ([0.5, -0.5] * 7, {4: (13,)}),
        ([0, 2.5, 0, 2.5], {5: (3,)}),
        ([1.5, 1.5, 0, 1.5, 1.5], {6: (4,)}),
        ([0.1, 0.1, -0.1, -0.1] * 4, {7: (14, 15)}),
        ([1.5, -1.5, 1.5, 1.5, -1.5, -1.5, 1.5, -1.5], {8: (7,)}),
    ],
    ids=[f"nelson{i}" for i in range(1, 9)],
)
def test_each_rule_flags_the_point_that_completes_its_pattern(values: list[float], expected: dict) -> None:
    assert _flags(values) == expected


def test_a_run_broken_by_the_centre_line_or_one_short_is_not_flagged() -> None:
    assert _flags([0.5] * 8) == {}
    assert _flags([0.5] * 4 + [0.0] + [0.5] * 4) == {}
    assert _flags([0.0, 0.1, 0.2, 0.3, 0.4]) == {}  # five rising points, not six
    assert _flags([0, 2.5, 0, 0, 2.5]) == {}  # two beyond 2 sigma, but not within three
    assert _flags([2.5, 0, -2.5]) == {}  # beyond 2 sigma on opposite sides
    assert _flags([1.5, -1.5] * 3 + [1.5]) == {}  # seven outside 1 sigma, not eight


def test_a_planted_shift_is_found_against_limits_of_the_run_before_it() -> None:
    noise = [0.3, -0.2, 0.1, -0.4, 0.2, 0.0, -0.1, 0.3, -0.3, 0.1] * 2
    c = chart(noise + [v + 2.0 for v in noise[:10]], baseline=20)
    flagged = c.flagged
    assert flagged and min(flagged) >= 20
    assert {v.rule.number for v in c.violations} >= {1, 2}


def test_capability_two_sided_and_one_sided() -> None:
    values = [9, 11, 10, 12, 8, 10, 11, 9, 10, 10]
    # mean 10; moving ranges 2 1 2 4 2 1 2 1 0: MR-bar 15/9; sample sd sqrt(12/9)
    sigma = (15 / 9) / 1.128
    sd = (12 / 9) ** 0.5
    both = capability(values, low=4, high=13)
    assert both.mean == pytest.approx(10)
    assert both.sigma_within == pytest.approx(sigma)
    assert both.cp == pytest.approx(9 / (6 * sigma))
    assert both.cpk == pytest.approx(3 / (3 * sigma))  # the upper side is the nearer one
    assert both.pp == pytest.approx(9 / (6 * sd))
    assert both.ppk == pytest.approx(3 / (3 * sd))
    upper = capability(values, low=None, high=13)
    assert upper.cp is None and upper.cpk == pytest.approx(both.cpk)
    lower = capability(values, low=4, high=None)
    assert lower.cp is None and lower.cpk == pytest.approx(6 / (3 * sigma))


@pytest.mark.parametrize(
    ("values", "low", "high", "message"),
    [
        ([1.0, 2.0] * 4, 0.0, 3.0, "at least 10 values, got 8"),
        ([5.0] * 12, 0.0, 10.0, "no spread"),
        ([1.0, 2.0] * 6, None, None, "neither"),
        ([1.0, 2.0] * 6, 3.0, 1.0, "lower limit below the upper"),
    ],
)
def test_capability_refuses_with_one_line(
    values: list[float], low: float | None, high: float | None, message: str
) -> None:
    with pytest.raises(SpcError, match=message) as err:
        capability(values, low, high)
    assert "\n" not in str(err.value)


def test_a_chart_of_two_points_is_refused() -> None:
    with pytest.raises(SpcError, match="at least 3 values, got 2"):
        chart([1.0, 2.0])


def test_the_trend_chart_rings_each_flagged_point_and_names_each_version() -> None:
    import datetime as dt

    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    from bench.results.chart import FLAG, trend_figure

    values = [0.3, -0.2, 0.1, -0.4, 0.2, 0.0, -0.1, 0.3, -0.3, 0.1] * 2 + [5.0, 5.2, 4.9]
    c = chart(values, baseline=20)
    starts = [dt.datetime(2026, 11, 1, tzinfo=dt.UTC) + dt.timedelta(hours=i) for i in range(len(values))]
    versions = ["1.0"] * 10 + ["1.1"] * 10 + ["1.2"] * 3
    fig = trend_figure(c, starts, "ov trip", "V", versions)
    x_chart, mr_chart = fig.axes
    ringed = [col for col in x_chart.collections if tuple(col.get_edgecolor()[0][:3]) == _rgb(FLAG)]
    assert len(ringed) == 1 and len(ringed[0].get_offsets()) == len(c.flagged) == 3
    assert [mdates.num2date(x).hour for x, _ in ringed[0].get_offsets()] == [s.hour for s in starts[20:]]
    assert [t.get_text() for t in x_chart.texts if t.get_text() in {"1.0", "1.1", "1.2"}] == ["1.0", "1.1", "1.2"]
    assert any(f"UCL {c.ucl:.4g}" == t.get_text() for t in x_chart.texts)
    assert any(f"UCL {c.mr_ucl:.4g}" == t.get_text() for t in mr_chart.texts)
    assert mr_chart.get_ylabel() == "moving range" and x_chart.get_ylabel() == "value [V]"
    plt.close(fig)


def _rgb(colour: str) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    return to_rgb(colour)
