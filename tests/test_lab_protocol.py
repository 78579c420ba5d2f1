"""Lab messages without a broker: strict decoding, size limits, in-order delivery of events."""

from __future__ import annotations

import json

import pytest

from bench.errors import LoadError
from bench.lab.client import _Stream
from bench.lab.mqtt import parse_broker
from bench.lab.protocol import Event, Job, ProtocolError, decode, encode

SHA = "a" * 64


def job(**kw: object) -> bytes:
    body = {"v": 1, "job": "j1", "sequence": {"id": "S", "sha256": SHA}, **kw}
    return json.dumps(body).encode()


def test_a_job_round_trips_and_unknown_keys_are_refused() -> None:
    j = decode(Job, job(params={"hold": "5 s"}))
    assert decode(Job, encode(j)) == j
    with pytest.raises(ProtocolError, match="job: script: Extra inputs are not permitted"):
        decode(Job, job(script="import os"))
    with pytest.raises(ProtocolError, match=r"sequence\.sha256"):
        decode(Job, job(sequence={"id": "S", "sha256": "xyz"}))
    with pytest.raises(ProtocolError, match="job: job"):
        decode(Job, job(job="../../etc"))
    with pytest.raises(ProtocolError, match="not JSON"):
        decode(Job, b"\xff\xfe")
    with pytest.raises(ProtocolError, match="larger than the limit of 1024 bytes"):
        decode(Job, job(submitter="x" * 2000), limit=1024)


def test_events_are_delivered_once_in_order_whatever_comes() -> None:
    out: list[int] = []
    s = _Stream(lambda ev: out.append(ev.seq))

    def ev(n: int) -> Event:
        return Event(bench="b", job="j", run_id="r", seq=n, kind="k", t=0.0)

    for n in [0, 1, 3, 4, 1, 2, 0, 5, 4]:
        s.add(ev(n))
    assert out == [0, 1, 2, 3, 4, 5]
    s.add(ev(7))
    assert s.gap() and out[-1] == 5


def test_broker_urls() -> None:
    b = parse_broker("mqtts://u:p%40ss@broker.lab")
    assert (b.host, b.port, b.username, b.password, b.tls) == ("broker.lab", 8883, "u", "p@ss", True)
    assert parse_broker("127.0.0.1:1884").port == 1884
    with pytest.raises(LoadError):
        parse_broker("http://x")
