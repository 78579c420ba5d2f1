"""The lab refuses what it must, says why in one line, and keeps running: wrong credentials, a
topic outside the ACL, an unknown sequence hash, a malformed or oversized job, sequence text."""

from __future__ import annotations

import asyncio
import hashlib
import json

from bench.lab import client
from bench.lab.mqtt import BrokerError
from bench.lab.mqtt import client as mqtt_client
from bench.lab.protocol import LogEntry, Result, SequenceRef, decode, encode
from tests.conftest import bench
from tests.labkit import PASSWORDS, SHORT, Lab, Mosquitto, collect, lab_fixture, mosquitto_fixture  # noqa: F401  (fixtures)


def test_wrong_credentials_are_refused_in_one_line(mosquitto: Mosquitto) -> None:
    url = f"mqtt://operator:not-the-password@127.0.0.1:{mosquitto.port}"
    out = bench("lab", "status", "--broker", url)
    assert out.rc == 3, out
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: broker") and "refused the credentials" in lines[0], out.err
    # No broker at all: one line too.
    out = bench("lab", "status", "--broker", "mqtt://127.0.0.1:1")
    assert out.rc == 3 and out.err.strip().startswith("error: cannot connect to broker"), out.err
    # An agent with a wrong password does not start (and says so).
    out = bench(
        "agent",
        "--station",
        "stations/sim.yaml",
        "--library",
        str(SHORT),
        "--broker",
        url,
        "--id",
        "bench-a",
        timeout=30,
    )
    assert out.rc == 3 and "refused the credentials" in out.err.strip().splitlines()[-1], out.err


def test_a_bench_cannot_publish_outside_its_own_topic(mosquitto: Mosquitto) -> None:
    op = mosquitto.broker()
    bench_a = mosquitto.broker("bench-a")
    forged = Result(job="forged", bench="bench-b", attempt=1, verdict="PASS")

    async def forge() -> None:
        async with mqtt_client(bench_a, "forger") as c:
            await c.publish("lab/benches/bench-b/results/forged", encode(forged), qos=1, retain=True)
            await c.publish("lab/jobs/forged", b"{}", qos=1, retain=True)
            await c.publish("lab/control/bench-b/estop", b"{}", qos=1)
            await c.publish("lab/benches/bench-a/log", b"allowed", qos=1)  # its own topic: allowed

    got = asyncio.run(collect(op, ["lab/#"], lambda g: any(t == "lab/benches/bench-a/log" for t, _ in g), 10, forge))
    assert [t for t, _ in got] == ["lab/benches/bench-a/log"], got
    log = mosquitto.log.read_text()
    for topic in ("lab/benches/bench-b/results/forged", "lab/jobs/forged", "lab/control/bench-b/estop"):
        assert "Denied PUBLISH from forger" in log and topic in log, topic
    # Nothing forged was retained either.
    snap = asyncio.run(client.snapshot(op))
    assert "forged" not in snap.results and "forged" not in snap.jobs


def test_unknown_hash_malformed_oversized_and_text_jobs_are_refused_and_the_agent_goes_on(lab: Lab) -> None:
    lab.start_agent("bench-a")
    lab.wait_online(["bench-a"])
    op = lab.broker.broker()
    url = lab.broker.url()

    # The client refuses a hash no bench has, before anything is queued.
    out = bench("lab", "submit", f"LAB-SHORT@{'0' * 64}", "--broker", url)
    assert out.rc == 2 and out.err.startswith("error: unknown sequence LAB-SHORT") and "\n" not in out.err.strip(), (
        out.err
    )
    out = bench("lab", "submit", str(SHORT), "--require", "dut=FCCU", "--broker", url)
    assert out.rc == 2 and "matches --require dut=FCCU" in out.err, out.err

    unknown = client.make_job(SequenceRef(id="LAB-SHORT", sha256="1" * 64), {}, {})
    text = SHORT.read_text()
    with_text = client.make_job(SequenceRef(id="LAB-SHORT", sha256=hashlib.sha256(text.encode()).hexdigest()), {}, {})
    with_text = with_text.model_copy(update={"sequence_text": text})
    good = client.make_job(client.sequence_ref(str(SHORT)), {"hold": "5 s"}, {})

    async def send_bad() -> None:
        async with mqtt_client(op, "bad-sender") as c:
            # Sent straight to the queue, as a broken or hostile client would.
            await c.publish("lab/queue/garbage", b"{not json", qos=1)
            await c.publish("lab/queue/big", b'{"v": 1, "job": "big", "pad": "' + b"x" * 200_000 + b'"}', qos=1)
            await c.publish(
                "lab/queue/wrongtype", json.dumps({"v": 1, "job": "wrongtype", "sequence": 3}).encode(), qos=1
            )
            await c.publish(f"lab/queue/{unknown.job}", encode(unknown), qos=1)
            await c.publish(f"lab/queue/{with_text.job}", encode(with_text), qos=1)
        await client.submit(op, [good])

    got = asyncio.run(
        collect(
            op,
            ["lab/benches/bench-a/log", f"lab/benches/+/results/{good.job}"],
            lambda g: any("/results/" in t for t, _ in g),
            60,
            send_bad,
        )
    )
    notes = [decode(LogEntry, p).message for t, p in got if t.endswith("/log")]
    joined = "\n".join(notes)
    assert "refused message on lab/queue/garbage: not JSON" in joined, joined
    assert "refused message on lab/queue/big: message of 200" in joined and "larger than the limit" in joined, joined
    assert "refused message on lab/queue/wrongtype: job: sequence" in joined, joined
    assert f"refused job {unknown.job}: unknown sequence LAB-SHORT" in joined, joined
    assert f"refused job {with_text.job}: sequence text from the network is refused" in joined, joined
    # ... and the agent is still there: the good job ran after all of that.
    res = next(decode(Result, p) for t, p in got if "/results/" in t)
    assert res.job == good.job and res.verdict == "PASS"
    assert lab.agents["bench-a"].proc.poll() is None
    agent_log = lab.agents["bench-a"].text()
    assert "refused message on lab/queue/garbage" in agent_log  # logged locally too


def _run_text(op: object, sequence_id: str, text: str) -> Result:
    """Send a job with its sequence as text and wait for its result."""
    job = client.make_job(SequenceRef(id=sequence_id, sha256=hashlib.sha256(text.encode()).hexdigest()), {}, {})
    job = job.model_copy(update={"sequence_text": text})
    got = asyncio.run(
        collect(
            op,
            [f"lab/benches/+/results/{job.job}"],
            lambda g: bool(g),
            60,
            lambda: client.submit(op, [job], check=False),  # type: ignore[arg-type]
        )
    )
    return decode(Result, got[0][1])


def test_sequence_text_runs_only_where_the_station_allows_it(lab: Lab) -> None:
    lab.start_agent("bench-b", allow_text=True)
    lab.wait_online(["bench-b"])
    op = lab.broker.broker()
    text = SHORT.read_text().replace("hold: 10 s", "hold: 2 s").replace("id: LAB-SHORT", "id: LAB-TEXT")
    res = _run_text(op, "LAB-TEXT", text)
    assert res.verdict == "PASS", res.reason
    # A sequence is data: a text that is not a valid sequence is refused with the loader's one line.
    bad = "id: X\ntitle: t\nversion: 1.0.0\nbasis: {standard: t, clause: t}\nrequires: [psu]\nsteps: [{python: 'import os'}]\n"
    res = _run_text(op, "X", bad)
    assert res.verdict == "REFUSED" and res.exit_code == 2, res


def test_client_api_raises_broker_error_on_bad_password(mosquitto: Mosquitto) -> None:
    from bench.lab.mqtt import parse_broker

    b = parse_broker(f"mqtt://127.0.0.1:{mosquitto.port}", "bench-a", PASSWORDS["operator"])
    try:
        asyncio.run(client.snapshot(b))
    except BrokerError as exc:
        assert "refused the credentials of user 'bench-a'" in str(exc)
    else:
        raise AssertionError("a wrong password was accepted")
