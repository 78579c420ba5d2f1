"""The browser station's audit log: every action taken in the UI, with the user, the role and the time.

One JSON object per line, appended and synced to disk before the action's answer goes back, in
the state folder next to the station's interlock log (``<state>/<station>.ui-audit.jsonl``). A
password never reaches it: callers pass what was done, never what was typed to sign in.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from bench.clock import utc
from bench.errors import BenchError
from bench.interlock import state_dir
from bench.lab.archive import append_durably

TAIL_BLOCK = 64 * 1024  # bytes read from the end per step when looking for the last lines


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()  # the web app writes from its loop and from worker threads

    def write(self, user: str, role: str, action: str, **details: Any) -> None:
        """Append one line ``{"t", "user", "role", "action", ...details}`` and sync it to disk; a log that
        cannot take it is one BenchError line (and keeps no part of the line)."""
        entry = {"t": utc(time.time()), "user": user, "role": role, "action": action, **details}
        line = json.dumps(entry, ensure_ascii=False, default=str).encode("utf-8") + b"\n"
        with self._lock:
            append_durably(self.path, line, what="audit log", unless=f"action '{action}' not taken", mode=0o600)

    def tail(self, n: int = 50) -> list[dict[str, Any]]:
        """The last ``n`` entries, oldest first; [] when nothing was logged yet. A damaged line is skipped."""
        if n <= 0:
            return []
        try:
            with open(self.path, "rb") as f:
                end = f.seek(0, os.SEEK_END)
                start = end
                data = b""
                # Read back from the end until n full lines are in hand (or the file's start).
                while start > 0 and data.count(b"\n") <= n:
                    start = max(0, start - TAIL_BLOCK)
                    f.seek(start)
                    data = f.read(end - start)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise BenchError(f"audit log {self.path} cannot be read ({exc.strerror or exc})") from None
        lines = data.splitlines()
        if start > 0:
            lines = lines[1:]  # the first may be cut
        out: deque[dict[str, Any]] = deque(maxlen=n)
        for raw in lines:
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            if isinstance(entry, dict):
                out.append(entry)
        return list(out)


def audit_path(station_id: str) -> Path:
    """The station's audit log, in the state folder (``BENCH_STATE_DIR``) beside its interlock log."""
    return state_dir() / f"{station_id}.ui-audit.jsonl"
