"""Wall-clock instants as the record, the lab and the reports write them: UTC, ISO 8601, to the
millisecond, with a ``Z``. The one formatting of a timestamp, so that every file sorts and
compares the same way."""

from __future__ import annotations

import datetime as dt


def utc(epoch: float) -> str:
    """``2026-12-03T07:40:00.123Z`` for a Unix time."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
