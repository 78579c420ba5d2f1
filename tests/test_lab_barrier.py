"""The retained-state barrier: its marker comes back only after every retained message.

A read of the lab's retained state that stops on a quiet period answers from part of it when the
history is long (bench lab status listed 5 of 7,000 jobs). The marker of
bench/lab/mqtt.py start_barrier is what a complete read waits for.
"""

from __future__ import annotations

import asyncio

from bench.lab import mqtt
from tests.labkit import Mosquitto, mosquitto_fixture  # noqa: F401  (fixtures)

RETAINED = 10_000


def test_barrier_comes_after_every_retained_message(mosquitto: Mosquitto) -> None:
    broker = mosquitto.broker("operator")

    async def scenario() -> tuple[int, int]:
        # Generous operation timeouts: 10,000 QoS 1 publishes and their acknowledgements queue up
        # on a loaded machine, and the barrier's own publish is acknowledged behind every retained
        # message (as in bench/lab/client.py snapshot).
        async with mqtt.client(broker, "barrier-writer", timeout=120) as w:
            await asyncio.gather(*(w.publish(f"lab/jobs/j{i:05d}", b"{}", qos=1, retain=True) for i in range(RETAINED)))
        async with mqtt.client(broker, "barrier-reader", timeout=120) as c:
            await c.subscribe("lab/jobs/+", qos=1)
            token = await mqtt.start_barrier(c, broker.prefix)
            seen = 0
            async with asyncio.timeout(120):
                async for msg in c.messages:
                    if msg.topic.value == mqtt.sync_topic(broker.prefix, c.identifier):
                        assert msg.payload == token
                        return seen, RETAINED
                    seen += 1
        raise AssertionError("no marker")

    seen, expected = asyncio.run(scenario())
    assert seen == expected


def test_another_client_cannot_use_my_barrier_topic(mosquitto: Mosquitto) -> None:
    """The ACL gives each client only its own barrier topic, so no one can end another's read early."""
    broker = mosquitto.broker("bench-a")

    async def scenario() -> list[bytes]:
        got: list[bytes] = []
        async with mqtt.client(broker, "reader-1") as c, mqtt.client(broker, "intruder") as x:
            await c.subscribe(mqtt.sync_topic(broker.prefix, "reader-1"), qos=1)
            await x.publish(mqtt.sync_topic(broker.prefix, "reader-1"), b"forged", qos=1)
            token = await mqtt.start_barrier(c, broker.prefix)
            async with asyncio.timeout(10):
                async for msg in c.messages:
                    got.append(msg.payload if isinstance(msg.payload, bytes) else b"")
                    if msg.payload == token:
                        return got
        return got

    assert asyncio.run(scenario())[0] != b"forged"
