"""Lab trust on a real mosquitto: a result counts only from the bench that holds the job's claim
(and, when the lab requires it, only with that bench's signature); control messages target a job,
expire, and are never taken from a retained message (a broker restart replays those)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from bench.clock import utc
from bench.lab import client
from bench.lab.mqtt import client as mqtt_client
from bench.lab.protocol import Claim, Job, LogEntry, Result, State, decode, encode
from tests.conftest import bench
from tests.labkit import (  # noqa: F401  (fixtures)
    SHORT,
    Lab,
    collect,
    in_step,
    lab_fixture,
    mosquitto_fixture,
    watch_until,
)


async def watch_job(broker: object, job: Job, keys: dict[str, str] | None = None) -> Result:
    """Submit a job and follow it to the result that counts."""
    watcher = asyncio.create_task(client.watch(broker, job.job, lambda k, o: None, give_up_after=60, keys=keys))  # type: ignore[arg-type]
    await asyncio.sleep(0.5)
    await client.submit(broker, [job])  # type: ignore[arg-type]
    return await watcher


def _job_line(out: str, job: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(job))


async def _forge(broker: object, job: str, bench: str = "bench-a", verdict: str = "PASS", attempt: int = 1) -> None:
    """What a hostile or broken bench can do under its own topic: claim a job and publish a result."""
    claim = Claim(job=job, attempt=attempt, bench=bench)
    forged = Result(job=job, bench=bench, attempt=attempt, verdict=verdict, run_id="forged", events=0)
    async with mqtt_client(broker, f"forger-{time.monotonic_ns()}") as c:  # type: ignore[arg-type]
        await c.publish(f"lab/benches/{bench}/claims/{job}", encode(claim), qos=1, retain=True)
        await c.publish(f"lab/benches/{bench}/results/{job}", encode(forged), qos=1, retain=True)


def test_a_result_from_a_bench_the_job_did_not_allow_does_not_count(lab: Lab) -> None:
    op = lab.broker.broker()
    url = lab.broker.url()
    job = client.make_job(client.sequence_ref(str(SHORT)), {"hold": "2 s"}, {"bench": "bench-b"})
    asyncio.run(client.submit(op, [job], check=False))
    asyncio.run(_forge(lab.broker.broker("bench-a"), job.job))

    out = bench("lab", "status", "--broker", url)
    assert out.rc == 0, out.err
    line = _job_line(out.out, job.job)
    assert " done " not in line and "PASS" not in line, line
    watched = bench("lab", "watch", job.job, "--timeout", "3", "--broker", url, timeout=30)
    assert watched.rc != 0, watched.out  # the forged PASS is not the job's verdict

    # bench-b, the bench the job requires, still takes it and its own result is the one that counts.
    lab.start_agent("bench-b")
    res = asyncio.run(client.watch(op, job.job, lambda k, o: None, give_up_after=60))
    assert res.bench == "bench-b" and res.verdict == "PASS" and Path(res.report).is_dir(), res
    line = _job_line(bench("lab", "status", "--broker", url).out, job.job)
    assert " done " in line and "bench-b" in line and "PASS" in line, line


def _forged_while_bench_b_runs(lab: Lab, attempt: int) -> tuple[Result, str]:
    """bench-b runs a job whose true verdict is FAIL (50 V is outside the measurement's 90..110 V);
    once bench-b holds the claim, bench-a claims attempt ``attempt`` and publishes a PASS at once.
    The job's result as watched from the start, and its line in ``bench lab status`` meanwhile."""
    lab.start_agent("bench-b", realtime=True)
    lab.wait_online(["bench-b"])
    op = lab.broker.broker()
    job = client.make_job(client.sequence_ref(str(SHORT)), {"hold": "3 s", "voltage": "50 V"}, {})

    async def scenario() -> tuple[Result, str]:
        watcher = await watch_until(op, job, lambda kind, obj: isinstance(obj, Claim) and obj.bench == "bench-b")
        await _forge(lab.broker.broker("bench-a"), job.job, attempt=attempt)
        out = await asyncio.to_thread(bench, "lab", "status", "--broker", lab.broker.url())
        return await watcher, _job_line(out.out, job.job)

    return asyncio.run(scenario())


def test_a_result_from_a_bench_that_lost_the_claim_does_not_count(lab: Lab) -> None:
    # bench-a claims attempt 1 after bench-b did: bench-b's claim came first and wins.
    res, status = _forged_while_bench_b_runs(lab, attempt=1)
    assert " done " not in status and "PASS" not in status, status
    assert res.bench == "bench-b" and res.verdict == "FAIL", res
    # Watched afterwards, from the retained claims alone, the two claims of attempt 1 are a dispute:
    # neither result counts (bench-b's honest FAIL included), and the forged PASS is never the verdict.
    watched = bench("lab", "watch", res.job, "--timeout", "5", "--broker", lab.broker.url(), timeout=30)
    assert watched.rc == 3 and "attempt 1 is disputed" in watched.out, watched.out
    assert not any(line.startswith("PASS") for line in watched.out.splitlines()), watched.out
    line = _job_line(bench("lab", "status", "--broker", lab.broker.url()).out, res.job)
    assert "disputed" in line and "PASS" not in line, line


def test_a_later_attempt_cannot_take_over_a_job_its_winner_still_runs(lab: Lab) -> None:
    # Attempt 2 opens only when bench-b is gone without a result; bench-a claims it anyway.
    res, status = _forged_while_bench_b_runs(lab, attempt=2)
    assert " done " not in status and "PASS" not in status, status
    assert res.bench == "bench-b" and res.verdict == "FAIL" and res.attempt == 1, res
    line = _job_line(bench("lab", "status", "--broker", lab.broker.url()).out, res.job)
    assert " done " in line and "bench-b" in line and "FAIL" in line, line


def test_a_bench_restarted_mid_job_reports_the_run_lost_and_the_job_runs_again(lab: Lab) -> None:
    b = lab.start_agent("bench-b", realtime=True, grace=60)
    lab.wait_online(["bench-b"])
    op = lab.broker.broker()
    job = client.make_job(client.sequence_ref(str(SHORT)), {"hold": "4 s"}, {})
    shown: list[str] = []

    def on(kind: str, obj: object) -> None:
        if kind == "ignored" and isinstance(obj, Result):
            shown.append(obj.reason)

    async def scenario() -> Result:
        watcher = await watch_until(op, job, in_step("hold"), also=on, give_up_after=90)
        b.proc.kill()
        await asyncio.to_thread(b.proc.wait)
        lab.start_agent("bench-b", realtime=True, grace=60)  # the same bench, a new agent
        return await watcher

    res = asyncio.run(scenario())
    assert res.bench == "bench-b" and res.attempt == 2 and res.verdict == "PASS", res
    assert any("attempt 1 was abandoned" in r for r in shown), shown
    assert "attempt 1 was abandoned" in lab.agents["bench-b"].text()


def test_with_lab_keys_a_result_counts_only_when_signed_by_that_bench(lab: Lab, tmp_path: Path) -> None:
    from bench.lab.trust import check_result, read_lab_keys
    from bench.record.signing import init_key

    _, pub_b = init_key(tmp_path / "keys-b")
    _, pub_x = init_key(tmp_path / "keys-x")
    good = tmp_path / "lab-keys"
    good.write_text(f"# bench id, public key\nbench-b {pub_b}\n")
    wrong = tmp_path / "lab-keys-wrong"
    wrong.write_text(f"bench-b {pub_x}\n")
    lab.start_agent("bench-b", env={"BENCH_KEY_DIR": str(tmp_path / "keys-b"), "BENCH_LAB_KEYS": str(good)})
    lab.wait_online(["bench-b"])
    op = lab.broker.broker()
    url = lab.broker.url()
    job = client.make_job(client.sequence_ref(str(SHORT)), {"hold": "2 s"}, {})
    res = asyncio.run(watch_job(op, job, keys=read_lab_keys(good)))
    assert res.verdict == "PASS" and res.signature, res
    assert check_result(res, read_lab_keys(good)) is None
    # The signature covers the manifest hash: another hash is not this bench's word.
    other = res.model_copy(update={"manifest_sha256": "0" * 64})
    assert "signature" in (check_result(other, read_lab_keys(good)) or "")

    ok = bench("lab", "status", "--broker", url, "--lab-keys", good)
    assert ok.rc == 0 and "PASS" in _job_line(ok.out, job.job), ok.out + ok.err
    bad = bench("lab", "status", "--broker", url, "--lab-keys", wrong)
    assert bad.rc == 0 and "PASS" not in _job_line(bad.out, job.job), bad.out
    watched = bench("lab", "watch", job.job, "--timeout", "3", "--broker", url, "--lab-keys", wrong, timeout=30)
    assert watched.rc == 3 and "does not match bench bench-b's key" in watched.out, watched.out
    assert not any(line.startswith("PASS") for line in watched.out.splitlines()), watched.out
    # Unsigned, under the bench's own topic (a stolen password, say): not counted either.
    unsigned = client.make_job(client.sequence_ref(str(SHORT)), {}, {"bench": "bench-c"})
    asyncio.run(client.submit(op, [unsigned], check=False))
    asyncio.run(_forge(lab.broker.broker("bench-c"), unsigned.job, bench="bench-c"))
    keys_c = tmp_path / "lab-keys-c"
    keys_c.write_text(f"bench-c {pub_x}\n")
    line = _job_line(bench("lab", "status", "--broker", url, "--lab-keys", keys_c).out, unsigned.job)
    assert "PASS" not in line, line
    # A station that requires signatures but has no key would publish results nobody counts.
    no_key = bench(
        "agent",
        "--station",
        "stations/sim.yaml",
        "--library",
        SHORT,
        "--broker",
        lab.broker.url("bench-a"),
        "--id",
        "bench-a",
        env={"BENCH_KEY_DIR": str(tmp_path / "none"), "BENCH_LAB_KEYS": str(good)},
    )
    assert no_key.rc == 2 and len(no_key.err.strip().splitlines()) == 1 and "key" in no_key.err, no_key.err


def test_a_retained_estop_is_refused_and_a_broker_restart_stops_nothing(lab: Lab) -> None:
    lab.start_agent("bench-a", realtime=True)
    lab.wait_online(["bench-a"])
    op = lab.broker.broker()
    job = client.make_job(client.sequence_ref(str(SHORT)), {"hold": "6 s"}, {})

    async def publish_retained() -> None:
        async with mqtt_client(op, "retained-estop") as c:
            old = {"op": "estop", "holder": "mallory", "reason": "pressed once, long ago"}
            await c.publish("lab/control/bench-a/estop", json.dumps(old).encode(), qos=1, retain=True)
            # Even a well-formed, fresh, targeted one is refused when it is retained.
            new = {
                "op": "estop",
                "holder": "mallory",
                "reason": "retained on purpose",
                "job": job.job,
                "expires_utc": utc(time.time() + 600),
            }
            await c.publish("lab/control/bench-a/estop/mallory", json.dumps(new).encode(), qos=1, retain=True)

    asyncio.run(publish_retained())

    async def scenario() -> Result:
        watcher = await watch_until(op, job, in_step("hold"))
        await asyncio.to_thread(lab.broker.stop)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(lab.broker.start)
        return await watcher

    res = asyncio.run(scenario())
    log = lab.agents["bench-a"].text()
    assert "broker connection lost" in log, log  # the restart did happen during the run
    assert res.verdict == "PASS", res.reason
    assert "retained control message" in log and "refused" in log, log


def test_control_must_name_the_running_job_be_fresh_and_agree_with_its_topic(lab: Lab) -> None:
    lab.start_agent("bench-a", realtime=True)
    lab.wait_online(["bench-a"])
    op = lab.broker.broker()
    job = client.make_job(client.sequence_ref(str(SHORT)), {"hold": "8 s"}, {})
    notes: list[str] = []

    def ctl(op_name: str, reason: str, *, target: str | None, expires: float) -> bytes:
        body = {"op": op_name, "holder": "carol", "reason": reason, "expires_utc": utc(expires)}
        if target is not None:
            body["job"] = target
        return json.dumps(body).encode()

    async def scenario() -> Result:
        watcher = await watch_until(op, job, in_step("hold"))
        now = time.time()
        async with mqtt_client(op, "control-test") as c:
            await c.subscribe("lab/benches/bench-a/log", qos=1)
            sends = [
                ("estop/carol", ctl("estop", "another job", target="some-other-job", expires=now + 60)),
                ("estop/carol", ctl("estop", "stale", target=job.job, expires=now - 5)),
                ("estop/carol", ctl("estop", "no target", target=None, expires=now + 60)),
                ("release/carol", ctl("estop", "op differs from the topic", target=job.job, expires=now + 60)),
            ]
            for leaf, body in sends:
                await c.publish(f"lab/control/bench-a/{leaf}", body, qos=1)
            async with asyncio.timeout(10):
                async for msg in c.messages:
                    notes.append(decode(LogEntry, bytes(msg.payload)).message)
                    if len(notes) >= 4:
                        break
        # The command line aims the stop at the job the bench runs now, read from its state.
        out = await asyncio.to_thread(
            bench, "lab", "estop", "bench-a", "--holder", "carol", "--reason", "real", "--broker", lab.broker.url()
        )
        assert out.rc == 0 and f"for job {job.job}" in out.out, out
        return await watcher

    res = asyncio.run(scenario())
    text = "\n".join(notes)
    assert res.verdict == "ABORTED" and res.reason.endswith("by carol: real"), res.reason
    # With nothing running there is nothing to aim at: one line, exit code 2.
    idle = bench("lab", "estop", "bench-a", "--broker", lab.broker.url())
    assert idle.rc == 2 and idle.err.strip() == "error: bench bench-a runs no job (state: idle); name one with --job"
    assert "some-other-job" in text and "expired" in text and "names no job" in text, text
    assert "does not match its topic" in text, text


def test_watch_asks_for_no_replay_once_it_has_every_event(lab: Lab) -> None:
    lab.start_agent("bench-a")
    lab.wait_online(["bench-a"])
    op = lab.broker.broker()
    job = client.make_job(client.sequence_ref(str(SHORT)), {"hold": "2 s"}, {})
    events: list[int] = []

    replays: list[str] = []

    async def run() -> Result:
        async with mqtt_client(op, "replay-spy") as c:
            await c.subscribe("lab/control/#", qos=1)

            async def spy() -> None:
                async for msg in c.messages:
                    replays.append(msg.topic.value)

            task = asyncio.create_task(spy())
            await asyncio.sleep(0.3)

            def on(kind: str, obj: object) -> None:
                if kind == "event":
                    events.append(obj.seq)  # type: ignore[attr-defined]

            watcher = asyncio.create_task(client.watch(op, job.job, on, give_up_after=60))
            await asyncio.sleep(0.5)
            await client.submit(op, [job])
            res = await watcher
            await asyncio.sleep(1.5)
            task.cancel()
            return res

    res = asyncio.run(run())
    assert res.verdict == "PASS" and events == list(range(res.events)), (res, events)
    assert [t for t in replays if t.endswith("/replay")] == [], replays


PER_OPERATOR_ACL = Path(__file__).parent.parent / "examples" / "mosquitto" / "acl-per-operator"


def test_a_leased_bench_runs_only_its_holders_jobs_and_the_broker_authenticates_the_holder(
    lab: Lab, tmp_path: Path
) -> None:
    # The example ACL with one user per operator, plus the shared 'operator' user of the simple
    # ACL, which may name any holder: the agent must not take a holder from it.
    acl = tmp_path / "acl"
    acl.write_text(
        PER_OPERATOR_ACL.read_text()
        + "\nuser operator\ntopic readwrite lab/jobs/#\ntopic write lab/queue/#\n"
        + "topic write lab/control/#\ntopic read lab/#\n"
    )
    lab.broker.stop()
    lab.broker.acl = acl
    lab.broker.write_config()
    lab.broker.start()
    lab.start_agent("bench-a", realtime=True, lab_extra="  authenticated_holders: true\n")
    lab.wait_online(["bench-a"])
    op, alice, bob = (lab.broker.broker(u) for u in ("operator", "alice", "bob"))
    ref = client.sequence_ref(str(SHORT))
    aimed = client.make_job(ref, {"hold": "1 s"}, {}).model_copy(update={"bench": "bench-a", "submitter": "bob"})
    queued = client.make_job(ref, {"hold": "1 s"}, {}).model_copy(update={"submitter": "bob"})
    direct = client.make_job(ref, {"hold": "6 s"}, {}).model_copy(update={"submitter": "alice"})
    notes: list[str] = []
    results: dict[str, Result] = {}

    async def scenario() -> None:
        async with mqtt_client(op, "lease-auth-test") as c:
            await c.subscribe("lab/benches/bench-a/log", qos=1)
            await c.subscribe("lab/benches/bench-a/results/+", qos=1)
            await c.subscribe("lab/benches/bench-a/state", qos=1)
            await client.control(alice, "bench-a", client.make_control("acquire", "alice", ttl_s=120))
            await asyncio.sleep(0.5)
            # bob, without the lease: a job aimed at bench-a through the queue, and a plain queued job.
            await client.submit(bob, [aimed, queued], check=False)
            await asyncio.sleep(2.0)
            await client.submit(alice, [direct], bench="bench-a", check=False)
            aborted = False
            async with asyncio.timeout(90):
                async for msg in c.messages:
                    payload = bytes(msg.payload) if isinstance(msg.payload, bytes | bytearray) else b""
                    topic = msg.topic.value
                    if not payload:
                        continue
                    if topic.endswith("/log"):
                        notes.append(decode(LogEntry, payload).message)
                    elif topic.endswith("/state"):
                        st = decode(State, payload)
                        if st.job == direct.job and st.step == "hold" and not aborted:
                            aborted = True
                            # The shared operator user names alice on the old topic: refused by the agent.
                            old = {"op": "abort", "holder": "alice", "reason": "forged", "job": direct.job}
                            old["expires_utc"] = utc(time.time() + 60)
                            await c.publish("lab/control/bench-a/abort", json.dumps(old).encode(), qos=1)
                            # bob names alice in the topic: the broker refuses him.
                            forged = client.make_control("abort", "alice", reason="bob as alice", job=direct.job)
                            await client.control(bob, "bench-a", forged)
                    elif "/results/" in topic:
                        res = decode(Result, payload)
                        results[res.job] = res
                        if res.job == direct.job:
                            await client.control(alice, "bench-a", client.make_control("release", "alice"))
                        if res.job == queued.job:
                            return

    asyncio.run(scenario())
    text = "\n".join(notes)
    assert results[direct.job].verdict == "PASS", results[direct.job].reason
    assert results[queued.job].verdict == "PASS"  # it waited for the lease to go, then ran
    assert aimed.job not in results, results[aimed.job]
    assert f"refused job {aimed.job}" in text and "lab/control/bench-a/submit" in text, text
    assert "holder in its topic" in text, text
    assert "Denied PUBLISH from" in lab.broker.log.read_text()
    # The queued job ran only after alice's direct job: the lease kept the bench for her.
    assert results[queued.job].run_id > results[direct.job].run_id
