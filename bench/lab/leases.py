"""Leases on a bench: remote control needs one, and it expires unless renewed.

labgrid's place locks are held until released, so a crashed client leaves a stale lock that
someone must clear by hand (anchors.md: labgrid PR #1809 / #1884). A lease instead has an expiry;
the holder renews it by keepalive, and a lease not renewed in time frees the bench by itself.
The bench (agent) keeps the lease table, on its own wall clock (monotonic), so no clock sync is
needed between hosts. Emergency stop needs no lease.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Lease:
    holder: str
    expires: float  # monotonic seconds on the bench
    ttl: float


class LeaseRefused(Exception):
    pass


class LeaseTable:
    """The single lease of one bench."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.lease: Lease | None = None

    def current(self) -> Lease | None:
        if self.lease is not None and self.clock() >= self.lease.expires:
            self.lease = None  # expired: the bench is free again
        return self.lease

    def acquire(self, holder: str, ttl: float) -> Lease:
        if not holder:
            raise LeaseRefused("a lease needs a holder name")
        cur = self.current()
        if cur is not None and cur.holder != holder:
            raise LeaseRefused(f"leased by {cur.holder} for {cur.expires - self.clock():.0f} s more")
        self.lease = Lease(holder, self.clock() + ttl, ttl)
        return self.lease

    def renew(self, holder: str, ttl: float) -> Lease:
        cur = self.current()
        if cur is None or cur.holder != holder:
            raise LeaseRefused(f"{holder} holds no lease on this bench (expired or never taken)")
        return self.acquire(holder, ttl)

    def release(self, holder: str) -> None:
        cur = self.current()
        if cur is None or cur.holder != holder:
            raise LeaseRefused(f"{holder} holds no lease on this bench")
        self.lease = None

    def check(self, holder: str, what: str) -> None:
        cur = self.current()
        if cur is None:
            raise LeaseRefused(f"{what} needs a lease on this bench; none is held")
        if cur.holder != holder:
            raise LeaseRefused(f"{what} needs the lease, which {cur.holder} holds")

    def remaining(self) -> float:
        cur = self.current()
        return 0.0 if cur is None else max(0.0, cur.expires - self.clock())
