"""``bench agent``: one bench online in a lab, taking jobs from the broker and streaming its runs.

How a job is taken exactly once, without a coordinator (docs/lab.md has the full story):

* The submitter publishes the job twice: a retained record ``lab/jobs/<job>`` (the durable
  queue entry every bench sees) and a wake-up ``lab/queue/<job>`` that the broker hands to ONE
  member of the MQTT 5 shared subscription ``$share/benches/lab/queue/+``.
* A bench that is idle and matches claims the job by publishing ``lab/benches/<me>/claims/<job>``
  (retained, QoS 1, under its own topic as the ACL demands) with an attempt number. The broker
  forwards all publishes in one order to every subscriber, so every bench sees the same FIRST
  claim of an attempt; that bench wins and runs, the others drop their claim. The claim is the
  acknowledgement the submitter and ``bench lab watch`` see.
* The bench that got the wake-up claims at once; every other bench claims a job only when it is
  still unclaimed after ``claim_grace`` s plus its turn (``STAGGER_S`` apart, in an order drawn
  from the job id), so a busy or unmatching receiver does not strand the job and claims stay
  about one per job however many benches there are.
* A bench that dies leaves its will: ``lab/benches/<it>/status`` = offline (retained), delayed by
  the grace (MQTT 5 will delay: a bench back within it never looks dead). When it stays offline
  for ``requeue_grace`` s *while this bench is connected*, its unfinished job's next attempt is
  open and the benches claim it the same way. A broker that stops sends every will at once: each
  bench counts the grace again from its own reconnection.
* A bench that restarted finds its own open claims once the history is read, marks each
  interrupted run ABANDONED (naming its unsealed run folder), which opens the job's next attempt.
* The retained history (job records, claims, results) is read on a second connection up to a
  barrier marker (bench/lab/mqtt.py start_barrier), while the main one takes new jobs at once; the
  open jobs are kept in an index, so no message costs a scan of the whole history.

Runs happen in a worker thread on their own (virtual-time) loop (bench/runner.py); record events
come back with ``call_soon_threadsafe`` and go out through an in-order outbox that keeps every
message until the broker acknowledged it (PUBACK), across broker outages.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import signal
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bench.clock import epoch_of, utc
from bench.console import EXIT_CODES, run_exit_code
from bench.errors import BenchError, LoadError
from bench.events import EventKind
from bench.interlock import Interlock
from bench.lab import mqtt
from bench.lab.leases import LeaseRefused, LeaseTable
from bench.lab.ledger import ABANDONED, JobRecord
from bench.lab.protocol import (
    MAX_CONTROL_VALID_S,
    MAX_MESSAGE_BYTES,
    Caps,
    Claim,
    Control,
    Event,
    Job,
    LeaseInfo,
    LogEntry,
    ProtocolError,
    Replay,
    Result,
    State,
    Status,
    Topics,
    encode,
)
from bench.lab.router import Arrival, Router
from bench.lab.trust import LabKeys, sign_result
from bench.plan import build_plan, load_sequence
from bench.record.signing import load_key
from bench.result import Verdict
from bench.results.rows import RunTags
from bench.runner import Started, new_run_id, run_plan
from bench.station import LoadedStation, load_station

log = logging.getLogger("bench.lab.agent")

OUTBOX_WINDOW = 64  # QoS 1 publishes in flight at once; order on the wire is the call order
CLAIM_LOST_S = 10.0  # a claim sent and acknowledged comes back within milliseconds; after this it is lost
KEEP_RUNS = 8  # runs whose events a watcher can ask for again (they are also in each run's events.jsonl)
# Between two benches' turns to claim a job nobody claimed yet: longer than a claim takes to go
# round the broker, so the first bench's claim is seen before the next bench's turn.
STAGGER_S = 0.2
# A bench that becomes idle with a backlog claims one of the oldest CLAIM_WINDOW ready jobs, not
# always the oldest: two benches freed at once then collide on one job in about 1 of 4 cases
# instead of every time. Jobs still start close to the order they were made.
CLAIM_WINDOW = 4
RECONNECT_S = 0.5  # short: after a broker restart every bench must be back well within the grace
# An attempt to connect made while the network is cut would otherwise hang for 10 s (well beyond
# the grace) even when the cut lasts 2 s; a short one fails, and the next attempt gets through.
CONNECT_S = 2.0


class LabSettings(BaseModel):
    """The ``lab:`` section of a station file."""

    model_config = ConfigDict(extra="forbid")
    library: list[str] = Field(
        [], description="folders or files of sequences this bench runs (relative paths: to the station file)"
    )
    dut: str = Field("", description="DUT type offered to jobs (--require dut=...)")
    capabilities: dict[str, str] = Field({}, description="further capabilities jobs can require")
    allow_sequence_text: bool = Field(False, description="accept sequence YAML sent in a job (default: library only)")
    max_message_bytes: int = Field(MAX_MESSAGE_BYTES, ge=1024, le=16 * 1024 * 1024)
    authenticated_holders: bool = Field(
        False,
        description="take a lease holder only from the control topic's last level, which per-operator "
        "broker users and their ACL authenticate (examples/mosquitto/acl-per-operator)",
    )


@dataclass
class JobView(JobRecord):
    """What this bench knows of one job, from the retained records and the live claims."""

    attempt: int = 1  # the open attempt; a new one opens when the winner of this one dies
    refused: str | None = None  # why this bench will not take it (logged once)
    # The lease holder who sent it to this bench (lab/control/<me>/submit); None: from the queue.
    direct_by: str | None = None
    ignored: set[str] = field(default_factory=set)  # benches whose result was refused (logged once)
    # Everything about the job is known: its record came live (so did all its claims), or the
    # history has been read. Only then may this bench claim it.
    complete: bool = False
    eligible_at: float = math.inf  # this bench's turn to claim it (monotonic time)
    seen: int = 0  # the connection in which its record was last seen; gone since: archived


M = TypeVar("M", bound=BaseModel)
# The routes of the retained history (job records, claims, results): read again on each connection.
HISTORY = "history"


def lab_settings(station: LoadedStation) -> LabSettings:
    """The station's ``lab:`` section, checked; a bad one is one line naming the station file and field."""
    try:
        return LabSettings.model_validate(station.model.lab)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise LoadError(
            err["msg"], station.path, station.source.line(["lab"]), "lab." + ".".join(map(str, err["loc"]))
        ) from None


def library_paths(station: LoadedStation, settings: LabSettings) -> list[Path]:
    """The folders and files of the station's library (``lab.library``, relative to the station file)."""
    return [station.base_dir / p for p in settings.library]


def scan_library(paths: list[Path]) -> dict[tuple[str, str], Path]:
    """(sequence id, SHA-256 of the file) -> file, for every sequence file that loads."""
    out: dict[tuple[str, str], Path] = {}
    for base in paths:
        files = sorted(base.rglob("*.yaml")) if base.is_dir() else [base]
        for f in files:
            try:
                src, model = load_sequence(f)
            except (BenchError, OSError):
                continue  # not a sequence (a station, answers ...) or broken: not offered
            out[(model.id, src.sha256)] = f.resolve()
    return out


class Agent:
    def __init__(
        self,
        station_path: Path,
        broker: mqtt.Broker,
        *,
        bench_id: str | None = None,
        library: list[Path] | None = None,
        reports: Path = Path("reports"),
        requeue_grace: float = 3.0,
        claim_grace: float = 0.5,
        lab_keys: LabKeys | None = None,
    ) -> None:
        self.station_path = station_path
        station = load_station(station_path)
        self.settings = lab_settings(station)
        self.station = station
        self.bench = bench_id or station.model.id
        # The station key signs this bench's results as it signs its records; a lab that lists
        # its benches' keys (lab_keys) counts no result without it, so a bench missing from that
        # list, or holding another key, is refused here rather than running jobs that never count.
        self.key = load_key()
        self.lab_keys = lab_keys
        if lab_keys is not None:
            listed = lab_keys.get(self.bench)
            if self.key is None:
                raise LoadError(
                    f"the lab requires signed results but bench {self.bench} has no station key (bench keys init)"
                )
            if listed != self.key.public_b64:
                raise LoadError(
                    f"the lab's keys list {'another key' if listed else 'no key'} for bench {self.bench} "
                    f"(its station key is {self.key.fingerprint})"
                )
        self.broker = broker
        self.t = Topics(broker.prefix)
        self.reports = reports
        self.requeue_grace = requeue_grace
        self.claim_grace = claim_grace
        paths = library_paths(station, self.settings) + list(library or [])
        self.library = scan_library(paths)
        self._caps = self._build_caps()
        self.interlock = Interlock(station.model.id)
        self.jobs: dict[str, JobView] = {}
        self.open: set[str] = set()  # jobs with a record and no result that counts: the claim scan
        self.online: dict[str, bool] = {}
        # Benches seen offline while this bench was connected, since when (monotonic): the grace
        # counts only while we can see them come back.
        self.offline_since: dict[str, float] = {}
        self.synced = False  # the retained history of this connection has been read
        self._conn = 0  # connections so far
        self._live_topics: set[str] = set()  # topics that came live while the history was read
        self._connect_t = 0.0
        # The run in progress, on disk: a restarted agent names the unsealed folder of the run it abandoned.
        self.journal = reports / ".lab" / f"{self.bench}.json"
        self.interrupted = self._read_journal()
        self.claiming: tuple[str, int] | None = None
        self._claimed_at = 0.0
        self.running: str | None = None
        self.started: Started | None = None
        self.state = State(bench=self.bench, state="tripped" if self.interlock.state() else "idle")
        self.leases = LeaseTable(time.monotonic)
        self._lease_published: str | None = None
        self.outbox: deque[tuple[str, bytes, bool]] = deque()
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()  # set while the outbox is empty
        self._drained.set()
        self._stop = asyncio.Event()
        self._run_task: asyncio.Task[None] | None = None
        # A stop that named the job while it was being prepared (no run to call yet).
        self._pending_stop: Callable[[Started], None] | None = None
        # The events of the last runs as sent, by run id, for watchers that missed some (replay).
        self.sent: dict[str, list[bytes]] = {}
        self.connected = False
        self._text_dir = Path(tempfile.mkdtemp(prefix=f"bench-lab-{self.bench}-"))
        self.router = self._routes()

    def _view(self, job: str) -> JobView:
        if job not in self.jobs:
            self.jobs[job] = JobView(online=self._is_online)
        return self.jobs[job]

    def _is_online(self, bench: str) -> bool:
        return bench == self.bench or self.online.get(bench, False)

    # -- what this bench offers ---------------------------------------------------------------
    def caps(self) -> Caps:
        return self._caps

    def _build_caps(self) -> Caps:
        seqs: dict[str, list[str]] = {}
        for sid, sha in sorted(self.library):
            seqs.setdefault(sid, []).append(sha)
        m = self.station.model
        return Caps(
            bench=self.bench,
            station=m.id,
            devices=sorted(m.devices),
            dut=self.settings.dut,
            simulated=m.simulated,
            extra=self.settings.capabilities,
            sequences=seqs,
            allow_sequence_text=self.settings.allow_sequence_text,
        )

    def matches(self, job: Job) -> str | None:
        """None if this bench can run the job, else why not (one line)."""
        if job.bench is not None and job.bench != self.bench:
            return f"job is for bench {job.bench}"
        caps = self.caps()
        for key, want in job.require.items():
            have: list[str]
            if key == "station":
                have = [caps.station]
            elif key == "bench":
                have = [self.bench]
            elif key == "dut":
                have = [caps.dut]
            elif key == "device":
                have = caps.devices
            elif key == "simulated":
                have = [str(caps.simulated).lower()]
            else:
                have = [caps.extra[key]] if key in caps.extra else []
            if want not in have:
                return f"requires {key}={want}, this bench has {', '.join(have) or 'none'}"
        if job.sequence_text is not None:
            if not self.settings.allow_sequence_text:
                return "sequence text from the network is refused (station lab.allow_sequence_text is false)"
            if hashlib.sha256(job.sequence_text.encode()).hexdigest() != job.sequence.sha256:
                return "sequence text does not match its sha256"
            return None
        if (job.sequence.id, job.sequence.sha256) not in self.library:
            return (
                f"unknown sequence {job.sequence.id} sha256 {job.sequence.sha256[:12]}… (not in this bench's library)"
            )
        return None

    # -- outgoing -----------------------------------------------------------------------------
    def send(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Queue a QoS 1 message; it leaves in order and stays queued until the broker acknowledged it."""
        self.outbox.append((topic, payload, retain))
        self._drained.clear()
        self._wake.set()

    def note(self, level: str, message: str, topic: str = "", job: str | None = None) -> None:
        getattr(log, level)("%s: %s", self.bench, message)
        entry = LogEntry(bench=self.bench, level=level, message=message[:1000], topic=topic[:256], job=job)  # type: ignore[arg-type]
        self.send(self.t.bench(self.bench, "log"), encode(entry))

    def publish_state(self) -> None:
        self.send(self.t.bench(self.bench, "state"), self._state_message(), retain=True)

    def _state_message(self) -> bytes:
        """The state as published now: stamped with the wall clock, so that the state an offline
        bench left behind shows how old it is (``bench lab status``)."""
        return encode(self.state.model_copy(update={"published_utc": utc(time.time())}))

    def publish_lease(self) -> None:
        cur = self.leases.current()
        info = LeaseInfo(bench=self.bench)
        if cur is not None:
            info = LeaseInfo(
                bench=self.bench,
                holder=cur.holder,
                expires_utc=utc(time.time() + self.leases.remaining()),
                ttl_s=cur.ttl,
            )
        self._lease_published = cur.holder if cur else None
        self.send(self.t.bench(self.bench, "lease"), encode(info), retain=True)

    async def _publisher(self, c: aiomqtt.Client) -> None:
        while True:
            if not self.outbox:
                self._drained.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self.outbox[i] for i in range(min(OUTBOX_WINDOW, len(self.outbox)))]
            # All of the window is sent before any PUBACK is awaited; if the connection drops, nothing
            # is removed and the whole window is sent again after reconnecting (duplicates are
            # possible, loss and reordering are not; receivers drop duplicates by sequence number).
            await asyncio.gather(*(c.publish(tp, pl, qos=1, retain=rt) for tp, pl, rt in batch))
            for _ in batch:
                self.outbox.popleft()

    # -- incoming -----------------------------------------------------------------------------
    def _routes(self) -> Router[None]:
        """Every topic this bench reads, its message model and its handler (bench/lab/router.py)."""
        t = self.t
        r: Router[None] = Router(limit=self.settings.max_message_bytes, refused=self._refused)
        r.on(t.job("{job}"), Job, self._on_job_record, cleared=self._on_job_cleared, group=HISTORY)
        r.on(t.queue("{job}"), Job, lambda job, at: self.on_job(job, via_queue=True))
        r.on(t.bench("{bench}", "status"), Status, lambda st, at: self.on_status(st))
        r.on(
            t.claim("{bench}", "{job}"),
            Claim,
            lambda cl, at: self.on_claim(cl, at.retained, at.history),
            cleared=self._on_claim_withdrawn,
            group=HISTORY,
        )
        r.on(t.result("{bench}", "{job}"), Result, lambda res, at: self.on_result(res, at.history), group=HISTORY)
        for holder in (None, "{holder}"):
            r.on(t.control(self.bench, "replay", holder), Replay, self._live_only(self.on_replay))
            r.on(t.control(self.bench, "submit", holder), Job, self._live_only(self.on_submit))
            r.on(t.control(self.bench, "{op}", holder), Control, self._live_only(self.on_control))
        return r

    def _refused(self, topic: str, exc: ProtocolError) -> None:
        self.note("warning", f"refused message on {topic}: {exc}", topic)

    def on_message(self, topic: str, payload: bytes, retained: bool = False, history: bool = False) -> None:
        """One message. ``history``: a retained one from the history read (bench/lab/mqtt.py
        start_barrier), which is older than anything that came live on the same topic meanwhile."""
        found = self.router.match(topic)
        if found is not None and found[0].group == HISTORY:
            if history:
                if topic in self._live_topics:
                    return
            elif not self.synced:
                self._live_topics.add(topic)
        self.router.deliver(found, topic, payload, retained=retained, history=history)

    def _on_job_record(self, job: Job, at: Arrival) -> None:
        self.on_job(job, via_queue=False, history=at.history)

    def _on_job_cleared(self, at: Arrival) -> None:
        if not at.retained:
            self._forget(at["job"], "its record was cleared (archived)")

    def _on_claim_withdrawn(self, at: Arrival) -> None:
        if at["job"] in self.jobs:
            self.jobs[at["job"]].withdraw(at["bench"])  # a lost claim, withdrawn
            self._reindex(at["job"])

    def on_job(self, job: Job, via_queue: bool, direct_by: str | None = None, history: bool = False) -> None:
        if job.bench is not None and direct_by is None:
            # Only this bench sets `bench`, on a job its lease holder sent it; in the queue it would
            # bypass the lease (docs/lab.md, Leases).
            misrouted = f"a job for one bench is sent through {self.t.control(job.bench, 'submit')} under its lease"
            jv = self._view(job.job)
            if jv.refused is None:
                jv.refused = misrouted
                self.note("warning", f"refused job {job.job}: {misrouted}", job=job.job)
            return
        jv = self._view(job.job)
        if jv.job is None:
            jv.job = job
            jv.direct_by = direct_by
        if not via_queue:
            jv.seen = self._conn
        if history:
            return  # the open jobs are indexed once the whole history is in (_on_synced)
        now = time.monotonic()
        if direct_by is not None or (not via_queue and not jv.claims and not jv.results):
            jv.complete = True  # new: every claim of it comes after this, live
        if via_queue:
            # The broker chose this bench for the job: its turn is now. Say at once why it will not take it.
            why = self.matches(job)
            if why is not None and jv.refused is None:
                jv.refused = why
                self.note("warning", f"refused job {job.job}: {why}", self.t.queue(job.job), job.job)
            jv.eligible_at = now
        else:
            self._give_turn(job.job, self.claim_grace)  # the bench that got the wake-up goes first
        self._reindex(job.job)
        self.consider()

    def _turn(self, job: str) -> float:
        """How long after a job became free this bench waits before claiming it: benches take turns
        in an order drawn from the job id, so one claims and the others see it claimed."""
        benches = {b for b, on in self.online.items() if on} | {self.bench}
        order = sorted(benches, key=lambda b: hashlib.sha256(f"{job}/{b}".encode()).digest())
        return order.index(self.bench) * STAGGER_S

    def _give_turn(self, job: str, after: float = 0.0) -> None:
        jv = self.jobs[job]
        delay = after + self._turn(job)
        jv.eligible_at = min(jv.eligible_at, time.monotonic() + delay)
        asyncio.get_running_loop().call_later(delay + 0.01, self.consider)

    def _reindex(self, job: str) -> None:
        """Keep the index of open jobs (a record, no result that counts) up to date for one job."""
        jv = self.jobs.get(job)
        if jv is not None and jv.job is not None and jv.result() is None:
            self.open.add(job)
        else:
            self.open.discard(job)

    def on_status(self, st: Status) -> None:
        self.online[st.bench] = st.online
        if st.bench == self.bench:
            return
        if st.online:
            self.offline_since.pop(st.bench, None)
        elif self.connected and st.bench not in self.offline_since:
            since = time.monotonic()
            self.offline_since[st.bench] = since
            asyncio.get_running_loop().call_later(self.requeue_grace, self._requeue_from, st.bench, since)

    def _requeue_from(self, bench: str, since: float) -> None:
        if self.offline_since.get(bench) != since:
            return  # it came back in time, or this bench lost the broker itself and counts anew
        if not self.synced:
            asyncio.get_running_loop().call_later(0.25, self._requeue_from, bench, since)
            return
        del self.offline_since[bench]
        for name in sorted(self.open):
            jv = self.jobs[name]
            if jv.result() is None and jv.winner(jv.attempt) == bench:
                jv.attempt += 1
                self._give_turn(name)
                log.info(
                    "%s: bench %s is offline; job %s is open again (attempt %d)", self.bench, bench, name, jv.attempt
                )
        self.consider()

    def on_claim(self, cl: Claim, retained: bool = False, history: bool = False) -> None:
        jv = self._view(cl.job)
        jv.add_claim(cl, retained)  # the first counted claim of an attempt wins, in broker order
        if cl.attempt > jv.attempt:
            jv.attempt = cl.attempt  # a bench that came later learns the attempt from the claims
        if history:
            return
        self._reindex(cl.job)
        if self.claiming != (cl.job, cl.attempt) or cl.bench != self.bench:
            return
        self.claiming = None
        lease = self._lease_refuses(jv)
        if jv.winner(cl.attempt) == self.bench and jv.result() is None and lease is None:
            self.running = cl.job
            self._run_task = asyncio.get_running_loop().create_task(self._run(cl.job, cl.attempt))
        else:
            if lease is not None:
                self.note("info", f"job {cl.job} not started: {lease}", job=cl.job)
            # Lost the race (or the lease changed): withdraw the claim so the retained claims name only winners.
            self.send(self.t.claim(self.bench, cl.job), b"", retain=True)
            self.consider()

    def on_result(self, res: Result, history: bool = False) -> None:
        jv = self._view(res.job)
        why = jv.add_result(res, self.lab_keys)
        if why is not None and res.bench not in jv.ignored:
            jv.ignored.add(res.bench)
            self.note("warning", f"ignored result of job {res.job} from bench {res.bench}: {why}", job=res.job)
        if history:
            return
        if res.bench == self.bench and self.interrupted is not None and self.interrupted.get("job") == res.job:
            self._clear_journal()  # the broker has this bench's word on that run: nothing left to tell
        if why is None and res.verdict == ABANDONED and self._advance(res.job):
            log.info(
                "%s: job %s was abandoned on %s; open again (attempt %d)", self.bench, res.job, res.bench, jv.attempt
            )
            self._give_turn(res.job)
        self._reindex(res.job)
        self.consider()

    def _advance(self, job: str) -> bool:
        """Open the next attempt of a job whose current one its winner abandoned; True if it did."""
        jv = self.jobs[job]
        before = jv.attempt
        while (w := jv.winner(jv.attempt)) is not None and (r := jv.results.get((w, jv.attempt))) is not None:
            if r.verdict != ABANDONED:
                break
            jv.attempt += 1
        return jv.attempt != before

    # -- what a restart leaves behind ------------------------------------------------------------
    def _read_journal(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.journal.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _write_journal(self, entry: dict[str, Any]) -> None:
        self.interrupted = entry
        try:
            self.journal.parent.mkdir(parents=True, exist_ok=True)
            self.journal.write_text(json.dumps(entry), encoding="utf-8")
        except OSError as exc:
            log.warning(
                "%s: cannot write %s (%s); an interrupted run could not be named", self.bench, self.journal, exc
            )

    def _clear_journal(self) -> None:
        self.interrupted = None
        self.journal.unlink(missing_ok=True)

    def _report_abandoned_runs(self) -> None:
        """Jobs this bench won but does not run and has no result for: its agent restarted during
        the run. Each such run is ABANDONED, with its unsealed folder named, so that the job's next
        attempt opens at once instead of the job staying taken."""
        for name, jv in sorted(self.jobs.items()):
            if name == self.running or (self.claiming is not None and self.claiming[0] == name):
                continue
            if not any(b == self.bench for entries in jv.claims.values() for b, _ in entries):
                continue  # most of the history: jobs other benches ran
            done = [a for b, a in jv.results if b == self.bench]
            won = [a for a in jv.claims if jv.winner(a) == self.bench and (not done or max(done) < a)]
            if not won:
                continue
            attempt = max(won)
            entry = self.interrupted
            run_id = report = ""
            if entry is not None and entry.get("job") == name and entry.get("attempt") == attempt:
                run_id, report = str(entry.get("run_id", "")), str(entry.get("report", ""))
                sealed = (Path(report) / "manifest.json").is_file()
                reason = f"the bench's agent restarted during the run; its record {report} is " + (
                    "sealed but its result was never sent" if sealed else "unsealed"
                )
            else:
                reason = "the bench's agent restarted before the run began; it left no record"
            self.note("warning", f"job {name} attempt {attempt} was abandoned: {reason}", job=name)
            res = Result(
                job=name,
                bench=self.bench,
                attempt=attempt,
                verdict=ABANDONED,
                reason=reason,
                run_id=run_id,
                report=report,
                exit_code=EXIT_CODES[Verdict.ERROR],  # the run did not finish: an error, as in bench run
            )
            if self.key is not None:
                res = sign_result(res, self.key)
            jv.results[(self.bench, attempt)] = res
            self.send(self.t.result(self.bench, name), encode(res), retain=True)
            if attempt == jv.attempt:
                jv.attempt += 1

    def _forget(self, job: str, why: str) -> None:
        """A job whose record is gone (archived): never claimed or run; this bench clears its own
        retained claim and result of it, so that the broker's retained set stays bounded."""
        if job == self.running:
            return  # records are archived only when finished; this one ends as it is
        jv = self.jobs.pop(job, None)
        self.open.discard(job)
        if jv is None:
            return
        mine = any(b == self.bench for entries in jv.claims.values() for b, _ in entries)
        mine = mine or any(b == self.bench for b, _ in jv.results)
        if self.claiming is not None and self.claiming[0] == job:
            self.claiming = None
            mine = True
        if mine:
            log.info("%s: job %s: %s; its claim and result here are cleared", self.bench, job, why)
            self.send(self.t.claim(self.bench, job), b"", retain=True)
            self.send(self.t.result(self.bench, job), b"", retain=True)

    def _on_synced(self, jobs_read: int) -> None:
        """The retained history of this connection is all in (its barrier marker came back)."""
        self.synced = True
        self._live_topics.clear()
        for name, jv in list(self.jobs.items()):
            if jv.direct_by is None and (jv.job is None or jv.seen != self._conn):
                self._forget(name, "it has no record on the broker (archived)")
        self._report_abandoned_runs()
        self.open = set()
        for name in self.jobs:
            self._reindex(name)
        for name in self.open:
            jv = self.jobs[name]
            jv.complete = True
            self._advance(name)  # abandoned while this bench was away, or before its history was in
            if not jv.claimed(jv.attempt):
                self._give_turn(name)
        log.info(
            "%s: history of %d messages read %.2f s after connecting; %d jobs known, %d open",
            self.bench,
            jobs_read,
            time.monotonic() - self._connect_t,
            len(self.jobs),
            len(self.open),
        )
        self.consider()

    def _lease_refuses(self, jv: JobView) -> str | None:
        """None when the lease lets this bench start the job now, else why not.

        A leased bench runs only the jobs its holder sent it; queued jobs wait until the lease
        is released or expires. A job sent under a lease runs only while its sender holds it.
        """
        cur = self.leases.current()
        if jv.direct_by is not None:
            if cur is None or cur.holder != jv.direct_by:
                return f"it was sent by {jv.direct_by}, who no longer holds the lease"
            return None
        if cur is not None:
            return f"the bench is leased by {cur.holder}; queued jobs wait"
        return None

    def _control_refused(self, ctl: Control, topic_op: str, topic_holder: str | None) -> str | None:
        """Why a control message must not act (one line), or None. Checked before any op."""
        if ctl.op != topic_op:
            return f"op {ctl.op} in the payload does not match its topic ({topic_op})"
        if topic_holder is not None and ctl.holder != topic_holder:
            return f"holder {ctl.holder or '(none)'} in the payload does not match its topic ({topic_holder})"
        if self.settings.authenticated_holders and topic_holder is None:
            return "control without the holder in its topic is refused (lab.authenticated_holders)"
        expires = epoch_of(ctl.expires_utc)
        if expires is None:
            return f"expires_utc {ctl.expires_utc!r} is not an ISO 8601 time"
        now = time.time()
        if expires <= now:
            return f"expired at {ctl.expires_utc} ({now - expires:.0f} s ago; stale, or the clocks disagree)"
        if expires - now > MAX_CONTROL_VALID_S:
            return f"valid until {ctl.expires_utc}, more than {MAX_CONTROL_VALID_S:.0f} s ahead"
        return None

    def _target_refused(self, ctl: Control, started: Started | None) -> str | None:
        """terminate/abort/estop act only on the job or run they name, and only while it runs."""
        if ctl.job is None and ctl.run_id is None:
            return "names no job or run (a stop must say what it stops)"
        what = f"job {ctl.job}" if ctl.job is not None else f"run {ctl.run_id}"
        if self.running is None:
            return f"{what} is not running here (nothing is)"
        if (ctl.job is not None and ctl.job != self.running) or (
            ctl.run_id is not None and (started is None or ctl.run_id != self.state.run_id)
        ):
            return f"{what} is not running here (job {self.running}, run {self.state.run_id} is)"
        return None

    def _live_only(self, handle: Callable[[M, Arrival], None]) -> Callable[[M, Arrival], None]:
        """A control handler that refuses a retained message: the broker keeps a retained message
        and hands it out on every (re)subscription, so a stop pressed once would act again after
        any reconnect, on whatever runs then."""

        def live(msg: M, at: Arrival) -> None:
            if at.retained:
                self.note(
                    "warning", f"retained control message on {at.topic} refused (control is never retained)", at.topic
                )
            else:
                handle(msg, at)

        return live

    def on_replay(self, rp: Replay, at: Arrival) -> None:
        kept = self.sent.get(rp.run_id)
        if kept is None:
            self.note("info", f"replay of run {rp.run_id}: not among the last {KEEP_RUNS} runs (see its events.jsonl)")
            return
        for body in kept[rp.from_seq :]:
            self.send(self.t.bench(self.bench, "events"), body)

    def on_submit(self, job: Job, at: Arrival) -> None:
        holder = at.levels.get("holder")
        if holder is not None and job.submitter != holder:
            self.note("warning", f"refused job {job.job}: submitter does not match its topic ({holder})", job=job.job)
            return
        if self.settings.authenticated_holders and holder is None:
            self.note(
                "warning", f"refused job {job.job}: no holder in its topic (lab.authenticated_holders)", job=job.job
            )
            return
        try:
            self.leases.check(job.submitter, f"submitting to bench {self.bench}")
        except LeaseRefused as exc:
            self.note("warning", f"refused job {job.job}: {exc}", job=job.job)
            return
        job = job.model_copy(update={"bench": self.bench})
        self.on_job(job, via_queue=True, direct_by=job.submitter)

    def on_control(self, ctl: Control, at: Arrival) -> None:
        op, holder, topic = at["op"], at.levels.get("holder"), at.topic
        why = self._control_refused(ctl, op, holder)
        if why is not None:
            self.note("warning", f"{ctl.op} by {ctl.holder or '?'} refused: {why}", topic)
            return
        if ctl.op == "acquire" or ctl.op == "renew" or ctl.op == "release":
            try:
                if ctl.op == "acquire":
                    self.leases.acquire(ctl.holder, ctl.ttl_s)
                elif ctl.op == "renew":
                    self.leases.renew(ctl.holder, ctl.ttl_s)
                else:
                    self.leases.release(ctl.holder)
            except LeaseRefused as exc:
                self.note("warning", f"lease {ctl.op} by {ctl.holder or '?'} refused: {exc}")
            self.publish_lease()
            if ctl.op == "release":
                self.consider()  # queued jobs that waited for the lease
            return
        started = self.started
        why = self._target_refused(ctl, started)
        if why is not None:
            self.note("warning", f"{ctl.op} by {ctl.holder or '?'} ignored: {why}", topic)
            return
        act: Callable[[Started], None]
        if ctl.op == "estop":
            # No lease: anyone the broker lets publish here (an authorised operator) may press it.
            self.note("warning", f"emergency stop by {ctl.holder or 'operator'}: {ctl.reason}")
            reason = f"emergency stop from the lab by {ctl.holder or 'operator'}" + (
                f": {ctl.reason}" if ctl.reason else ""
            )

            def act(s: Started) -> None:
                s.loop.call_soon_threadsafe(s.run.emergency_stop, reason)
        else:
            try:
                self.leases.check(ctl.holder, ctl.op)
            except LeaseRefused as exc:
                self.note("warning", f"{ctl.op} refused: {exc}")
                return
            if ctl.op == "terminate":

                def act(s: Started) -> None:
                    s.loop.call_soon_threadsafe(s.run.terminate, f"by {ctl.holder}: {ctl.reason}")
            else:

                def act(s: Started) -> None:
                    s.loop.call_soon_threadsafe(
                        s.run.request_stop, Verdict.ABORTED, f"aborted from the lab by {ctl.holder}: {ctl.reason}"
                    )

        if started is None:
            self._pending_stop = act  # the job is being prepared: the stop acts as soon as it starts
        else:
            act(started)

    # -- taking and running jobs --------------------------------------------------------------
    def consider(self) -> None:
        """If idle, claim one of the oldest open jobs this bench can run and whose turn has come."""
        if not self.connected or self.claiming or self.running or self._stop.is_set():
            return
        if self.interlock.state() is not None:
            if self.state.state != "tripped":
                self.state = State(bench=self.bench, state="tripped", reason="station interlock latched")
                self.publish_state()
            return
        if self.state.state == "tripped":
            # Somebody ran `bench reset-interlock` (with a recorded reason): the bench takes jobs again.
            self.state = State(bench=self.bench, state="idle")
            self.publish_state()
        now = time.monotonic()
        ready: list[str] = []
        for name in sorted(self.open):  # job ids are UUIDv7: in the order they were made
            jv = self.jobs[name]
            if not (jv.complete or self.synced) or jv.eligible_at > now:
                continue
            if jv.job is None or jv.result() is not None or jv.claimed(jv.attempt):
                continue
            if self.matches(jv.job) is not None or self._lease_refuses(jv) is not None:
                continue
            ready.append(name)
            if len(ready) == CLAIM_WINDOW:
                break
        if not ready:
            return
        # Of the oldest ready jobs, the one this bench ranks first (a hash of job and bench): benches
        # that become idle at the same instant mostly claim different jobs instead of all the oldest.
        name = min(ready, key=lambda job: hashlib.sha256(f"{job}/{self.bench}".encode()).digest())
        jv = self.jobs[name]
        self.claiming = (name, jv.attempt)
        self._claimed_at = time.monotonic()
        claim = Claim(job=name, attempt=jv.attempt, bench=self.bench)
        self.send(self.t.claim(self.bench, name), encode(claim), retain=True)

    async def _run(self, name: str, attempt: int) -> None:
        jv = self.jobs[name]
        job = jv.job
        assert job is not None
        run_id = new_run_id()
        loop = asyncio.get_running_loop()
        try:
            path = self._sequence_file(job)
            plan = await asyncio.to_thread(build_plan, path, self.station_path, job.params, [])
        except BenchError as exc:
            await self._finish_failed(name, attempt, "REFUSED", exc)
            return
        total = len(plan.steps)
        report_dir = (self.reports / run_id).resolve()
        self._write_journal({"job": name, "attempt": attempt, "run_id": run_id, "report": str(report_dir)})
        self.state = State(bench=self.bench, state="running", job=name, run_id=run_id, steps_total=total)
        self.publish_state()
        events_topic = self.t.bench(self.bench, "events")
        sent: list[bytes] = []
        self.sent[run_id] = sent
        while len(self.sent) > KEEP_RUNS:
            del self.sent[next(iter(self.sent))]
        seq = 0
        progress: dict[str, Any] = {"step": "", "done": 0}

        def listener(kind: str, t: float, fields: dict[str, Any]) -> None:
            # Called in the worker thread for every record event, right after it is written locally.
            nonlocal seq
            event = Event(bench=self.bench, job=name, run_id=run_id, seq=seq, kind=kind, t=t, fields=fields)
            payload = encode(event)
            seq += 1
            step = None
            if kind == EventKind.STEP_STARTED and fields.get("phase") == "steps":
                step = str(fields.get("step"))
                progress["step"] = step
            elif kind == EventKind.STEP_ENDED and fields.get("step") == progress["step"]:
                progress["done"] += 1
                step = progress["step"]
            loop.call_soon_threadsafe(self._on_run_event, events_topic, payload, step, progress["done"], sent)

        def on_started(s: Started) -> None:
            loop.call_soon_threadsafe(self._on_started, s)

        try:
            result = await asyncio.to_thread(
                run_plan,
                plan,
                self.reports,
                run_id=run_id,
                seed=job.seed,
                listeners=[listener],
                on_started=on_started,
                # Indexed under this bench's name, with who submitted the job (docs/results.md).
                tags=RunTags(bench_id=self.bench, operator=job.submitter or None),
            )
        except BenchError as exc:
            await self._finish_failed(name, attempt, "ERROR", exc, run_id)
            return
        finally:
            self.started = None
        run_dir = self.reports / run_id
        manifest = run_dir / "manifest.json"
        res = Result(
            job=name,
            bench=self.bench,
            attempt=attempt,
            verdict=result.verdict.value,
            reason=result.reason,
            run_id=run_id,
            report=str(run_dir.resolve()),
            manifest_sha256=hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.is_file() else "",
            exit_code=run_exit_code(result),
            sim_duration_s=result.sim_duration_s,
            wall_duration_s=result.wall_duration_s,
            events=len(sent),
        )
        await self._finish(name, attempt, res)

    async def _finish_failed(self, name: str, attempt: int, verdict: str, exc: BenchError, run_id: str = "") -> None:
        """A job that could not be run (REFUSED: its plan did not build) or whose run failed to
        start or end (ERROR): the one line of the error and its exit code are the result."""
        res = Result(
            job=name,
            bench=self.bench,
            attempt=attempt,
            verdict=verdict,
            reason=str(exc),
            run_id=run_id,
            exit_code=exc.exit_code,
        )
        await self._finish(name, attempt, res)

    def _on_started(self, s: Started) -> None:
        self.started = s
        pending, self._pending_stop = self._pending_stop, None
        if pending is not None:
            # A stop for this job came while it was being prepared: it acts now, at its first instant.
            pending(s)

    def _on_run_event(self, topic: str, payload: bytes, step: str | None, done: int, sent: list[bytes]) -> None:
        sent.append(payload)
        self.send(topic, payload)
        if step is not None and self.state.state == "running":
            self.state = self.state.model_copy(update={"step": step, "steps_done": done})
            self.publish_state()

    def _sequence_file(self, job: Job) -> Path:
        if job.sequence_text is not None:
            # Data, never code: the text is written to a file and loaded like any sequence file.
            path = self._text_dir / f"{job.job}.yaml"
            path.write_text(job.sequence_text, encoding="utf-8")
            return path
        return self.library[(job.sequence.id, job.sequence.sha256)]

    async def _finish(self, name: str, attempt: int, res: Result) -> None:
        if self.key is not None:
            res = sign_result(res, self.key)
        self.jobs[name].results[(self.bench, res.attempt)] = res
        self._reindex(name)
        self._pending_stop = None
        self.send(self.t.result(self.bench, name), encode(res), retain=True)
        log.info("%s: job %s ended: %s %s", self.bench, name, res.verdict, res.reason)
        self.running = None
        tripped = self.interlock.state()
        self.state = State(
            bench=self.bench, state="tripped" if tripped else "idle", reason=(tripped or {}).get("reason", "")
        )
        self.publish_state()
        self.consider()

    # -- the connection -----------------------------------------------------------------------
    async def serve(self) -> None:
        """Stay online until stopped; reconnect whenever the broker goes away."""
        first = True
        status_topic = self.t.bench(self.bench, "status")
        offline = encode(Status(bench=self.bench, online=False))
        # MQTT 5 will delay: the broker publishes the will only when this bench stayed away for the
        # grace, so a short cut makes no bench look dead. It needs a session that outlives the cut
        # (session expiry, and no clean start on a reconnection).
        grace_s = max(1, math.ceil(self.requeue_grace))
        will_props = Properties(PacketTypes.WILLMESSAGE)
        will_props.WillDelayInterval = grace_s
        will = aiomqtt.Will(status_topic, offline, qos=1, retain=True, properties=will_props)
        while not self._stop.is_set():
            try:
                self._connect_t = time.monotonic()
                # A new process starts clean: the will of a previous one (it died) is published at once.
                async with mqtt.client(
                    self.broker,
                    f"bench-agent-{self.bench}",
                    will=will,
                    keepalive=5,
                    clean_start=first,
                    session_expiry_s=grace_s,
                    connect_timeout=CONNECT_S,
                ) as c:
                    first = False
                    await self._session(c)
            except aiomqtt.MqttError as exc:
                if first:
                    raise mqtt.connect_error(self.broker, exc) from None
                if self._stop.is_set():
                    break
                self.connected = False
                log.warning(
                    "%s: broker connection lost (%s); %d messages kept; retrying", self.bench, exc, len(self.outbox)
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), RECONNECT_S)
        if self._run_task is not None:
            await asyncio.gather(self._run_task, return_exceptions=True)

    async def _session(self, c: aiomqtt.Client) -> None:
        t = self.t
        self._conn += 1
        self.synced = False
        self._live_topics.clear()
        self.offline_since.clear()  # the grace counts only while connected: anew from now on
        for jv in self.jobs.values():
            # Claims made while this bench was away are known only from the history: until it is
            # read, only jobs that come live from now on (and those sent to this bench) are complete.
            jv.complete = jv.direct_by is not None
        self.connected = True
        # Live only: the history of jobs, claims and results (retained) is read on a second
        # connection (_history), so that new jobs are not queued behind it.
        live = SubscribeOptions(qos=1, retainHandling=2)
        await c.subscribe(t.bench("+", "status"), qos=1)
        for topic in (t.bench("+", "claims/+"), t.bench("+", "results/+"), f"{t.p}/jobs/+"):
            await c.subscribe(topic, options=live)
        await c.subscribe(f"{t.p}/control/{self.bench}/#", qos=1)
        await c.subscribe(t.shared_queue(), qos=1)
        online = Status(bench=self.bench, online=True, since_utc=utc(time.time()))
        # Status, capabilities and state jump the queue: the outbox may hold a backlog of events.
        await c.publish(t.bench(self.bench, "status"), encode(online), qos=1, retain=True)
        await c.publish(t.bench(self.bench, "caps"), encode(self.caps()), qos=1, retain=True)
        await c.publish(t.bench(self.bench, "state"), self._state_message(), qos=1, retain=True)
        if self._lease_published is None:
            self.publish_lease()
        log.info(
            "%s: online at %s, ready for new jobs %.2f s after connecting (%d sequences in the library)",
            self.bench,
            self.broker.where,
            time.monotonic() - self._connect_t,
            len(self.library),
        )

        async def history() -> None:
            await self._history()
            await asyncio.Event().wait()  # done; the session goes on

        async def reader() -> None:
            async for msg in c.messages:
                payload = msg.payload if isinstance(msg.payload, bytes | bytearray) else str(msg.payload or "").encode()
                self.on_message(msg.topic.value, bytes(payload), retained=bool(msg.retain))

        async def ticker() -> None:
            while True:
                await asyncio.sleep(0.5)
                cur = self.leases.current()
                if (cur.holder if cur else None) != self._lease_published:
                    self.publish_lease()  # an expired lease frees the bench: say so
                claim = self.claiming
                if claim is not None and self._drained.is_set() and time.monotonic() - self._claimed_at > CLAIM_LOST_S:
                    # Our claim left but never came back (a broker restarted without its data): withdraw, retry.
                    log.warning("%s: claim of job %s was lost; withdrawn", self.bench, claim[0])
                    self.claiming = None
                    self.send(self.t.claim(self.bench, claim[0]), b"", retain=True)
                # Also picks up work after an interlock reset or anything this bench missed.
                self.consider()

        async def stopper() -> None:
            await self._stop.wait()
            if self._run_task is not None:
                await asyncio.gather(self._run_task, return_exceptions=True)
            # Drain what is left, then say goodbye (a clean disconnect sends no will).
            await self._drained.wait()
            await c.publish(
                t.bench(self.bench, "status"), encode(Status(bench=self.bench, online=False)), qos=1, retain=True
            )

        tasks = [asyncio.create_task(f()) for f in (reader, ticker, stopper, history)]
        tasks.append(asyncio.create_task(self._publisher(c)))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Disconnected: nothing is decided from here until the history is read again, and no
            # bench's grace runs out while this one cannot see it come back.
            self.connected = False
            self.synced = False
            self.offline_since.clear()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            exc = task.exception()
            if exc is not None:
                raise exc

    async def _history(self) -> None:
        """Read the retained jobs, claims and results up to the barrier marker, on a connection of
        its own; then find this bench's abandoned runs and the open jobs (_on_synced)."""
        ident = f"bench-agent-{self.bench}-history"
        t = self.t
        count = 0
        async with mqtt.client(self.broker, ident, keepalive=5, connect_timeout=CONNECT_S) as h:
            # QoS 0: the history is retained, and read again whole if this connection breaks.
            for topic in (f"{t.p}/jobs/+", t.bench("+", "claims/+"), t.bench("+", "results/+")):
                await h.subscribe(topic, qos=0)
            token = await mqtt.start_barrier(h, t.p)
            marker = mqtt.sync_topic(t.p, ident)
            async for msg in h.messages:
                payload = msg.payload if isinstance(msg.payload, bytes | bytearray) else str(msg.payload or "").encode()
                if msg.topic.value == marker:
                    if payload == token:
                        break
                    continue
                if msg.retain:  # live ones come on the main connection
                    count += 1
                    self.on_message(msg.topic.value, bytes(payload), retained=True, history=True)
        self._on_synced(count)

    def stop(self, reason: str) -> None:
        """Abort a running job (cleanup and safe state still run), then go offline."""
        if self.started is not None:
            self.started.loop.call_soon_threadsafe(self.started.run.request_stop, Verdict.ABORTED, reason)
        self._stop.set()


def run_agent(agent: Agent) -> None:
    """Run the agent in the main thread until SIGINT/SIGTERM."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, agent.stop, f"agent stopped ({signal.Signals(sig).name})")
        await agent.serve()

    assert threading.current_thread() is threading.main_thread()
    asyncio.run(main())
