"""Which claim wins a job and which result counts: one rule for the agents' queue, ``bench lab
status`` and ``bench lab watch``.

* A claim counts only from a bench the job allows (a job sent to one bench, or one that requires
  ``bench=<id>``, is not another bench's to take).
* The first counted claim of an attempt, in the broker's order, wins it. Retained claims (already
  there when the subscriber came) have no order among themselves: one alone wins, several from
  different benches leave the attempt *disputed* — an honest bench withdraws a lost claim at
  once, so two that stay mean one bench claims what it did not win, and no result of that
  attempt counts. Claims that arrive live come after all retained ones.
* Attempt n > 1 is open only when the winner of attempt n-1 is offline without a result, or
  reported its run ``ABANDONED`` (its agent restarted during the run). A claim of an attempt that is
  not open wins nothing: a bench cannot take over a job its winner is still running.
* A result counts only from the bench that won the claim of its attempt, and, when the lab
  requires signatures, only with that bench's valid signature (bench/lab/trust.py). A result
  under any other bench's topic is somebody else's word and is ignored. An ``ABANDONED`` result
  ends an attempt, not the job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bench.lab.protocol import Claim, Job, Result
from bench.lab.trust import LabKeys, check_result

# The verdict of a run its bench abandoned (the agent restarted while it ran; the run's folder on
# the bench stays unsealed): the attempt is over and the job open again; never the job's result.
ABANDONED = "ABANDONED"


def _nobody_online(bench: str) -> bool:
    return False


def bench_refused(job: Job | None, bench: str) -> str | None:
    """None when ``bench`` may take ``job`` as far as the job names benches, else why not."""
    if job is None:
        return None  # not known (yet): nothing to hold against the claim
    if job.bench is not None and job.bench != bench:
        return f"job is for bench {job.bench}"
    want = job.require.get("bench")
    if want is not None and want != bench:
        return f"job requires bench={want}"
    return None


@dataclass
class JobRecord:
    """What is known of one job: its record, the claims of each attempt, the benches' results."""

    job: Job | None = None
    # attempt -> [(bench, retained)] in arrival order
    claims: dict[int, list[tuple[str, bool]]] = field(default_factory=dict)
    # (bench, attempt) -> its result (signature checked)
    results: dict[tuple[str, int], Result] = field(default_factory=dict)
    online: Callable[[str], bool] = _nobody_online  # whether a bench is online now (its status)

    def add_claim(self, claim: Claim, retained: bool) -> None:
        if not retained and not self.opened(claim.attempt):
            return  # claimed before its attempt opened: it would win that attempt the moment it opens
        entries = self.claims.setdefault(claim.attempt, [])
        if all(b != claim.bench for b, _ in entries):
            entries.append((claim.bench, retained))

    def withdraw(self, bench: str) -> None:
        """A bench cleared its claim (it lost the race). The winner's claim stays: clearing the
        history of a finished job must not open it again."""
        for attempt, entries in self.claims.items():
            if self.winner(attempt) != bench:
                entries[:] = [(b, r) for b, r in entries if b != bench]

    def add_result(self, res: Result, keys: LabKeys | None) -> str | None:
        """Keep the result if its signature is good (when required); else say why it is ignored."""
        why = check_result(res, keys)
        if why is None:
            self.results[(res.bench, res.attempt)] = res
        return why

    def _counted(self, attempt: int) -> list[tuple[str, bool]]:
        return [(b, r) for b, r in self.claims.get(attempt, []) if bench_refused(self.job, b) is None]

    def claimed(self, attempt: int) -> bool:
        return bool(self._counted(attempt))

    def disputed(self, attempt: int) -> bool:
        return len({b for b, retained in self._counted(attempt) if retained}) > 1

    def opened(self, attempt: int) -> bool:
        """Attempt 1 is open; a later one once the previous winner is gone without a result, or abandoned its run."""
        if attempt <= 1:
            return True
        prev = self.winner(attempt - 1)
        if prev is None:
            # No earlier claim is known at all: its bench overwrote it (a bench's retained claim is
            # its latest) when it took this attempt itself. Any known earlier claim must win first.
            return not any(self._counted(a) for a in self.claims if a < attempt)
        res = self.results.get((prev, attempt - 1))
        if res is not None:
            return res.verdict == ABANDONED
        if any(b == prev and a >= attempt for b, a in self.results):
            return True  # the previous winner itself went on to a later attempt: it lost this one
        return not self.online(prev)

    def winner(self, attempt: int) -> str | None:
        if not self.opened(attempt):
            return None
        counted = self._counted(attempt)
        retained = [b for b, r in counted if r]
        if len(retained) > 1:
            return None  # disputed: see the module's docstring
        if retained:
            return retained[0]
        return counted[0][0] if counted else None

    def last_winner(self) -> tuple[int, str] | None:
        """The latest attempt that has a winner, and that bench."""
        for attempt in sorted(self.claims, reverse=True):
            w = self.winner(attempt)
            if w is not None:
                return attempt, w
        return None

    def result(self) -> Result | None:
        """The result that counts: from the winner of its attempt, not abandoned (the earliest such attempt)."""
        counted = [r for r in self.results.values() if r.verdict != ABANDONED and self.winner(r.attempt) == r.bench]
        return min(counted, key=lambda r: r.attempt) if counted else None

    def ignored_results(self) -> list[Result]:
        """Results that do not count, each with why not as its reason."""
        return [
            r.model_copy(update={"reason": self.why_not(r)})
            for r in self.results.values()
            if self.winner(r.attempt) != r.bench or r.verdict == ABANDONED
        ]

    def why_not(self, res: Result) -> str:
        if res.verdict == ABANDONED and self.winner(res.attempt) == res.bench:
            return f"attempt {res.attempt} was abandoned ({res.reason}); the job is open again"
        if not self.opened(res.attempt):
            return f"attempt {res.attempt} is not open (the bench of attempt {res.attempt - 1} is online or finished)"
        if self.disputed(res.attempt):
            benches = sorted({b for b, retained in self._counted(res.attempt) if retained})
            return f"attempt {res.attempt} is disputed: {', '.join(benches)} all hold a claim"
        refused = bench_refused(self.job, res.bench)
        if refused is not None:
            return refused
        w = self.winner(res.attempt)
        return f"bench {w} holds the claim of attempt {res.attempt}" if w else f"no claim of attempt {res.attempt}"
