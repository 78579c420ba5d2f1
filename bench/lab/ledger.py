"""Which claim wins a job and which result counts: one rule for the agents' queue, ``bench lab
status`` and ``bench lab watch``.

* A claim counts only from a bench the job allows (a job sent to one bench, or one that requires
  ``bench=<id>``, is not another bench's to take).
* The first counted claim of an attempt, in the broker's order, wins it. Retained claims (already
  there when the subscriber came) have no order among themselves: one alone wins, several from
  different benches leave the attempt *disputed* — an honest bench withdraws a lost claim at
  once, so two that stay mean one bench claims what it did not win, and no result of that
  attempt counts. Claims that arrive live come after all retained ones.
* A result counts only from the bench that won the claim of its attempt, and, when the lab
  requires signatures, only with that bench's valid signature (bench/lab/trust.py). A result
  under any other bench's topic is somebody else's word and is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.lab.protocol import Claim, Job, Result
from bench.lab.trust import LabKeys, check_result


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
    results: dict[str, Result] = field(default_factory=dict)  # bench -> its result (signature checked)

    def add_claim(self, claim: Claim, retained: bool) -> None:
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
            self.results[res.bench] = res
        return why

    def _counted(self, attempt: int) -> list[tuple[str, bool]]:
        return [(b, r) for b, r in self.claims.get(attempt, []) if bench_refused(self.job, b) is None]

    def claimed(self, attempt: int) -> bool:
        return bool(self._counted(attempt))

    def disputed(self, attempt: int) -> bool:
        return len({b for b, retained in self._counted(attempt) if retained}) > 1

    def winner(self, attempt: int) -> str | None:
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
        """The result that counts: from the winner of its attempt (the latest such attempt)."""
        counted = [r for r in self.results.values() if self.winner(r.attempt) == r.bench]
        return max(counted, key=lambda r: r.attempt) if counted else None

    def ignored_results(self) -> list[Result]:
        """Results that do not count, each with why not as its reason."""
        return [
            r.model_copy(update={"reason": self.why_not(r)})
            for r in self.results.values()
            if self.winner(r.attempt) != r.bench
        ]

    def why_not(self, res: Result) -> str:
        if self.disputed(res.attempt):
            benches = sorted({b for b, retained in self._counted(res.attempt) if retained})
            return f"attempt {res.attempt} is disputed: {', '.join(benches)} all hold a claim"
        refused = bench_refused(self.job, res.bench)
        if refused is not None:
            return refused
        w = self.winner(res.attempt)
        return f"bench {w} holds the claim of attempt {res.attempt}" if w else f"no claim of attempt {res.attempt}"
