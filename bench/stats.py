"""Statistics of timed samples for the measure step: of a signal, or of an expression of signals."""

from __future__ import annotations

import bisect
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence

# The statistics a measure step offers over a window or since an instant.
STATS = ("min", "max", "mean", "max_moving_mean")


def statistic(stat: str, samples: Sequence[tuple[float, float]], over: float | None = None) -> float:
    """``stat`` of timed ``samples`` (at least one, in time order): min, max, mean or max_moving_mean.

    ``value`` is the last sample. ``mean`` weighs every sample alike, as the samples come;
    ``max_moving_mean`` holds each sample until the next (``over``: the moving window).
    """
    values = [v for _, v in samples]
    if stat == "max_moving_mean":
        assert over is not None
        return max_moving_mean(samples, over)
    if stat == "min":
        return min(values)
    if stat == "max":
        return max(values)
    if stat == "mean":
        return statistics.fmean(values)
    return values[-1]


def expression_samples(
    evaluate: Callable[[dict[str, float]], float | None],
    held: Mapping[str, float],
    samples: Iterable[tuple[float, str, float]],
) -> tuple[list[tuple[float, float]], int]:
    """The values of an expression at the sample instants of its signals, and how many instants had none.

    ``samples`` are ``(t, signal, value)`` of every signal the expression reads, within the
    span; ``held`` the latest value of each before the span. The instants are the distinct
    sample times (the union over the signals); at each, every sample stamped with that time is
    applied first, then the expression is evaluated on the latest value of every signal
    (sample and hold: a signal not sampled at that instant keeps its previous value, from
    before the span if need be). An instant where the expression has no value (a signal
    never sampled yet, a division by zero) is left out and counted.
    """
    values = dict(held)
    ordered = sorted(samples, key=lambda s: s[0])  # stable: of two samples with one time, the later one holds
    out: list[tuple[float, float]] = []
    unknown = 0
    i = 0
    while i < len(ordered):
        t = ordered[i][0]
        while i < len(ordered) and ordered[i][0] == t:
            values[ordered[i][1]] = ordered[i][2]
            i += 1
        v = evaluate(values)
        if v is None:
            unknown += 1
        else:
            out.append((t, float(v)))
    return out, unknown


def max_moving_mean(samples: Sequence[tuple[float, float]], over: float) -> float:
    """Highest mean over any window of length ``over``, each sample held until the next one.

    Windows end at every sample instant and at the last one; until a full window of data
    exists, the mean is taken over what there is (a short record is judged on all of it).
    """
    ts = [t for t, _ in samples]
    vs = [v for _, v in samples]
    # Integral of the held signal from ts[0] to each sample instant.
    cum = [0.0]
    for i in range(1, len(ts)):
        cum.append(cum[-1] + vs[i - 1] * (ts[i] - ts[i - 1]))

    def integral(t: float) -> float:
        i = bisect.bisect_right(ts, t) - 1
        return cum[i] + vs[i] * (t - ts[i])

    best = vs[0]
    for i in range(1, len(ts)):
        end = ts[i]
        start = max(ts[0], end - over)
        if end > start:
            best = max(best, (integral(end) - integral(start)) / (end - start))
    return best
