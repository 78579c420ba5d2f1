"""A campaign yields the CPU to wall-clock runs on the same machine.

A fault-matrix campaign is batch work in virtual time: it keeps every core busy for minutes, and
none of its results depends on when it gets the CPU. A run on the wall clock (a real bench, or
``--realtime``) does depend on it: a frame or a debounce tick served late shifts a measured
reaction time. So the campaign's worker processes run at a lower scheduling priority than the
process that started them.
"""

from __future__ import annotations

import os

from bench.campaign import CAMPAIGN_NICENESS, campaign_pool


def test_campaign_workers_run_at_a_lower_priority_than_their_parent() -> None:
    parent = os.nice(0)
    with campaign_pool(1) as pool:
        worker = pool.submit(os.nice, 0).result(timeout=60)
    assert CAMPAIGN_NICENESS > 0
    assert worker == min(parent + CAMPAIGN_NICENESS, 19)
