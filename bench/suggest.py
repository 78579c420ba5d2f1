"""A "did you mean ...?" for a name the bench does not know: a signal, a device, a parameter, an
instant or a state.

One helper for every place that refuses an unknown name, so a technician who writes
``bms.cell_voltage_max`` reads ``did you mean 'bms.cell_v_max'?`` in the same words wherever the
name was written (a condition, a ``set``, ``display``, ``-p name=value``, a safe state).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

# difflib's own default: close enough that a suggestion is a likely typo, not a guess.
CUTOFF = 0.6


def did_you_mean(word: str, candidates: Iterable[str], prefix: str = "") -> str:
    """``"; did you mean 'X'?"`` for the candidate closest to ``word``, or ``""`` when none is close.

    Compared case-insensitively (a state is matched that way too), shown as the candidate is
    spelled; ``prefix`` is written before it (``$`` of a parameter, ``@`` of an instant).
    """
    by_folded: dict[str, str] = {}
    for c in candidates:
        by_folded.setdefault(c.casefold(), c)
    found = difflib.get_close_matches(word.casefold(), list(by_folded), n=1, cutoff=CUTOFF)
    return f"; did you mean '{prefix}{by_folded[found[0]]}'?" if found else ""
