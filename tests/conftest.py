"""Shared helpers: run the real ``bench`` command line in a subprocess, as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from drivers import can_inproc

ROOT = Path(__file__).resolve().parent.parent
SIM_STATION = ROOT / "stations" / "sim.yaml"
OVERCHARGE = ROOT / "sequences" / "r100" / "overcharge.yaml"


@dataclass
class Completed:
    rc: int
    out: str
    err: str

    def run_dir(self) -> Path:
        for line in self.out.splitlines():
            if line.startswith("run folder: "):
                return Path(line.removeprefix("run folder: ").strip())
        raise AssertionError(f"no run folder in output:\n{self.out}\n{self.err}")

    def result(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.run_dir() / "result.json").read_text())
        return data


# Interlock latches of the tests live in their own folder, never in the user's.
STATE_DIR = Path(tempfile.mkdtemp(prefix="bench-state-"))
os.environ["BENCH_STATE_DIR"] = str(STATE_DIR)
# So do the results database every run writes at its end and the outbox of runs it could not take
# (docs/results.md): set here, at import, so the subprocesses the tests start inherit them too.
DATA_DIR = Path(tempfile.mkdtemp(prefix="bench-data-"))
os.environ["XDG_DATA_HOME"] = str(DATA_DIR)
os.environ["BENCH_RESULTS"] = f"sqlite:///{DATA_DIR / 'results.db'}"


def bench(*args: str | Path, cwd: Path = ROOT, timeout: float = 120, env: dict[str, str] | None = None) -> Completed:
    env = dict(os.environ, COLUMNS="200", **(env or {}))
    proc = subprocess.run(
        [sys.executable, "-m", "bench.cli", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    return Completed(proc.returncode, proc.stdout, proc.stderr)


def start_bench(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``bench ARGS`` as a process the test reads line by line and signals (unbuffered output)."""
    return subprocess.Popen(
        [sys.executable, "-m", "bench.cli", *map(str, args)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **(env or {})},
    )


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    path = tmp_path / "reports"
    path.mkdir()
    return path


def _open_can_nodes() -> dict[int, can_inproc.InProcBus]:
    return {id(bus): bus for peers in can_inproc._channels.values() for bus in peers}


@pytest.fixture(autouse=True)
def no_can_node_left_open() -> Iterator[None]:
    """A test leaves no in-process CAN node open (a plant's stop(), a test's own node): an open
    node keeps its channel, with whatever it carries and a bus-off state, alive for later tests."""
    before = _open_can_nodes()
    yield
    left = [bus for key, bus in _open_can_nodes().items() if key not in before]
    if left:
        for bus in left:
            bus.shutdown()  # the next test starts on clean channels
        channels = ", ".join(sorted({bus.channel_info for bus in left}))
        pytest.fail(f"{len(left)} in-process CAN node(s) left open on {channels}: shut every bus down")


@pytest.fixture(scope="session")
def station_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A station signing key of the tests' own (``bench keys init``)."""
    folder = tmp_path_factory.mktemp("key")
    assert bench("keys", "init", "--dir", folder).rc == 0
    return folder


@pytest.fixture(scope="session")
def signed_run(tmp_path_factory: pytest.TempPathFactory, station_key: Path) -> Completed:
    """One run of the short sequence signed with ``station_key``, its PDF included. Shared by the
    signing and verify tests: a test that tampers with it works on a copy."""
    from tests.report_support import short_sequence, station_copy  # it imports this module

    tmp = tmp_path_factory.mktemp("signed")
    r = bench(
        "run", short_sequence(tmp), "--station", station_copy(tmp), "--reports", tmp / "reports", "-q",
        "-p", "hold=30 s",
        env={"BENCH_KEY_DIR": str(station_key)},
    )  # fmt: skip
    assert r.rc == 0, r.out + r.err
    assert (r.run_dir() / "manifest.sig").is_file()
    return r
