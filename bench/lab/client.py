"""The operator's side of the lab: submit jobs, see benches and jobs, watch a job live, control a bench."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import uuid6
from aiomqtt.exceptions import MqttConnectError
from pydantic import ValidationError

from bench.clock import utc
from bench.errors import BenchError, LoadError
from bench.lab import mqtt
from bench.lab.ledger import JobRecord
from bench.lab.protocol import (
    Caps,
    Claim,
    Control,
    Event,
    Job,
    LeaseInfo,
    Replay,
    Result,
    SequenceRef,
    State,
    Status,
    Topics,
    encode,
)
from bench.lab.router import Arrival, Router
from bench.lab.trust import LabKeys
from bench.plan import load_sequence


@dataclass
class BenchView:
    name: str
    status: Status | None = None
    caps: Caps | None = None
    state: State | None = None
    lease: LeaseInfo | None = None


# How long an operator's control message is valid: long enough for a slow link, short enough that
# a message held back somewhere does not stop a later run (docs/lab.md, Control messages).
CONTROL_VALID_S = 30.0


@dataclass
class Snapshot:
    benches: dict[str, BenchView] = field(default_factory=dict)
    jobs: dict[str, Job] = field(default_factory=dict)
    records: dict[str, JobRecord] = field(default_factory=dict)
    keys: LabKeys | None = None  # the lab's bench keys: results then count only when signed
    retained: int = 0  # how many retained messages the read took
    _routers: dict[str, Router[None]] = field(default_factory=dict, repr=False)  # by topic prefix

    def bench(self, name: str) -> BenchView:
        return self.benches.setdefault(name, BenchView(name))

    def record(self, job: str) -> JobRecord:
        if job not in self.records:
            self.records[job] = JobRecord(online=self.is_online)
        return self.records[job]

    def is_online(self, bench: str) -> bool:
        bv = self.benches.get(bench)
        return bool(bv is not None and bv.status is not None and bv.status.online)

    @property
    def results(self) -> dict[str, Result]:
        """The results that count (bench/lab/ledger.py): from the bench holding the job's claim."""
        out = {jid: rec.result() for jid, rec in self.records.items()}
        return {jid: res for jid, res in out.items() if res is not None}

    def online(self) -> list[BenchView]:
        return [b for b in self.benches.values() if b.status is not None and b.status.online]

    def apply(self, t: Topics, topic: str, payload: bytes) -> None:
        """One retained message of the lab. Somebody else's garbage is not ours to report here:
        a message the router refuses is left out."""
        router = self._routers.get(t.p)
        if router is None:
            router = self._routers[t.p] = self._routes(t)
        router.dispatch(topic, payload, retained=True, history=True)

    def _routes(self, t: Topics) -> Router[None]:
        r: Router[None] = Router()
        r.on(t.job("{job}"), Job, self._on_job)
        # A bench's retained leaves, each kept in the field of its BenchView of the same name.
        r.on(t.bench("{bench}", "status"), Status, lambda msg, at: setattr(self.bench(msg.bench), "status", msg))
        r.on(t.bench("{bench}", "caps"), Caps, lambda msg, at: setattr(self.bench(msg.bench), "caps", msg))
        r.on(t.bench("{bench}", "state"), State, lambda msg, at: setattr(self.bench(msg.bench), "state", msg))
        r.on(t.bench("{bench}", "lease"), LeaseInfo, lambda msg, at: setattr(self.bench(msg.bench), "lease", msg))
        r.on(t.claim("{bench}", "{job}"), Claim, lambda cl, at: self.record(cl.job).add_claim(cl, retained=True))
        r.on(t.result("{bench}", "{job}"), Result, self._on_result)
        return r

    def _on_result(self, res: Result, at: Arrival) -> None:
        self.record(res.job).add_result(res, self.keys)  # one that does not count is kept with why

    def _on_job(self, job: Job, at: Arrival) -> None:
        self.jobs[job.job] = self.record(job.job).job = job


def _client_id(kind: str) -> str:
    return f"bench-{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@contextlib.asynccontextmanager
async def _connected_once(broker: mqtt.Broker, kind: str, **kw: object):  # type: ignore[no-untyped-def]
    entered = False
    try:
        async with mqtt.client(broker, kw.pop("identifier", None) or _client_id(kind), **kw) as c:  # type: ignore[arg-type]
            entered = True
            yield c
    except MqttConnectError as exc:
        raise mqtt.connect_error(broker, exc) from None
    except aiomqtt.MqttError as exc:
        # Failing before the session was up (a TLS handshake the broker rejected times out) is a
        # failure to connect, whatever paho's words for it.
        if not entered:
            raise _Unreachable(mqtt.connect_error(broker, exc)) from None
        if any(w in str(exc).lower() for w in ("connect", "refused", "errno")):
            raise mqtt.connect_error(broker, exc) from None
        raise mqtt.BrokerError(f"broker {broker.where}: {exc}") from None


class _Unreachable(Exception):
    """No session came up (no broker listening, no route, a timeout): worth trying again."""

    def __init__(self, error: mqtt.BrokerError) -> None:
        super().__init__(str(error))
        self.error = error


# Waits between connection attempts while the broker is away (a restart, an outage).
RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0)


@contextlib.asynccontextmanager
async def connected(  # type: ignore[no-untyped-def]
    broker: mqtt.Broker,
    kind: str,
    *,
    retry_for: float = 0.0,
    on_retry: Callable[[str], None] | None = None,
    **kw: object,
):
    """A client session; while the broker cannot be reached, try again for ``retry_for`` seconds.

    A broker that answers and refuses the credentials is not tried again: one line at once (a
    rejected TLS handshake looks like an absent broker and is tried again). Each retry is told
    through ``on_retry``; giving up is one line (exit code 3).
    """
    give_up = time.monotonic() + retry_for
    tries = 0
    while True:
        stack = contextlib.AsyncExitStack()
        try:
            c = await stack.enter_async_context(_connected_once(broker, kind, **dict(kw)))
            break
        except _Unreachable as exc:
            delay = RETRY_DELAYS_S[min(tries, len(RETRY_DELAYS_S) - 1)]
            left = give_up - time.monotonic()
            if left < delay:
                if retry_for > 0:
                    raise mqtt.BrokerError(f"{exc.error} (gave up after {retry_for:g} s)") from None
                raise exc.error from None
            tries += 1
            if on_retry is not None:
                on_retry(f"{exc.error}; trying again for {left:.0f} s")
            await asyncio.sleep(delay)
    async with stack:
        yield c


class IncompleteRead(BenchError):
    """The lab's retained state could not be read completely: nothing is answered from part of it."""

    exit_code = 3


# How long a read of the lab's retained state may take before it is given up as incomplete. A
# history of 10,000 jobs (30,000 messages) took 5-15 s on a loaded 2-core machine (docs/lab.md,
# "Capacity").
READ_LIMIT_S = 60.0
# mosquitto queues at most max_inflight_messages + max_queued_messages messages per client and
# drops the rest silently, the retained messages sent on a subscription included; the barrier's
# marker, published later, still arrives. A read that reaches this many retained messages may have
# lost some, so it is refused. It is the max_queued_messages of examples/mosquitto/mosquitto.conf;
# BENCH_BROKER_MAX_QUEUED tells the value of another broker.
DEFAULT_BROKER_MAX_QUEUED = 100_000


def broker_max_queued() -> int:
    raw = os.environ.get("BENCH_BROKER_MAX_QUEUED", "")
    try:
        return int(raw) if raw else DEFAULT_BROKER_MAX_QUEUED
    except ValueError:
        raise LoadError(
            f"BENCH_BROKER_MAX_QUEUED={raw}: expected the broker's max_queued_messages (a number)"
        ) from None


async def snapshot(
    broker: mqtt.Broker,
    limit: float = READ_LIMIT_S,
    keys: LabKeys | None = None,
    *,
    connect_timeout: float = 0.0,
    on_retry: Callable[[str], None] | None = None,
    max_queued: int | None = None,
    history: bool = True,
) -> Snapshot:
    """The complete retained state of the lab, or ``IncompleteRead``.

    The read ends at the barrier's marker (bench/lab/mqtt.py ``start_barrier``), which the broker
    sends behind every retained message of the subscriptions; a quiet period would prove nothing
    while a long history is still coming. No marker within ``limit`` seconds, or so many messages
    that the broker's queue may have dropped some, is an incomplete read. Without ``history`` only
    the benches are read (status, capabilities, state, lease): what a submit checks, at a cost
    that does not grow with the number of jobs.
    """
    t = Topics(broker.prefix)
    snap = Snapshot(keys=keys)
    cap = broker_max_queued() if max_queued is None else max_queued
    retained = 0
    # Only the retained topics (a bench's events and log would be read for nothing), in one
    # SUBSCRIBE. QoS 0: the retained messages then stream without waiting for an acknowledgement
    # every 20 messages (mosquitto's max_inflight_messages), in the same order, the marker last.
    leaves = ["status", "caps", "state", "lease"] + (["claims/+", "results/+"] if history else [])
    topics = [(t.bench("+", leaf), 0) for leaf in leaves] + ([(f"{t.p}/jobs/+", 0)] if history else [])
    # The barrier's own publish is acknowledged only behind the retained messages: the client's
    # timeout for one operation must not end the read before ``limit`` does.
    async with connected(
        broker, "status", retry_for=connect_timeout, on_retry=on_retry, timeout=limit + 10, connect_timeout=10.0
    ) as c:
        try:
            async with asyncio.timeout(limit):
                await c.subscribe(topics)
                token = await mqtt.start_barrier(c, t.p)
                marker = mqtt.sync_topic(t.p, c.identifier)
                async for msg in c.messages:
                    if msg.topic.value == marker:
                        if _bytes(msg.payload) == token:
                            break
                        continue
                    retained += bool(msg.retain)
                    snap.apply(t, msg.topic.value, _bytes(msg.payload))
        except TimeoutError:
            raise IncompleteRead(
                f"the lab's state at {broker.where} was not read completely within {limit:g} s "
                f"({retained} retained messages so far); nothing is shown from part of it"
            ) from None
    if retained >= cap:
        raise IncompleteRead(
            f"the lab's state at {broker.where} has {retained} retained messages, as many as the broker "
            f"queues for one client (max_queued_messages {cap}): some may have been dropped. Archive "
            "finished jobs (bench lab archive) or raise max_queued_messages and BENCH_BROKER_MAX_QUEUED"
        )
    snap.retained = retained
    return snap


def _bytes(payload: object) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return str(payload or "").encode()


def sequence_ref(spec: str) -> SequenceRef:
    """A sequence file (its id and SHA-256 are read here) or ``ID@SHA256``."""
    path = Path(spec)
    if path.is_file():
        src, model = load_sequence(path)
        return SequenceRef(id=model.id, sha256=src.sha256)
    sid, sep, sha = spec.partition("@")
    if not sep:
        raise LoadError(f"{spec}: no such sequence file (or give ID@SHA256)")
    try:
        return SequenceRef(id=sid, sha256=sha)
    except ValueError:
        raise LoadError(f"{spec}: expected ID@SHA256 with a 64-digit lower-case hex SHA-256") from None


def who() -> str:
    return os.environ.get("BENCH_OPERATOR") or os.environ.get("USER") or "operator"


def make_job(ref: SequenceRef, params: dict[str, str], require: dict[str, str], seed: int = 1) -> Job:
    return Job(
        job=str(uuid6.uuid7()),
        sequence=ref,
        params=params,
        require=require,
        seed=seed,
        submitter=who(),
        submitted_utc=utc(time.time()),
    )


def check_runnable(snap: Snapshot, job: Job) -> None:
    """Refuse at once a job no online bench could ever take (one line, exit code 2)."""
    online = [b for b in snap.online() if b.caps is not None]
    if not online:
        raise LoadError("no bench is online (bench lab status shows the lab)")
    with_seq = [b for b in online if b.caps and job.sequence.sha256 in b.caps.sequences.get(job.sequence.id, [])]
    if not with_seq:
        raise LoadError(
            f"unknown sequence {job.sequence.id} sha256 {job.sequence.sha256}: "
            "no online bench has it in its library (a job names a sequence from the bench's own library)"
        )
    for b in with_seq:
        caps = b.caps
        assert caps is not None
        if all(_has(caps, k, v) for k, v in job.require.items()):
            return
    req = ", ".join(f"{k}={v}" for k, v in job.require.items())
    raise LoadError(f"no online bench with sequence {job.sequence.id} matches --require {req}")


def _has(caps: Caps, key: str, want: str) -> bool:
    values = {
        "station": [caps.station],
        "bench": [caps.bench],
        "dut": [caps.dut],
        "device": caps.devices,
        "simulated": [str(caps.simulated).lower()],
    }.get(key, [caps.extra[key]] if key in caps.extra else [])
    return want in values


async def submit(
    broker: mqtt.Broker,
    jobs: list[Job],
    *,
    check: bool = True,
    bench: str | None = None,
    connect_timeout: float = 0.0,
    on_retry: Callable[[str], None] | None = None,
) -> list[str]:
    """Queue jobs (retained record + shared-subscription wake-up), or send them to one leased bench.

    While the broker cannot be reached, connecting is tried again for ``connect_timeout`` seconds.
    """
    t = Topics(broker.prefix)
    if check:
        snap = await snapshot(broker, connect_timeout=connect_timeout, on_retry=on_retry, history=False)
        for job in jobs:
            check_runnable(snap, job)
    async with connected(broker, "submit", retry_for=connect_timeout, on_retry=on_retry) as c:
        for job in jobs:
            if bench is not None:
                await c.publish(t.control(bench, "submit", job.submitter or None), encode(job), qos=1)
            else:
                await c.publish(t.job(job.job), encode(job), qos=1, retain=True)
                await c.publish(t.queue(job.job), encode(job), qos=1)
    return [j.job for j in jobs]


def make_control(
    op: str,
    holder: str,
    *,
    reason: str = "",
    ttl_s: float = 30.0,
    job: str | None = None,
    run_id: str | None = None,
    valid_for: float = CONTROL_VALID_S,
) -> Control:
    """A control message valid for ``valid_for`` seconds; a stop names the job or run it stops."""
    try:
        return Control(
            op=op,  # type: ignore[arg-type]
            holder=holder,
            reason=reason,
            ttl_s=ttl_s,
            job=job,
            run_id=run_id,
            expires_utc=utc(time.time() + valid_for),
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        value = {"holder": holder, "job": job, "run_id": run_id, "ttl_s": ttl_s}.get(where, "")
        raise LoadError(f"{op}: {where} {value!r}: {err['msg']}") from None


async def control(broker: mqtt.Broker, bench: str, ctl: Control) -> None:
    """Publish a control message (never retained) on ``<prefix>/control/<bench>/<op>/<holder>``."""
    t = Topics(broker.prefix)
    async with connected(broker, "control") as c:
        await c.publish(t.control(bench, ctl.op, ctl.holder or None), encode(ctl), qos=1)


class _Stream:
    """The events of one run, delivered once and in order, whatever order and repeats they come in."""

    def __init__(self, deliver: Callable[[Event], None]) -> None:
        self.deliver = deliver
        self.next = 0
        self.pending: dict[int, Event] = {}
        self.asked_at = -1.0

    def add(self, ev: Event) -> None:
        if ev.seq < self.next:
            return  # a duplicate: sent again after a reconnect, or replayed
        self.pending[ev.seq] = ev
        while self.next in self.pending:
            self.deliver(self.pending.pop(self.next))
            self.next += 1

    def gap(self) -> bool:
        return bool(self.pending)


async def watch(
    broker: mqtt.Broker,
    job: str,
    on_event: Callable[[str, object], None],
    *,
    give_up_after: float | None = None,
    identifier: str | None = None,
    keys: LabKeys | None = None,
) -> Result:
    """Follow one job to its result: claims, state (progress) and every event once, in order.

    Events carry a sequence number per run. A gap (events published while this watcher was cut
    off, or before it subscribed) is filled by asking the bench to send them again
    (``lab/control/<bench>/replay``); repeats are dropped. The result says how many events the
    run had, so the watcher returns only once it has all of them. The session is also persistent
    (MQTT 5 session expiry), so a short cut of this watcher alone loses nothing at the broker.

    Only the result of the bench that holds the job's claim counts, and with ``keys`` only when
    signed by that bench (bench/lab/ledger.py); any other is shown as ignored and waited past.
    """
    t = Topics(broker.prefix)
    ident = identifier or _client_id("watch")
    streams: dict[str, _Stream] = {}
    where: dict[str, str] = {}  # run id -> bench
    online: dict[str, bool] = {}
    record = JobRecord(online=lambda b: online.get(b, False))
    result: Result | None = None
    shown_ignored: set[tuple[str, int]] = set()
    first = True
    deadline = None if give_up_after is None else time.monotonic() + give_up_after

    def stream(run_id: str) -> _Stream:
        if run_id not in streams:
            streams[run_id] = _Stream(lambda ev: on_event("event", ev))
        return streams[run_id]

    def missing(run_id: str) -> bool:
        """Events of this run are known to be missing: a gap, or fewer than its result counts."""
        st = stream(run_id)
        return st.gap() or (result is not None and result.run_id == run_id and st.next < result.events)

    async def ask(c: aiomqtt.Client, run_id: str) -> None:
        st = stream(run_id)
        now = time.monotonic()
        if run_id in where and now - st.asked_at > 0.5:
            st.asked_at = now
            rp = Replay(run_id=run_id, from_seq=st.next)
            await c.publish(t.control(where[run_id], "replay"), encode(rp), qos=1)

    async def settle(c: aiomqtt.Client) -> None:
        """Take the result that counts, once there is one; say which results do not count."""
        nonlocal result
        for res in record.ignored_results():
            if (res.bench, res.attempt) not in shown_ignored:
                shown_ignored.add((res.bench, res.attempt))
                on_event("ignored", res)
        if result is None:
            result = record.result()
            if result is not None and result.run_id:
                where[result.run_id] = result.bench
                if missing(result.run_id):
                    await ask(c, result.run_id)

    def complete() -> bool:
        return result is not None and (not result.run_id or stream(result.run_id).next >= result.events)

    def routes(c: aiomqtt.Client) -> Router[Coroutine[Any, Any, None]]:
        """What each message of the job means to the watcher (bench/lab/router.py): a message that
        is malformed, or names another bench or job than its topic, is passed over."""

        async def on_job(j: Job, at: Arrival) -> None:
            record.job = j
            await settle(c)

        async def on_status(st: Status, at: Arrival) -> None:
            online[st.bench] = st.online
            await settle(c)

        async def on_claim(claim: Claim, at: Arrival) -> None:
            record.add_claim(claim, retained=at.retained)
            on_event("claim", claim)
            await settle(c)

        async def on_withdrawn(at: Arrival) -> None:
            record.withdraw(at["bench"])

        async def on_result(res: Result, at: Arrival) -> None:
            why = record.add_result(res, keys)
            if why is not None:
                on_event("ignored", res.model_copy(update={"reason": why}))
            await settle(c)

        async def on_state(state: State, at: Arrival) -> None:
            if state.job == job:
                if state.run_id:
                    where[state.run_id] = state.bench
                on_event("state", state)

        async def on_run_event(ev: Event, at: Arrival) -> None:
            if ev.job != job:
                return
            where[ev.run_id] = ev.bench
            st = stream(ev.run_id)
            st.add(ev)
            if st.gap():
                await ask(c, ev.run_id)

        r: Router[Coroutine[Any, Any, None]] = Router()
        r.on(t.job(job), Job, on_job)
        r.on(t.bench("{bench}", "status"), Status, on_status)
        r.on(t.claim("{bench}", job), Claim, on_claim, cleared=on_withdrawn)
        r.on(t.result("{bench}", job), Result, on_result)
        r.on(t.bench("{bench}", "state"), State, on_state)
        r.on(t.bench("{bench}", "events"), Event, on_run_event)
        return r

    while True:
        try:
            async with connected(broker, "watch", identifier=ident, clean_start=first, session_expiry_s=600) as c:
                router = routes(c)
                # Subscribe on every connection: a broker restarted without our session would have none.
                for route in router.routes:
                    await c.subscribe(route.filter, qos=1)
                if not first:
                    for run_id in list(where):
                        if result is None or missing(run_id):
                            await ask(c, run_id)  # whatever was sent while we were away
                first = False
                while not complete():
                    if deadline is not None and time.monotonic() > deadline:
                        raise BenchError(f"job {job}: no result within {give_up_after:g} s")
                    try:
                        async with asyncio.timeout(0.5):
                            msg = await anext(aiter(c.messages))
                    except TimeoutError:
                        for run_id in list(streams):
                            if missing(run_id):
                                await ask(c, run_id)
                        continue
                    pending = router.dispatch(msg.topic.value, _bytes(msg.payload), retained=bool(msg.retain))
                    if pending is not None:
                        await pending
                on_event("result", result)
                assert result is not None
                return result
        except mqtt.BrokerError:
            if first:
                raise
            await asyncio.sleep(0.5)  # the broker went away: keep trying
        if deadline is not None and time.monotonic() > deadline:
            raise BenchError(f"job {job}: no result within {give_up_after:g} s")
