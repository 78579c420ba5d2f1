"""Broker address, credentials and TLS, and aiomqtt clients made from them.

``mqtt://user:password@host:port`` or ``mqtts://...`` (TLS). Credentials may also come from
``BENCH_MQTT_USER`` / ``BENCH_MQTT_PASSWORD`` (so they stay out of the process list), the CA file
for TLS from ``BENCH_MQTT_CA``, a client certificate and its key from ``BENCH_MQTT_CERT`` and
``BENCH_MQTT_KEY`` (for a broker with ``require_certificate true``). Every client speaks MQTT 5:
shared subscriptions, will delay and reason codes need it.
"""

from __future__ import annotations

import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.errors import BenchError, LoadError

# paho reports socket errors on the "mqtt" logger; a command says what failed in its own one line,
# so without a configured handler (every command but `bench agent`) nothing else is printed.
logging.getLogger("mqtt").addHandler(logging.NullHandler())


class BrokerError(BenchError):
    """The broker cannot be reached or refused us (credentials, ACL)."""

    exit_code = 3


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    prefix: str = "lab"

    @property
    def where(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_broker(url: str, user: str | None = None, password: str | None = None, prefix: str = "lab") -> Broker:
    parts = urlsplit(url if "://" in url else f"mqtt://{url}")
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise LoadError(f"--broker {url}: expected mqtt://host:port or mqtts://host:port")
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise LoadError(f"--broker {url}: bad port") from None
    return Broker(
        host=parts.hostname,
        port=port,
        username=user or (unquote(parts.username) if parts.username else None) or os.environ.get("BENCH_MQTT_USER"),
        password=password
        or (unquote(parts.password) if parts.password else None)
        or os.environ.get("BENCH_MQTT_PASSWORD"),
        tls=tls,
        ca_file=os.environ.get("BENCH_MQTT_CA") or None,
        cert_file=os.environ.get("BENCH_MQTT_CERT") or None,
        key_file=os.environ.get("BENCH_MQTT_KEY") or None,
        prefix=prefix,
    )


def tls_context(broker: Broker) -> ssl.SSLContext:
    """The TLS context of a client: the lab's CA, and the client certificate when one is given.

    Every file is checked first, so that a wrong path is one line naming it (exit code 2), not an
    OSError from deep inside the ssl module.
    """
    for what, path in (
        ("BENCH_MQTT_CA", broker.ca_file),
        ("BENCH_MQTT_CERT", broker.cert_file),
        ("BENCH_MQTT_KEY", broker.key_file),
    ):
        if path is not None and not Path(path).is_file():
            raise LoadError(f"{what}={path}: no such file")
    if broker.key_file is not None and broker.cert_file is None:
        raise LoadError(f"BENCH_MQTT_KEY={broker.key_file}: a client key needs its certificate (BENCH_MQTT_CERT)")
    try:
        ctx = ssl.create_default_context(cafile=broker.ca_file)
        if broker.cert_file is not None:
            # The key may be in the certificate file itself (BENCH_MQTT_KEY unset).
            ctx.load_cert_chain(broker.cert_file, broker.key_file)
    except (ssl.SSLError, OSError) as exc:
        files = ", ".join(p for p in (broker.ca_file, broker.cert_file, broker.key_file) if p)
        raise LoadError(f"TLS files {files}: cannot be used: {exc}") from None
    return ctx


def session_properties(expiry_s: int) -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = expiry_s
    return props


def client(
    broker: Broker,
    identifier: str,
    *,
    will: aiomqtt.Will | None = None,
    clean_start: bool = True,
    session_expiry_s: int = 0,
    keepalive: int = 10,
    timeout: float = 10.0,
    connect_timeout: float | None = None,
) -> aiomqtt.Client:
    """An MQTT 5 client. ``connect_timeout`` bounds the TCP connect and the wait for CONNACK (else
    ``timeout``): an attempt made while the network is cut then fails soon and the next one is made,
    rather than one attempt hanging on."""
    kwargs: dict[str, Any] = {}
    if broker.tls:
        kwargs["tls_context"] = tls_context(broker)
    c = _Client(
        broker.host,
        broker.port,
        username=broker.username,
        password=broker.password,
        identifier=identifier,
        protocol=aiomqtt.ProtocolVersion.V5,
        will=will,
        clean_start=clean_start,
        keepalive=keepalive,
        timeout=timeout if connect_timeout is None else connect_timeout,
        # paho allows 20 QoS 1 messages in flight by default and queues the rest; the agent's
        # outbox sends a window of 64 (bench/lab/agent.py OUTBOX_WINDOW).
        max_inflight_messages=100,
        properties=session_properties(session_expiry_s) if session_expiry_s else None,
        **kwargs,
    )
    c.operation_timeout = timeout
    # We pipeline QoS 1 publishes; aiomqtt would log a warning per call beyond 10 (libraries.md §3).
    c.pending_calls_threshold = 10_000
    if connect_timeout is not None:
        c._client.connect_timeout = connect_timeout  # paho's TCP connect (else 5 s)
    return c


class _Client(aiomqtt.Client):
    """Connects within ``connect_timeout``, then waits ``operation_timeout`` for everything else.

    It also registers its socket with the event loop only while the socket is still open: aiomqtt
    schedules ``add_writer(fd)`` for later, and when the connection broke in between, that was
    either an ``add_writer ... Bad file descriptor`` traceback or, once a reconnection reused the
    number, another socket's writer replaced by this dead client's (its messages then wait until
    the broker drops it for a missed keepalive).
    """

    operation_timeout = 10.0

    async def __aenter__(self) -> _Client:
        await super().__aenter__()
        self.timeout = self.operation_timeout
        return self

    def _on_socket_register_write(self, client: Any, userdata: Any, sock: Any) -> None:
        def write() -> None:
            try:
                client.loop_write()
            except Exception as exc:  # a broken connection: end this client as aiomqtt does
                if not self._disconnected.done():
                    self._disconnected.set_exception(exc)

        def register() -> None:
            if client.socket() is sock:  # not closed since it asked
                self._loop.add_writer(sock.fileno(), write)

        self._loop.call_soon_threadsafe(register)


def connect_error(broker: Broker, exc: BaseException) -> BrokerError:
    """One line for a failed connection: refused credentials are told apart from an absent broker."""
    text = str(exc)
    low = text.lower()
    if "not authori" in low or "bad user" in low or "password" in low:
        return BrokerError(f"broker {broker.where} refused the credentials of user '{broker.username or ''}': {text}")
    hint = ""
    if broker.tls:
        hint = " (TLS: is BENCH_MQTT_CA the lab's CA? does the broker require a client certificate: BENCH_MQTT_CERT, BENCH_MQTT_KEY?)"
    return BrokerError(f"cannot connect to broker {broker.where}: {text}{hint}")


def sync_topic(prefix: str, identifier: str) -> str:
    """The client's own barrier topic (the ACL lets each client use only its own: ``%c``)."""
    return f"{prefix}/sync/{identifier}"


async def start_barrier(c: aiomqtt.Client, prefix: str) -> bytes:
    """Ask for a marker that arrives after every retained message of the earlier subscriptions.

    A subscriber cannot count retained messages, and a quiet period proves nothing when a long
    history is still being sent. mosquitto queues a subscription's retained messages when it
    handles the SUBSCRIBE, and everything a client sends is handled in order; so a message this
    client publishes to its own topic after its SUBACKs comes back behind all of them. Call after
    the other subscriptions; the returned token arrives on ``sync_topic(prefix, identifier)``.
    A marker that never comes (the broker dropped messages from a full queue) means the read is
    incomplete, and the caller must say so rather than answer from part of the state.
    """
    topic = sync_topic(prefix, c.identifier)
    token = os.urandom(8).hex().encode()
    await c.subscribe(topic, qos=1)
    await c.publish(topic, token, qos=1)
    return token
