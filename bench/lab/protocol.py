"""The messages of the lab, their topics, and strict decoding with size limits.

Every payload is JSON validated by a pydantic model with unknown keys forbidden; anything else is
refused with a one-line reason (``ProtocolError``) that the agent logs and publishes, and the
agent goes on. Sequences travel by id and SHA-256 from the bench's own library; sequence text
is data (YAML), accepted only where the station allows it (``lab.allow_sequence_text``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# A job or control message is small; events carry one record event. The broker has its own limit
# (message_size_limit in examples/mosquitto/mosquitto.conf); this one holds whatever the broker says.
MAX_MESSAGE_BYTES = 64 * 1024
MAX_SEQUENCE_TEXT = 256 * 1024
PROTOCOL_VERSION = 1

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Short = Annotated[str, Field(max_length=256)]
# An operator's name: it is also a topic level (lab/control/<bench>/<op>/<holder>), so no / + #.
Holder = Annotated[str, Field(pattern=r"^([A-Za-z0-9][A-Za-z0-9_.@-]{0,63})?$")]
# How long a control message is valid at most: a message cannot be made to act forever.
MAX_CONTROL_VALID_S = 3600.0


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid")
    v: Literal[1] = 1


class SequenceRef(_Msg):
    id: Annotated[str, Field(min_length=1, max_length=128)]
    sha256: Sha256


class Job(_Msg):
    job: Name
    sequence: SequenceRef
    # YAML of the sequence itself; refused unless the station sets lab.allow_sequence_text.
    sequence_text: Annotated[str, Field(max_length=MAX_SEQUENCE_TEXT)] | None = None
    params: Annotated[dict[Annotated[str, Field(max_length=64)], Short], Field(max_length=64)] = {}
    require: Annotated[dict[Annotated[str, Field(max_length=64)], Short], Field(max_length=32)] = {}
    seed: int = 1
    submitter: Short = ""
    submitted_utc: Short = ""
    # Set when the job is sent to one bench under a lease (lab/control/<bench>/submit).
    bench: Name | None = None


class Claim(_Msg):
    """A bench's acknowledgement that it takes a job; the first claim of an attempt wins."""

    job: Name
    attempt: int = Field(ge=1, le=1000)
    bench: Name


class Result(_Msg):
    job: Name
    bench: Name
    attempt: int
    verdict: str
    reason: str = ""
    run_id: str = ""
    report: str = ""
    manifest_sha256: str = ""
    exit_code: int = 0
    sim_duration_s: float = 0.0
    wall_duration_s: float = 0.0
    events: int = 0  # how many events the run streamed (seq 0 .. events-1): a watcher knows it has all
    # Ed25519 over every other field, by the bench's station key (bench/lab/trust.py); empty when
    # the bench has no key. A lab that lists its benches' keys counts only signed results.
    signature: Annotated[str, Field(max_length=128)] = ""


class Event(_Msg):
    bench: Name
    job: Name
    run_id: str
    seq: int
    kind: str
    t: float
    fields: dict[str, Any] = {}


class Status(_Msg):
    bench: Name
    online: bool
    since_utc: str = ""


class Caps(_Msg):
    bench: Name
    station: str
    devices: list[str]
    dut: str = ""
    simulated: bool = False
    extra: dict[str, str] = {}
    # id -> sha256 of every sequence in the bench's library
    sequences: dict[str, list[str]] = {}
    allow_sequence_text: bool = False


class State(_Msg):
    bench: Name
    state: Literal["idle", "running", "tripped"]
    job: str | None = None
    run_id: str | None = None
    step: str | None = None
    steps_done: int = 0
    steps_total: int = 0
    reason: str = ""
    # When the bench published this state (its wall clock, UTC): the state an offline bench left
    # behind is shown with its age. Empty from a bench that does not say.
    published_utc: Short = ""


class LeaseInfo(_Msg):
    bench: Name
    holder: str | None = None
    expires_utc: str | None = None
    ttl_s: float = 0.0


class Control(_Msg):
    """Operator -> bench: lease acquire/renew/release, terminate, abort, estop.

    Never retained, and valid only until ``expires_utc``: a message the broker keeps or replays
    later (a retained one after a restart) must not act on a later, unrelated run. terminate,
    abort and estop name the job (or run) they stop; the bench ignores them for any other.
    """

    op: Literal["acquire", "renew", "release", "terminate", "abort", "estop"]
    holder: Holder = ""
    ttl_s: float = Field(30.0, gt=0, le=3600)
    reason: Short = ""
    job: Name | None = None
    run_id: Annotated[str, Field(max_length=64)] | None = None
    expires_utc: Annotated[str, Field(min_length=1, max_length=64)]


class Replay(_Msg):
    """Watcher -> bench: send the events of a run again from ``from_seq`` (a gap, a reconnect)."""

    run_id: Annotated[str, Field(max_length=64)]
    from_seq: int = Field(ge=0)


class LogEntry(_Msg):
    bench: Name
    level: Literal["info", "warning", "error"]
    message: str
    topic: str = ""
    job: str | None = None


class ProtocolError(ValueError):
    """A message that is refused: malformed, oversized or not allowed. One line, for the log."""


M = TypeVar("M", bound=BaseModel)


def decode(model: type[M], payload: bytes | bytearray | str | None, limit: int = MAX_MESSAGE_BYTES) -> M:
    data = payload.encode() if isinstance(payload, str) else bytes(payload or b"")
    if len(data) > limit:
        raise ProtocolError(f"message of {len(data)} bytes is larger than the limit of {limit} bytes")
    try:
        # Parsed and validated in one go (pydantic's JSON parser): an agent reads the whole
        # retained history of the lab on each connect, tens of thousands of messages.
        return model.model_validate_json(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        if err["type"] == "json_invalid":
            raise ProtocolError(f"not JSON: {err['msg']}") from None
        where = ".".join(str(p) for p in err["loc"]) or "message"
        raise ProtocolError(f"{model.__name__.lower()}: {where}: {err['msg']}") from None


def encode(msg: BaseModel) -> bytes:
    """The JSON of a message. A value of a free-form field (an event's ``fields``) that JSON cannot
    hold goes as its text, and a non-finite number as null, as the run's record writes it."""
    return msg.model_dump_json(exclude_none=False, fallback=str).encode()


class Topics:
    """The topic tree (docs/lab.md). A bench publishes only under ``<prefix>/benches/<bench>/``."""

    SHARE_GROUP = "benches"

    def __init__(self, prefix: str = "lab") -> None:
        self.p = prefix.rstrip("/")

    def bench(self, bench: str, leaf: str) -> str:
        return f"{self.p}/benches/{bench}/{leaf}"

    def claim(self, bench: str, job: str) -> str:
        return f"{self.p}/benches/{bench}/claims/{job}"

    def result(self, bench: str, job: str) -> str:
        return f"{self.p}/benches/{bench}/results/{job}"

    def job(self, job: str) -> str:
        return f"{self.p}/jobs/{job}"

    def queue(self, job: str) -> str:
        return f"{self.p}/queue/{job}"

    def shared_queue(self) -> str:
        return f"$share/{self.SHARE_GROUP}/{self.p}/queue/+"

    def control(self, bench: str, op: str, holder: str | None = None) -> str:
        """``<prefix>/control/<bench>/<op>[/<holder>]``: with per-operator broker users, the ACL lets
        each operator publish only with their own name as the last level (docs/lab.md, Leases)."""
        return f"{self.p}/control/{bench}/{op}" + (f"/{holder}" if holder else "")

    def parse(self, topic: str) -> list[str]:
        """Topic levels after the prefix, e.g. ['benches', 'a', 'claims', 'J']."""
        if not topic.startswith(self.p + "/"):
            return []
        return topic[len(self.p) + 1 :].split("/")
