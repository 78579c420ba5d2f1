"""The one rule for which claim wins and which result counts (bench/lab/ledger.py), without a broker."""

from __future__ import annotations

import pytest

from bench.errors import LoadError
from bench.lab.ledger import ABANDONED, JobRecord
from bench.lab.protocol import Claim, Job, Result, SequenceRef
from bench.lab.trust import check_result, read_lab_keys, sign_result
from bench.record.signing import init_key, load_key


def job(**kw: object) -> Job:
    return Job(job="j1", sequence=SequenceRef(id="S", sha256="a" * 64), **kw)  # type: ignore[arg-type]


def res(bench: str, attempt: int = 1, verdict: str = "PASS") -> Result:
    return Result(job="j1", bench=bench, attempt=attempt, verdict=verdict)


def test_only_the_claim_holder_s_result_counts_and_a_job_for_one_bench_is_its_own() -> None:
    rec = JobRecord(job=job(require={"bench": "b"}))
    rec.add_claim(Claim(job="j1", attempt=1, bench="a"), retained=False)  # not allowed by the job
    rec.add_result(res("a"), None)
    assert rec.winner(1) is None and rec.result() is None
    rec.add_claim(Claim(job="j1", attempt=1, bench="b"), retained=False)
    assert rec.winner(1) == "b" and rec.result() is None
    rec.add_result(res("b", verdict="FAIL"), None)
    assert rec.result() == res("b", verdict="FAIL")
    assert [r.bench for r in rec.ignored_results()] == ["a"]


def test_live_order_decides_retained_claims_of_two_benches_are_a_dispute() -> None:
    live = JobRecord()
    live.add_claim(Claim(job="j1", attempt=1, bench="b"), retained=False)
    live.add_claim(Claim(job="j1", attempt=1, bench="a"), retained=False)
    assert live.winner(1) == "b"
    seen_later = JobRecord()
    for bench in ("a", "b"):
        seen_later.add_claim(Claim(job="j1", attempt=1, bench=bench), retained=True)
    assert seen_later.disputed(1) and seen_later.winner(1) is None
    seen_later.withdraw("a")  # the loser withdraws: no dispute any more
    assert seen_later.winner(1) == "b"
    seen_later.withdraw("b")  # clearing the winner's history does not open the job again
    assert seen_later.winner(1) == "b"


def test_a_later_attempt_opens_only_when_the_winner_is_gone_or_lost_its_run() -> None:
    online = {"b": True}
    rec = JobRecord(online=lambda x: online.get(x, False))
    rec.add_claim(Claim(job="j1", attempt=1, bench="b"), retained=False)
    rec.add_claim(Claim(job="j1", attempt=2, bench="a"), retained=False)  # too early: dropped
    assert 2 not in rec.claims
    online["b"] = False  # its will: offline without a result
    rec.add_claim(Claim(job="j1", attempt=2, bench="c"), retained=False)
    assert rec.winner(2) == "c"
    rec.add_result(res("c", 2), None)
    assert rec.result() == res("c", 2)
    online["b"] = True  # back, still running attempt 1: the later attempt no longer counts
    assert rec.result() is None
    rec.add_result(res("b", 1, ABANDONED), None)  # ... or it abandoned that run: the later attempt counts
    assert rec.result() == res("c", 2)


def test_signed_results_and_the_lab_keys_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, pub = init_key(tmp_path / "k")
    key = load_key(tmp_path / "k")
    assert key is not None
    keys_file = tmp_path / "lab-keys"
    keys_file.write_text(f"# comment\nb {pub}\n")
    keys = read_lab_keys(keys_file)
    signed = sign_result(res("b"), key)
    assert check_result(signed, keys) is None
    assert check_result(signed, None) is None  # no lab keys: no signatures required
    assert "unsigned" in (check_result(res("b"), keys) or "")
    assert "no public key for bench a" in (check_result(sign_result(res("a"), key), keys) or "")
    assert "does not match" in (check_result(signed.model_copy(update={"verdict": "FAIL"}), keys) or "")
    keys_file.write_text("b not-a-key\n")
    with pytest.raises(LoadError, match=r"lab-keys:1: expected"):
        read_lab_keys(keys_file)
