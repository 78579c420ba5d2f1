"""Broker address, credentials and TLS, and aiomqtt clients made from them.

``mqtt://user:password@host:port`` or ``mqtts://...`` (TLS). Credentials may also come from
``BENCH_MQTT_USER`` / ``BENCH_MQTT_PASSWORD`` (so they stay out of the process list), the CA file
for TLS from ``BENCH_MQTT_CA``. Every client speaks MQTT 5: shared subscriptions, will delay and
reason codes need it.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.errors import BenchError, LoadError


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
        ca_file=os.environ.get("BENCH_MQTT_CA"),
        prefix=prefix,
    )


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
) -> aiomqtt.Client:
    kwargs: dict[str, Any] = {}
    if broker.tls:
        ctx = ssl.create_default_context(cafile=broker.ca_file)
        kwargs["tls_context"] = ctx
    c = aiomqtt.Client(
        broker.host,
        broker.port,
        username=broker.username,
        password=broker.password,
        identifier=identifier,
        protocol=aiomqtt.ProtocolVersion.V5,
        will=will,
        clean_start=clean_start,
        keepalive=keepalive,
        timeout=timeout,
        # paho allows 20 QoS 1 messages in flight by default and queues the rest; the agent's
        # outbox sends a window of 64 (bench/lab/agent.py OUTBOX_WINDOW).
        max_inflight_messages=100,
        properties=session_properties(session_expiry_s) if session_expiry_s else None,
        **kwargs,
    )
    # We pipeline QoS 1 publishes; aiomqtt would log a warning per call beyond 10 (libraries.md §3).
    c.pending_calls_threshold = 10_000
    return c


def connect_error(broker: Broker, exc: BaseException) -> BrokerError:
    """One line for a failed connection: refused credentials are told apart from an absent broker."""
    text = str(exc)
    low = text.lower()
    if "not authori" in low or "bad user" in low or "password" in low:
        return BrokerError(f"broker {broker.where} refused the credentials of user '{broker.username or ''}': {text}")
    return BrokerError(f"cannot connect to broker {broker.where}: {text}")
