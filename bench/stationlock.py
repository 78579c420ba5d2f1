"""One run at a time on a station: an exclusive lock that dies with the process holding it.

Two runs that command one rig corrupt each other's verdicts and may leave it unsafe, so every
entry point (``bench run``, campaigns, the lab agent) takes the station through ``bench/runner.py``,
which holds this lock from before the first device moves until the record is sealed.

The lock is ``flock`` on ``<BENCH_STATE_DIR>/<station id>.lock``, the folder of the interlock
latch. The kernel drops it when its process ends, however it ends (SIGKILL, a crash, a power
cut), so a file left behind by a dead run never blocks the next. The holder's pid, user, run id
and start time are written into the file after it is taken, for the refusal message only: the
flock alone decides who holds the station.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.interlock import now_utc, state_dir, unwritable_state


class StationBusy(BenchError):
    """Another run holds the station; nothing was run."""

    exit_code = 7


def lock_path(station_id: str, folder: Path | None = None) -> Path:
    return (folder or state_dir()) / f"{station_id}.lock"


def _holder_text(path: Path) -> str:
    try:
        holder: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        # Taken a moment ago and not yet written, or unreadable: the flock still says it is held.
        return "held by another process (holder not recorded yet)"
    return (
        f"held by pid {holder.get('pid', '?')} (user {holder.get('user', '?')}), "
        f"run {holder.get('run_id', '?')} ({holder.get('what', '?')}), since {holder.get('since', '?')}"
    )


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (e.g. a container)
        return str(os.getuid())


def _flocked(path: Path) -> bool | None:
    """Whether a process holds a flock on ``path``, from the kernel's lock table; None where there is none."""
    try:
        table = Path("/proc/locks").read_text(encoding="ascii", errors="replace")
        ino = path.stat().st_ino
    except OSError:
        return None
    # "1: FLOCK  ADVISORY  WRITE 8199 fe:00:2146590 0 EOF": the file is the inode after the last ':'.
    # The device is not compared: on an overlay file system the table names the layer's device.
    for line in table.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5].rsplit(":", 1)[-1] == str(ino):
            return True
    return False


def holder(station_id: str, folder: Path | None = None) -> str | None:
    """None when no run holds the station, else who does (the text a refused run would show).

    Read from the kernel's lock table, never by taking the lock: a probe that held it for an
    instant could make a run starting at that instant be refused as busy. Without a lock table
    (not Linux) it probes with a shared lock, released at once.
    """
    path = lock_path(station_id, folder)
    if not path.exists():
        return None
    held = _flocked(path)
    if held is None:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            held = False
        except BlockingIOError:
            held = True
        finally:
            os.close(fd)
    return _holder_text(path) if held else None


@contextlib.contextmanager
def hold_station(station_id: str, run_id: str, what: str, folder: Path | None = None) -> Iterator[Path]:
    """Hold station ``station_id`` for the block, or raise StationBusy naming the holder."""
    path = lock_path(station_id, folder)
    # Opened read-only: a flock needs no write access, and an fd open for writing would keep the
    # state folder's file system from being remounted read-only under a running bench.
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StationBusy(f"station '{station_id}' is busy: {_holder_text(path)}; nothing was run") from None
        holder = {"pid": os.getpid(), "user": _user(), "run_id": run_id, "what": what, "since": now_utc()}
        try:
            path.write_text(json.dumps(holder) + "\n", encoding="utf-8")
        except OSError as exc:
            raise unwritable_state(path.parent, exc) from None
        yield path
    finally:
        os.close(fd)  # releases the flock
