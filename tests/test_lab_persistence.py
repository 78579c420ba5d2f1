"""A broker crash (SIGKILL) with the documented persistence loses nothing that was older than its
autosave interval: job records, claims, results, bench status.

With mosquitto's old example setting (autosave every 30 s) a crash lost all retained state. The
example config and the tests' broker now save every second (examples/mosquitto/mosquitto.conf).
"""

from __future__ import annotations

import asyncio
import time

from bench.lab import client
from bench.lab.protocol import Result, decode
from tests.labkit import SHORT, Lab, lab_fixture, mosquitto_fixture, retained  # noqa: F401  (fixtures)

# mosquitto saves when more than autosave_interval (1 s) whole seconds have passed: within ~2 s.
SAVED_WITHIN_S = 2.5


def test_a_broker_killed_after_submits_and_results_loses_nothing(lab: Lab) -> None:
    lab.start_agent("bench-a")
    lab.wait_online(["bench-a"])
    op = lab.broker.broker()
    ref = client.sequence_ref(str(SHORT))
    done = [client.make_job(ref, {"hold": "1 s"}, {}) for _ in range(3)]
    asyncio.run(client.submit(op, done))
    for job in done:
        asyncio.run(client.watch(op, job.job, lambda k, o: None, give_up_after=60))
    lab.stop_all()  # nothing runs or changes any more: what is retained now must survive
    queued = [client.make_job(ref, {"hold": "1 s"}, {}) for _ in range(2)]
    asyncio.run(client.submit(op, queued, check=False))

    topics = ["lab/jobs/+", "lab/benches/+/claims/+", "lab/benches/+/results/+", "lab/benches/+/status"]
    before = asyncio.run(retained(op, topics))
    assert len([t for t in before if t.startswith("lab/jobs/")]) == 5
    assert len([t for t in before if "/results/" in t]) == 3

    time.sleep(SAVED_WITHIN_S)
    lab.broker.kill()
    lab.broker.start()
    after = asyncio.run(retained(op, topics))
    assert after == before, sorted(set(before) ^ set(after))
    results = [decode(Result, p) for t, p in after.items() if "/results/" in t]
    assert {r.job for r in results} == {j.job for j in done} and all(r.verdict == "PASS" for r in results)
