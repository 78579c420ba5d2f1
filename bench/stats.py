"""Statistics of timed samples that the measure step offers beyond min, max and mean."""

from __future__ import annotations

import bisect
from collections.abc import Sequence


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
