"""The one topic router of the lab (bench/lab/router.py), without a broker: which route takes a
topic, what is refused, and the subscription each route stands for."""

from __future__ import annotations

from bench.lab.protocol import Claim, Job, ProtocolError, SequenceRef, Status, Topics, encode
from bench.lab.router import Arrival, Router

T = Topics("lab")
JOB = Job(job="job-1", sequence=SequenceRef(id="S", sha256="a" * 64))


def router() -> tuple[Router[str], list[str]]:
    refused: list[str] = []
    r: Router[str] = Router(limit=2048, refused=lambda topic, exc: refused.append(f"{topic}: {exc}"))
    r.on(T.control("bench-a", "submit", "{holder}"), Job, lambda job, at: f"submit {job.job} by {at['holder']}")
    r.on(T.control("bench-a", "{op}", "{holder}"), Status, lambda st, at: f"control {at['op']}")
    r.on(T.job("{job}"), Job, lambda job, at: f"job {job.job} retained={at.retained} history={at.history}")
    r.on(
        T.claim("{bench}", "{job}"),
        Claim,
        lambda cl, at: f"claim {cl.job} by {cl.bench}",
        cleared=lambda at: f"withdrawn {at['job']} by {at['bench']}",
    )
    return r, refused


def test_a_topic_goes_to_the_first_route_that_matches_with_its_levels() -> None:
    r, refused = router()
    assert r.dispatch("lab/control/bench-a/submit/alice", encode(JOB)) == "submit job-1 by alice"
    assert r.dispatch("lab/control/bench-a/estop/alice", encode(Status(bench="x", online=True))) == "control estop"
    got = r.dispatch("lab/jobs/job-1", encode(JOB), retained=True, history=True)
    assert got == "job job-1 retained=True history=True"
    claim = Claim(job="job-1", attempt=1, bench="bench-b")
    assert r.dispatch("lab/benches/bench-b/claims/job-1", encode(claim)) == "claim job-1 by bench-b"
    assert refused == []


def test_what_matches_no_route_is_passed_over() -> None:
    r, refused = router()
    for topic in ("lab/jobs", "lab/jobs/job-1/more", "other/jobs/job-1", "lab/control/bench-b/estop/alice", "lab//"):
        assert r.dispatch(topic, encode(JOB)) is None, topic
    assert refused == []


def test_an_empty_payload_is_a_cleared_message_only_where_the_route_says_what_that_means() -> None:
    r, refused = router()
    assert r.dispatch("lab/benches/bench-b/claims/job-1", b"") == "withdrawn job-1 by bench-b"
    assert r.dispatch("lab/jobs/job-1", b"") is None
    assert refused == []


def test_a_message_that_speaks_for_another_bench_or_job_than_its_topic_is_refused() -> None:
    r, refused = router()
    other_bench = Claim(job="job-1", attempt=1, bench="bench-c")
    assert r.dispatch("lab/benches/bench-b/claims/job-1", encode(other_bench)) is None
    other_job = Claim(job="job-2", attempt=1, bench="bench-b")
    assert r.dispatch("lab/benches/bench-b/claims/job-1", encode(other_job)) is None
    assert r.dispatch("lab/jobs/job-9", encode(JOB)) is None
    assert refused == [
        "lab/benches/bench-b/claims/job-1: message names bench bench-c but came on the topic of bench bench-b",
        "lab/benches/bench-b/claims/job-1: message names job job-2 but came on the topic of job job-1",
        "lab/jobs/job-9: message names job job-1 but came on the topic of job job-9",
    ]


def test_malformed_oversized_and_wrong_messages_are_refused_in_one_line() -> None:
    r, refused = router()
    assert r.dispatch("lab/jobs/job-1", b"{not json") is None
    assert r.dispatch("lab/jobs/job-1", b"x" * 4096) is None
    assert r.dispatch("lab/jobs/job-1", encode(Status(bench="x", online=True))) is None
    assert len(refused) == 3 and all("\n" not in line for line in refused), refused
    assert "not JSON" in refused[0] and "larger than the limit of 2048 bytes" in refused[1]
    assert refused[2].startswith("lab/jobs/job-1: job: ")


def test_a_handler_may_refuse_too() -> None:
    refused: list[str] = []
    r: Router[None] = Router(refused=lambda topic, exc: refused.append(str(exc)))

    def picky(job: Job, at: Arrival) -> None:
        raise ProtocolError("not today")

    r.on(T.job("{job}"), Job, picky)
    assert r.dispatch("lab/jobs/job-1", encode(JOB)) is None
    assert refused == ["not today"]


def test_each_route_stands_for_its_subscription() -> None:
    r, _ = router()
    assert [route.filter for route in r.routes] == [
        "lab/control/bench-a/submit/+",
        "lab/control/bench-a/+/+",
        "lab/jobs/+",
        "lab/benches/+/claims/+",
    ]
    found = r.match("lab/benches/bench-b/claims/job-1")
    assert (
        found is not None
        and found[0].filter == "lab/benches/+/claims/+"
        and found[1]
        == {
            "bench": "bench-b",
            "job": "job-1",
        }
    )
    assert r.match("lab/queue/job-1") is None
