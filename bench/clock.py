"""Wall-clock instants as the record, the lab and the reports write them: UTC, ISO 8601, to the
millisecond, with a ``Z``. The one formatting of a timestamp, so that every file sorts and
compares the same way."""

from __future__ import annotations

import datetime as dt


def utc(epoch: float) -> str:
    """``2026-12-03T07:40:00.123Z`` for a Unix time."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch_of(text: str) -> float | None:
    """The Unix time of a timestamp written by ``utc`` (or any ISO 8601 time with a zone); None
    when the text is empty or not such a time (a message from elsewhere)."""
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
