"""The hash-chained event log of a run (``events.jsonl``).

Each line is one compact JSON object whose last key ``prev`` is the sha256 of the exact bytes
of the line before it (``GENESIS`` for the first). Changing, removing or reordering any line
therefore breaks the chain at that point, and the manifest pins the line count and the hash
of the last line so that losing lines at the end is detected too (see ``verify.py``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import threading
from collections.abc import Callable
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from pathlib import Path
from typing import Any

GENESIS = "0" * 64

# Keys the log itself writes on every line; a caller field with one of these names would make
# the line ambiguous (or, for "prev", would silently replace the chain link).
RESERVED_KEYS = frozenset({"seq", "t", "kind", "prev"})


def line_hash(line: bytes) -> str:
    """The chain hash of one line: sha256 of its exact bytes without the trailing newline."""
    return hashlib.sha256(line).hexdigest()


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None, recursively.

    Only called on the slow path (after ``allow_nan=False`` refused the line), because strict
    JSON has no NaN/Infinity and a verifier in another language must be able to parse the log.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _refuse(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _encoder() -> Callable[[dict[str, Any]], str]:
    """``json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)``, made once.

    ``json.dumps`` with arguments builds a new encoder for every call, which costs as much as
    encoding a whole event line. The C encoder it builds is made once here instead, with the same
    arguments, so the bytes are the same. Without the circular-reference check: an event holding
    itself could not be encoded either way (the slow path below recursed without end before).
    """
    if c_make_encoder is None:  # a Python without the C accelerator
        return functools.partial(json.dumps, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    encode = c_make_encoder(None, _refuse, encode_basestring, None, ":", ",", False, False, False)
    return lambda obj: "".join(encode(obj, 0))


_dumps = _encoder()


def encode_line(obj: dict[str, Any]) -> bytes:
    """The exact bytes of one log line (without newline) for ``obj``."""
    try:
        text = _dumps(obj)
    except ValueError:
        text = _dumps(_finite(obj))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (e.g. from a badly decoded device string) cannot be UTF-8 encoded;
        # the ASCII-escaped form is still valid JSON and parses back to the same value.
        return json.dumps(_finite(obj), separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def event_line(seq: int, t: float, kind: str, fields: dict[str, Any], prev: str) -> bytes:
    """``encode_line({"seq": seq, "t": t, "kind": kind, **fields, "prev": prev})``: the same bytes.

    The log's own keys are written around the encoded fields instead of building that dictionary
    and encoding the chain hash through the encoder: most events are small (``step_started``,
    ``step_ended``), and for them that halves the cost of the line. Whatever the short way cannot
    write as ``json.dumps`` would (a time that is not a finite number, a non-finite float or a
    lone surrogate among the fields) takes the general way, ``encode_line``.
    """
    if (t.__class__ is float or t.__class__ is int) and t - t == 0 and isinstance(kind, str):
        try:
            body = _dumps(fields)
            head = f'{{"seq":{seq:d},"t":{t!r},"kind":{encode_basestring(kind)}'
            text = f'{head},{body[1:-1]},"prev":"{prev}"}}' if fields else f'{head},"prev":"{prev}"}}'
            return text.encode("utf-8")
        except (ValueError, UnicodeEncodeError):
            pass
    return encode_line({"seq": seq, "t": t, "kind": kind, **fields, "prev": prev})


class EventLog:
    """Append-only, hash-chained JSON-lines log.

    Every line is handed to the OS as soon as it is appended (unbuffered binary writes), so a
    crash of the controller loses at most the line being written; ``close`` adds the fsync.
    The hash is computed from the very bytes that are written, so the file never has to be
    re-read.
    """

    def __init__(self, path: Path) -> None:
        self._path = Path(path)
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        self._file = open(fd, "wb", buffering=0)  # noqa: SIM115 - lives until close()
        self._last_hash = GENESIS
        self._count = 0
        self._size = 0  # bytes of whole lines written (the file was truncated at open)
        self._closed = False
        # Appends normally come from the event-loop thread only; the lock is cheap insurance
        # against a driver thread logging directly, which would otherwise fork the chain.
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self._path

    @property
    def last_hash(self) -> str:
        """Hash of the last line written (``GENESIS`` while the log is empty)."""
        return self._last_hash

    @property
    def count(self) -> int:
        """Number of lines written."""
        return self._count

    @property
    def closed(self) -> bool:
        return self._closed

    def append(self, kind: str, t: float, **fields: Any) -> str:
        """Write one event line and return its hash.

        ``t`` is seconds since run start in event-loop time; it is rounded to 1 µs so that the
        log does not pretend to a resolution the clock does not have.
        """
        return self.append_fields(kind, t, fields)

    def append_fields(self, kind: str, t: float, fields: dict[str, Any]) -> str:
        """``append`` with the fields as one dictionary (not copied again on the way)."""
        if not RESERVED_KEYS.isdisjoint(fields):
            clash = RESERVED_KEYS.intersection(fields)
            raise ValueError(f"event field name(s) reserved by the log: {', '.join(sorted(clash))}")
        with self._lock:
            if self._closed:
                raise ValueError(f"event log {self._path} is closed")
            line = event_line(self._count, round(t, 6), kind, fields, self._last_hash)
            digest = hashlib.sha256(line).hexdigest()  # line_hash(), inlined: this runs for every event
            data = line + b"\n"
            try:
                written = self._file.write(data)
                if written != len(data):
                    self._finish(data, written)
            except OSError:
                # A full disk can leave part of the line behind; cut it off so that the file
                # stays a whole, verifiable chain up to the last line that was written.
                with contextlib.suppress(OSError):
                    os.ftruncate(self._file.fileno(), self._size)
                raise
            self._size += len(data)
            self._last_hash = digest
            self._count += 1
            return digest

    def _finish(self, data: bytes, written: int | None) -> None:
        """FileIO.write may in principle write less than asked; a short line would break the
        chain for every later line, so finish it."""
        view = memoryview(data)
        while True:
            if written is None:  # only for non-blocking files, which this is not
                raise OSError(f"could not write to {self._path}")
            view = view[written:]
            if not view:
                return
            written = self._file.write(view)

    def close(self) -> None:
        """Flush to stable storage and close. Safe to call more than once."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._file.flush()
                os.fsync(self._file.fileno())
            finally:
                self._file.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
