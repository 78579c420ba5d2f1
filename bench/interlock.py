"""The station interlock: a supervisor trip latches until someone resets it, with a reason.

The latch lives in a state folder outside the run folders (``BENCH_STATE_DIR``, default
``~/.local/state/hil-bench``), so it holds across processes: the next ``bench run`` on the
tripped station is refused. Trips, refusals and resets are appended to a hash-chained log
``<station>.interlock.jsonl`` next to the latch.

A latch that cannot be written must not let the next run start (fail closed): every run checks
that the state folder takes a file before any device moves, and is refused while it does not.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.clock import utc
from bench.errors import BenchError, LoadError
from bench.events import EventKind
from bench.record.chain import GENESIS, encode_line, line_hash


class InterlockTripped(BenchError):
    """A run was refused because the station's interlock is latched."""

    exit_code = 6


class StateFolderUnwritable(InterlockTripped):
    """The state folder takes no file, so a trip could not latch: every run is refused until it does."""


def unwritable_state(base: Path, exc: OSError) -> StateFolderUnwritable:
    return StateFolderUnwritable(
        f"state folder {base} is not writable ({exc.strerror or exc}): a supervisor trip could not latch "
        "the station interlock, so no run starts; make it writable (BENCH_STATE_DIR), and read the last "
        f"run's record for an '{EventKind.INTERLOCK_NOT_LATCHED}' event first"
    )


def state_dir() -> Path:
    env = os.environ.get("BENCH_STATE_DIR")
    base = Path(env) if env else Path.home() / ".local" / "state" / "hil-bench"
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise unwritable_state(base, exc) from None
    return base


def check_writable(folder: Path) -> None:
    """Refuse to start while ``folder`` cannot take a latch: create, write, sync and remove a file."""
    try:
        fd, name = tempfile.mkstemp(prefix=".writable-", dir=folder)
        try:
            os.write(fd, b"probe\n")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(name)
    except OSError as exc:
        raise unwritable_state(folder, exc) from None


def now_utc() -> str:
    return utc(time.time())


class Interlock:
    def __init__(self, station_id: str, folder: Path | None = None) -> None:
        self.station_id = station_id
        self.folder = folder or state_dir()
        self.latch = self.folder / f"{station_id}.latch.json"
        self.log = self.folder / f"{station_id}.interlock.jsonl"

    def state(self) -> dict[str, Any] | None:
        if not self.latch.exists():
            return None
        try:
            data: dict[str, Any] = json.loads(self.latch.read_text())
        except (OSError, ValueError):
            # A latch we cannot read is still a latch: refusing is the safe side.
            return {"reason": "interlock file unreadable", "t_utc": "", "run_id": ""}
        return data

    def _append(self, kind: str, **fields: Any) -> None:
        prev = GENESIS
        if self.log.exists():
            lines = self.log.read_bytes().splitlines()
            if lines:
                prev = line_hash(lines[-1])
        line = encode_line({"kind": kind, "t_utc": now_utc(), "station": self.station_id, **fields, "prev": prev})
        with open(self.log, "ab") as f:
            f.write(line + b"\n")
            f.flush()
            os.fsync(f.fileno())

    def trip(self, reason: str, run_id: str) -> None:
        data = {"reason": reason, "t_utc": now_utc(), "run_id": run_id}
        tmp = self.latch.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, self.latch)
        self._append("tripped", reason=reason, run_id=run_id)

    def check(self, what: str) -> None:
        """Refuse ``what`` (e.g. a run) while the latch holds; the refusal is logged."""
        st = self.state()
        if st is None:
            return
        self._append("refused", what=what, latched_reason=st.get("reason", ""))
        raise InterlockTripped(
            f"station '{self.station_id}' is tripped since {st.get('t_utc', '?')} ({st.get('reason', '?')}); "
            f'clear it with: bench reset-interlock --station <file> --reason "..."'
        )

    def reset(self, reason: str, by: str) -> dict[str, Any] | None:
        check_writable(self.folder)  # a reset that cannot be recorded is refused, in one line
        st = self.state()
        if st is not None:
            self.latch.unlink()
        self._append("reset", reason=reason, by=by, was=st)
        return st


def reset_station(station_id: str, reason: str, by: str, asked_as: str = "--reason") -> str:
    """Reset the station's latch with a recorded reason (refused without one); the outcome in one line.

    ``asked_as`` names where the reason was asked for, in the refusal (the option, a form field).
    """
    if not reason.strip():
        raise LoadError(f"{asked_as} must say why it is safe to run again")
    lock = Interlock(station_id)
    was = lock.reset(reason, by)
    if was is None:
        return f"station '{station_id}' was not tripped; reset recorded in {lock.log}"
    return f"station '{station_id}' reset (was tripped: {was.get('reason')}); recorded in {lock.log}"
