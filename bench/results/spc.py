"""Statistical process control of one measurement across runs: pure functions, no database.

An individuals (X) chart with its moving-range (MR) companion, the Western Electric / Nelson
tests for special causes, and the capability indices Cp / Cpk against a measurement's limits.

Sources of the constants and rules:

* Individuals and moving-range charts, moving ranges of span 2: sigma is estimated as
  MR-bar / d2 with d2(2) = 1.128; the X chart's limits are the mean +- 3 sigma (2.66 MR-bar);
  the MR chart's upper limit is D4 MR-bar with D4(2) = 3.267 and its lower limit D3(2) = 0.
  NIST/SEMATECH e-Handbook of Statistical Methods, 6.3.2.2 "Individuals Control Charts";
  Montgomery, Introduction to Statistical Quality Control, 6.4 and Appendix VI (factors for
  control charts).
* The tests for special causes: Western Electric, Statistical Quality Control Handbook (1956),
  zones A/B/C at 3/2/1 sigma (NIST/SEMATECH 6.3.2, "WECO rules"); Nelson, "The Shewhart control
  chart - tests for special causes", Journal of Quality Technology 16 (4), 1984, the eight tests
  below (the numbering is Nelson's).
* Capability: Cp = (USL - LSL) / 6 sigma, Cpk = min(Cpu, Cpl), Cpu = (USL - mean) / 3 sigma,
  Cpl = (mean - LSL) / 3 sigma; with one limit only Cpk is that side's index and Cp is
  undefined (NIST/SEMATECH 6.1.6 "What is Process Capability?"; Montgomery 8.2). Sigma is the
  within (short-term) estimate MR-bar / d2, as for the chart; Pp / Ppk use the overall
  sample standard deviation instead.

A flagged point is the one that completes the pattern (the convention of Minitab and of
Nelson's paper): a run of nine on one side flags its ninth point, and every later point while
the run lasts. Points exactly on the centre line belong to neither side and end a run.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

D2 = 1.128  # d2 for moving ranges of span 2: E[range of 2 normal values] / sigma
D4 = 3.267  # D4 for span 2: the MR chart's upper limit over MR-bar (D3 = 0: no lower limit)
MIN_CHART_POINTS = 3  # two moving ranges at least, or MR-bar means nothing
MIN_CAPABILITY_POINTS = 10


class SpcError(ValueError):
    """A series that cannot be charted or judged (too short, no spread): one line for the user."""


@dataclass(frozen=True)
class Rule:
    number: int  # Nelson's test number
    name: str  # what the test looks for, in words


RULES: tuple[Rule, ...] = (
    Rule(1, "one point beyond 3 sigma"),
    Rule(2, "9 points in a row on one side of the centre line"),
    Rule(3, "6 points in a row steadily increasing or decreasing"),
    Rule(4, "14 points in a row alternating up and down"),
    Rule(5, "2 of 3 points in a row beyond 2 sigma on one side"),
    Rule(6, "4 of 5 points in a row beyond 1 sigma on one side"),
    Rule(7, "15 points in a row within 1 sigma of the centre line"),
    Rule(8, "8 points in a row beyond 1 sigma, on both sides"),
)


@dataclass(frozen=True)
class Violation:
    rule: Rule
    points: tuple[int, ...]  # indices into the series of the points it flags

    def line(self) -> str:
        return f"Nelson {self.rule.number} ({self.rule.name}): points {', '.join(str(i) for i in self.points)}"


@dataclass(frozen=True)
class Chart:
    """The X and MR charts of a series, and the points each test flags."""

    values: tuple[float, ...]
    centre: float  # the X chart's centre line: the mean
    sigma: float  # MR-bar / d2
    ucl: float
    lcl: float
    moving_ranges: tuple[float, ...]  # |x[i] - x[i-1]| for i >= 1 (one fewer than the values)
    mr_bar: float
    mr_ucl: float  # D4 MR-bar; the MR chart's lower limit is 0
    mr_beyond: tuple[int, ...]  # indices i (of values) whose moving range is above mr_ucl
    violations: tuple[Violation, ...] = field(default=())

    @property
    def flagged(self) -> tuple[int, ...]:
        """Every point any test flags, in order."""
        return tuple(sorted({i for v in self.violations for i in v.points}))


def moving_ranges(values: Sequence[float]) -> list[float]:
    return [abs(b - a) for a, b in itertools.pairwise(values)]


def chart(values: Sequence[float], baseline: int | None = None) -> Chart:
    """The X/MR chart of ``values`` (in time order), its limits from the first ``baseline`` points
    (all of them by default: a phase I chart) and the tests' violations over the whole series."""
    xs = [float(v) for v in values]
    ref = xs if baseline is None else xs[:baseline]
    if len(ref) < MIN_CHART_POINTS:
        raise SpcError(f"a control chart needs at least {MIN_CHART_POINTS} values, got {len(ref)}")
    mrs = moving_ranges(xs)
    mr_bar = statistics.fmean(moving_ranges(ref))
    centre = statistics.fmean(ref)
    sigma = mr_bar / D2
    mr_ucl = D4 * mr_bar
    mr_beyond = tuple(i + 1 for i, r in enumerate(mrs) if r > mr_ucl)
    violations = special_causes(xs, centre, sigma) if sigma > 0 else ()
    return Chart(
        values=tuple(xs),
        centre=centre,
        sigma=sigma,
        ucl=centre + 3 * sigma,
        lcl=centre - 3 * sigma,
        moving_ranges=tuple(mrs),
        mr_bar=mr_bar,
        mr_ucl=mr_ucl,
        mr_beyond=mr_beyond,
        violations=violations,
    )


def special_causes(values: Sequence[float], centre: float, sigma: float) -> tuple[Violation, ...]:
    """The eight tests over ``values`` against a centre line and sigma; only the tests that flag a point."""
    z = [(v - centre) / sigma for v in values]
    found = []
    for rule, check in zip(RULES, _CHECKS, strict=True):
        points = tuple(i for i in range(len(z)) if check(z, i))
        if points:
            found.append(Violation(rule, points))
    return tuple(found)


def _side(x: float) -> int:
    return (x > 0) - (x < 0)


def _run_ending(z: Sequence[float], i: int, n: int, same: Callable[[int], bool]) -> bool:
    """True when the ``n`` points ending at ``i`` all satisfy ``same``."""
    return i >= n - 1 and all(same(j) for j in range(i - n + 1, i + 1))


def _beyond_3(z: Sequence[float], i: int) -> bool:
    return abs(z[i]) > 3


def _nine_one_side(z: Sequence[float], i: int) -> bool:
    side = _side(z[i])
    return side != 0 and _run_ending(z, i, 9, lambda j: _side(z[j]) == side)


def _six_trend(z: Sequence[float], i: int) -> bool:
    if i < 5:
        return False
    steps = [z[j] - z[j - 1] for j in range(i - 4, i + 1)]
    return all(s > 0 for s in steps) or all(s < 0 for s in steps)


def _fourteen_alternating(z: Sequence[float], i: int) -> bool:
    if i < 13:
        return False
    steps = [_side(z[j] - z[j - 1]) for j in range(i - 12, i + 1)]
    return all(s != 0 for s in steps) and all(a == -b for a, b in itertools.pairwise(steps))


def _k_of_n_beyond(z: Sequence[float], i: int, k: int, n: int, zone: float) -> bool:
    """The point ``i`` is beyond ``zone`` sigma, and ``k`` of the ``n`` points ending at it are, on its side."""
    side = _side(z[i])
    if abs(z[i]) <= zone:
        return False
    # Near the start the window is shorter: two of the first two points beyond 2 sigma count too.
    return sum(1 for j in range(max(0, i - n + 1), i + 1) if _side(z[j]) == side and abs(z[j]) > zone) >= k


def _two_of_three(z: Sequence[float], i: int) -> bool:
    return _k_of_n_beyond(z, i, 2, 3, 2.0)


def _four_of_five(z: Sequence[float], i: int) -> bool:
    return _k_of_n_beyond(z, i, 4, 5, 1.0)


def _fifteen_within(z: Sequence[float], i: int) -> bool:
    return _run_ending(z, i, 15, lambda j: abs(z[j]) < 1)


def _eight_outside(z: Sequence[float], i: int) -> bool:
    if not _run_ending(z, i, 8, lambda j: abs(z[j]) > 1):
        return False
    sides = {_side(z[j]) for j in range(i - 7, i + 1)}
    return sides == {-1, 1}


_CHECKS: tuple[Callable[[Sequence[float], int], bool], ...] = (
    _beyond_3,
    _nine_one_side,
    _six_trend,
    _fourteen_alternating,
    _two_of_three,
    _four_of_five,
    _fifteen_within,
    _eight_outside,
)


@dataclass(frozen=True)
class Capability:
    n: int
    mean: float
    sigma_within: float  # MR-bar / d2
    sigma_overall: float  # sample standard deviation
    low: float | None
    high: float | None
    cp: float | None  # None with one limit only
    cpk: float
    pp: float | None
    ppk: float


def _indices(mean: float, sigma: float, low: float | None, high: float | None) -> tuple[float | None, float]:
    sides = []
    if high is not None:
        sides.append((high - mean) / (3 * sigma))
    if low is not None:
        sides.append((mean - low) / (3 * sigma))
    spread = None if low is None or high is None else (high - low) / (6 * sigma)
    return spread, min(sides)


def capability(
    values: Sequence[float],
    low: float | None,
    high: float | None,
    min_points: int = MIN_CAPABILITY_POINTS,
) -> Capability:
    """Cp, Cpk (within sigma) and Pp, Ppk (overall sigma) of ``values`` against ``low`` / ``high``."""
    xs = [float(v) for v in values]
    if low is None and high is None:
        raise SpcError("capability needs a lower or an upper limit, the measurement has neither")
    if low is not None and high is not None and low >= high:
        raise SpcError(f"capability needs the lower limit below the upper one, got {low} and {high}")
    if len(xs) < min_points:
        raise SpcError(f"capability needs at least {min_points} values, got {len(xs)}")
    mean = statistics.fmean(xs)
    within = statistics.fmean(moving_ranges(xs)) / D2
    overall = statistics.stdev(xs)
    if within == 0 or overall == 0 or not math.isfinite(within):
        raise SpcError(f"capability is undefined: the {len(xs)} values have no spread (all {xs[0]:g})")
    cp, cpk = _indices(mean, within, low, high)
    pp, ppk = _indices(mean, overall, low, high)
    return Capability(len(xs), mean, within, overall, low, high, cp, cpk, pp, ppk)
