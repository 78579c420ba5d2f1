"""A real mosquitto on 127.0.0.1 and real `bench agent` processes, for the lab tests.

Each test gets its own broker (free port, password file, the ACL of examples/mosquitto/acl) and
always kills it. Without mosquitto the lab tests skip locally but FAIL in CI (CI=true), where
.ci/run installs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, SIM_STATION

ACL = ROOT / "examples" / "mosquitto" / "acl"
LAB_DIR = ROOT / "tests" / "lab"
SHORT = LAB_DIR / "short.yaml"
PASSWORDS = {
    "operator": "op-secret",
    "bench-a": "a-secret",
    "bench-b": "b-secret",
    "bench-c": "c-secret",
    "alice": "alice-secret",
    "bob": "bob-secret",
}


def need_mosquitto() -> None:
    if shutil.which("mosquitto") and shutil.which("mosquitto_passwd"):
        return
    msg = "mosquitto is not installed (apt-get install -y mosquitto mosquitto-clients; .ci/run does it)"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Mosquitto:
    dir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    acl: Path = ACL
    # Further lines for the listener (TLS: cafile, certfile, keyfile, require_certificate ...).
    listener_lines: list[str] = field(default_factory=list)
    passwords: bool = True

    @property
    def conf(self) -> Path:
        return self.dir / "mosquitto.conf"

    @property
    def log(self) -> Path:
        return self.dir / "mosquitto.log"

    def write_config(self) -> None:
        passwd = self.dir / "passwd"
        passwd.unlink(missing_ok=True)
        for i, (user, pw) in enumerate(PASSWORDS.items() if self.passwords else []):
            args = ["mosquitto_passwd", "-b", str(passwd), user, pw]
            if i == 0:
                args.insert(1, "-c")
            subprocess.run(args, check=True, capture_output=True)
        (self.dir / "data").mkdir(exist_ok=True)
        self.conf.write_text(
            "\n".join(
                [
                    # As root, mosquitto would switch to user 'mosquitto', who cannot read pytest's tmp folders.
                    "user root" if os.geteuid() == 0 else "",
                    "per_listener_settings false",
                    f"listener {self.port} 127.0.0.1",
                    *self.listener_lines,
                    "allow_anonymous false",
                    f"password_file {passwd}" if self.passwords else "",
                    f"acl_file {self.acl}",
                    "persistence true",
                    f"persistence_location {self.dir / 'data'}/",
                    # As examples/mosquitto/mosquitto.conf: a SIGKILL loses at most the last second.
                    "autosave_interval 1",
                    "max_queued_messages 100000",
                    f"log_dest file {self.log}",
                    "log_type all",
                    "",
                ]
            )
        )

    def start(self) -> None:
        if not self.conf.exists():
            self.write_config()
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"mosquitto exited: {err}\n{self.log.read_text() if self.log.exists() else ''}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not listen within 10 s")

    def stop(self) -> None:
        """Stop like an operator would (SIGTERM): mosquitto saves its retained messages and sessions."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()  # the pipe of a broker that is gone, closed here and not by the collector
        self.proc = None

    def kill(self) -> None:
        """A broker crash (SIGKILL): no save on the way out, only what autosave wrote survives."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()  # the pipe of a broker that is gone, closed here and not by the collector
        self.proc = None

    def url(self, user: str = "operator") -> str:
        return f"mqtt://{user}:{PASSWORDS[user]}@127.0.0.1:{self.port}"

    def broker(self, user: str = "operator") -> Any:
        from bench.lab.mqtt import parse_broker

        return parse_broker(self.url(user))


@pytest.fixture(name="mosquitto")
def mosquitto_fixture(tmp_path: Path) -> Iterator[Mosquitto]:
    need_mosquitto()
    m = Mosquitto(tmp_path / "broker")
    m.dir.mkdir()
    m.start()
    try:
        yield m
    finally:
        m.stop()


def station_file(
    folder: Path, bench: str, *, realtime: bool = False, allow_text: bool = False, lab_extra: str = ""
) -> Path:
    """stations/sim.yaml as bench <bench>: its own id (its own interlock), a lab section."""
    text = SIM_STATION.read_text(encoding="utf-8")
    text = text.replace("\nid: sim\n", f"\nid: {bench}\n").replace("../dbc/", f"{ROOT / 'dbc'}/")
    # The bench's own lab section (below) replaces sim.yaml's: a key given twice is refused.
    text = re.sub(r"^lab:\n(?:[ #].*\n|\n)*?(?=^\S)", "", text, count=1, flags=re.M)
    if realtime:
        text = text.replace("virtual_time: true", "virtual_time: false")
    text += (
        "\nlab:\n"
        f"  library: [{LAB_DIR}]\n"
        "  dut: BMS-SIM\n"
        f"  capabilities: {{site: test, rig: {bench}}}\n"
        f"  allow_sequence_text: {'true' if allow_text else 'false'}\n" + lab_extra
    )
    path = folder / f"{bench}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@dataclass
class AgentProc:
    bench: str
    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Lab:
    def __init__(self, broker: Mosquitto, folder: Path) -> None:
        self.broker = broker
        self.folder = folder
        self.reports = folder / "reports"
        self.reports.mkdir(parents=True, exist_ok=True)
        self.agents: dict[str, AgentProc] = {}

    def start_agent(
        self,
        bench: str,
        *,
        realtime: bool = False,
        allow_text: bool = False,
        grace: float = 1.5,
        lab_extra: str = "",
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> AgentProc:
        station = station_file(self.folder, bench, realtime=realtime, allow_text=allow_text, lab_extra=lab_extra)
        log = self.folder / f"{bench}.log"
        env = dict(
            os.environ,
            BENCH_MQTT_USER=bench,
            BENCH_MQTT_PASSWORD=PASSWORDS[bench],
            BENCH_REPORT_PDF="0",
            BENCH_STATE_DIR=str(self.folder / "state"),
            **(env or {}),
        )
        cmd = [sys.executable, "-m", "bench.cli", "agent", "--station", str(station)]
        cmd += ["--broker", f"mqtt://127.0.0.1:{port or self.broker.port}", "--reports", str(self.reports)]
        cmd += ["--requeue-grace", str(grace)]
        with open(log, "wb") as f:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
        a = AgentProc(bench, proc, log)
        self.agents[bench] = a
        return a

    def stop_all(self) -> None:
        for a in self.agents.values():
            if a.proc.poll() is None:
                a.proc.send_signal(signal.SIGTERM)
        for a in self.agents.values():
            try:
                a.proc.wait(15)
            except subprocess.TimeoutExpired:
                a.proc.kill()
                a.proc.wait()

    def wait_online(self, benches: list[str], timeout: float = 20) -> None:
        from bench.lab.client import snapshot

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            snap = asyncio.run(snapshot(self.broker.broker()))
            up = {b.name for b in snap.online() if b.caps is not None}
            if set(benches) <= up:
                return
            for a in self.agents.values():
                if a.proc.poll() is not None:
                    raise AssertionError(f"agent {a.bench} exited {a.proc.returncode}:\n{a.text()}")
            time.sleep(0.2)
        raise AssertionError(
            f"benches not online within {timeout} s: {benches}\n" + "\n".join(a.text() for a in self.agents.values())
        )


@pytest.fixture(name="lab")
def lab_fixture(mosquitto: Mosquitto, tmp_path: Path) -> Iterator[Lab]:
    world = Lab(mosquitto, tmp_path / "lab")
    try:
        yield world
    finally:
        world.stop_all()


async def collect(
    broker: Any,
    topics: list[str],
    until: Callable[[list[tuple[str, bytes]]], bool],
    within: float,
    on_ready: Callable[[], Any] | None = None,
) -> list[tuple[str, bytes]]:
    """Subscribe (as operator), optionally do something, and gather messages until ``until`` holds."""
    from bench.lab.mqtt import client

    got: list[tuple[str, bytes]] = []
    async with client(broker, f"test-collect-{os.getpid()}-{time.monotonic_ns()}") as c:
        for t in topics:
            await c.subscribe(t, qos=1)
        if on_ready is not None:
            r = on_ready()
            if asyncio.iscoroutine(r):
                await r
        async with asyncio.timeout(within):
            async for msg in c.messages:
                payload = msg.payload if isinstance(msg.payload, bytes | bytearray) else str(msg.payload or "").encode()
                got.append((msg.topic.value, bytes(payload)))
                if until(got):
                    break
    return got


async def retained(broker: Any, topics: list[str]) -> dict[str, bytes]:
    """The retained messages under ``topics`` now, complete: read up to the barrier marker."""
    from bench.lab.mqtt import client, start_barrier, sync_topic

    ident = f"test-retained-{os.getpid()}-{time.monotonic_ns()}"
    got: dict[str, bytes] = {}
    async with client(broker, ident) as c:
        for t in topics:
            await c.subscribe(t, qos=1)
        token = await start_barrier(c, broker.prefix)
        async with asyncio.timeout(60):
            async for msg in c.messages:
                payload = msg.payload if isinstance(msg.payload, bytes | bytearray) else b""
                if msg.topic.value == sync_topic(broker.prefix, ident) and payload == token:
                    return got
                if msg.retain:
                    got[msg.topic.value] = bytes(payload)
    return got


def add_users(m: Mosquitto, users: dict[str, str]) -> None:
    """More broker users (benches of a large lab); the broker reloads its password file on SIGHUP."""
    for user, pw in users.items():
        subprocess.run(["mosquitto_passwd", "-b", str(m.dir / "passwd"), user, pw], check=True, capture_output=True)
    PASSWORDS.update(users)
    if m.proc is not None:
        m.proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)


class Cutter:
    """A TCP relay between agents and the broker whose link can be cut for a while: every
    connection through it is closed at once and new ones are refused until the cut ends (a cable
    pulled and plugged back)."""

    def __init__(self, target_port: int) -> None:
        import threading

        self.target = target_port
        self.port = free_port()
        self._down_until = 0.0
        self._socks: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading

        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            if time.monotonic() < self._down_until:
                conn.close()
                continue
            try:
                up = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                conn.close()
                continue
            with self._lock:
                self._socks |= {conn, up}
            threading.Thread(target=self._pump, args=(conn, up), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, conn), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self, seconds: float) -> None:
        self._down_until = time.monotonic() + seconds
        with self._lock:
            socks, self._socks = self._socks, set()
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self._server.close()
        self.cut(0)


async def finished_history(m: Mosquitto, n: int, bench_id: str = "bench-a", window: int = 1000) -> list[str]:
    """``n`` finished jobs as the lab keeps them: the job record, the bench's claim and PASS result
    (published as that bench: its broker user may write only under its own topic)."""
    from bench.lab.client import make_job, sequence_ref
    from bench.lab.mqtt import client
    from bench.lab.protocol import Claim, Result, encode

    ref = sequence_ref(str(SHORT))
    jobs = [make_job(ref, {"hold": "1 s"}, {}) for _ in range(n)]
    async with client(m.broker("operator"), f"history-op-{time.monotonic_ns()}") as op:
        for i in range(0, n, window):
            await asyncio.gather(
                *(op.publish(f"lab/jobs/{j.job}", encode(j), qos=1, retain=True) for j in jobs[i : i + window])
            )
    async with client(m.broker(bench_id), f"history-{bench_id}-{time.monotonic_ns()}") as b:
        for i in range(0, n, window):
            chunk = jobs[i : i + window]
            await asyncio.gather(
                *(
                    b.publish(
                        f"lab/benches/{bench_id}/claims/{j.job}",
                        encode(Claim(job=j.job, attempt=1, bench=bench_id)),
                        qos=1,
                        retain=True,
                    )
                    for j in chunk
                )
            )
            await asyncio.gather(
                *(
                    b.publish(
                        f"lab/benches/{bench_id}/results/{j.job}",
                        encode(Result(job=j.job, bench=bench_id, attempt=1, verdict="PASS", run_id=f"run-{j.job}")),
                        qos=1,
                        retain=True,
                    )
                    for j in chunk
                )
            )
    return [j.job for j in jobs]


def in_step(step: str) -> Callable[[str, object], bool]:
    """For ``watch_until``: the job's bench runs this step of its method."""
    from bench.lab.protocol import State

    return lambda kind, obj: isinstance(obj, State) and obj.step == step


async def watch_until(
    broker: Any,
    job: Any,
    ready: Callable[[str, object], bool],
    *,
    also: Callable[[str, object], None] | None = None,
    give_up_after: float = 60,
    within: float = 30,
) -> asyncio.Task[Any]:
    """Start watching a job, submit it, and return the watcher (its result is the job's) once
    ``ready`` holds for something the watcher was told; ``also`` hears everything it is told."""
    from bench.lab import client

    seen = asyncio.Event()

    def on(kind: str, obj: object) -> None:
        if ready(kind, obj):
            seen.set()
        if also is not None:
            also(kind, obj)

    watcher = asyncio.create_task(client.watch(broker, job.job, on, give_up_after=give_up_after))
    await asyncio.sleep(0.5)
    await client.submit(broker, [job])
    await asyncio.wait_for(seen.wait(), within)
    return watcher
