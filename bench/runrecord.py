"""The folder of one run: inputs copied in, the hash-chained event log, raw CAN as BLF, outputs.

Times in the record are seconds since the run started, on the event-loop clock (virtual or
wall). The wall-clock start is written once, in the first event, so the record can be placed
in calendar time without letting the wall clock into the engine.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import can

from bench.events import EventKind
from bench.record import EventLog, file_sha256, write_junit, write_manifest, write_report_html
from bench.record.blf import FrameWriter
from bench.result import RunResult

if TYPE_CHECKING:
    from bench.sequence import Sequence


class RunRecorder:
    def __init__(self, run_dir: Path, t0: float, start_epoch: float, sequence: Sequence | None = None) -> None:
        self.dir = run_dir
        # The sequence as loaded for the run: the report takes the limits' origins from it rather
        # than parsing the copy in inputs/ again (seconds for a long sequence).
        self.sequence = sequence
        self.dir.mkdir(parents=True, exist_ok=False)
        (self.dir / "inputs").mkdir()
        self.t0 = t0
        # BLF headers keep milliseconds; round so frame times read back exactly.
        self.start_epoch = round(start_epoch, 3)
        self.log = EventLog(self.dir / "events.jsonl")
        self.frames = 0
        self._last_frame_t = t0
        self._blf: FrameWriter | None = FrameWriter(str(self.dir / "can.blf"))
        # Frame offsets are taken from the run start on the loop clock; the header gets the epoch at stop().
        self._blf.start_timestamp = t0
        self.listeners: list[Any] = []
        # Wall time of the post-run work (MF4, report, PDF), for benchmarks/report_archive.py.
        self.timings: dict[str, float] = {}
        self.render_error: str | None = None
        # The 17025 HTML was written and its PDF is wanted: typeset after the seal (bench/finish.py).
        self.pdf_pending = False
        self.pdf_error: str | None = None  # what failed typesetting it (also in report-pdf.json)
        # The first write that failed (a full disk, an I/O error). The run goes on to its safe
        # state regardless, and the engine turns the verdict into ERROR naming this failure.
        self.write_error: str | None = None
        self.events_lost = 0
        self.frames_lost = 0
        self.on_write_failure: Callable[[str], None] | None = None
        self._last_rel = 0.0
        self._reserve = _set_aside(self.dir / ".reserve")

    def note_write_failure(self, what: str, exc: OSError) -> None:
        """The first failed write: free the space set aside for the end of the record and spend it
        on what proves the end of the run (events other than snapshots, the result, the manifest);
        raw CAN traffic and snapshots are dropped from here on and counted."""
        if self.write_error is not None:
            return
        self.write_error = f"{what}: {exc}"
        self._release_reserve()
        blf, self._blf = self._blf, None
        if blf is not None:
            with contextlib.suppress(Exception):  # its buffered frames are given up with it
                blf.file.close()
        # The manifest is written after the event log is closed: its failure has no log to go in,
        # and the record is then unsealed, which `bench verify` reports.
        with contextlib.suppress(OSError):
            if not self.log.closed:
                self.log.append(
                    EventKind.RECORD_WRITE_FAILED,
                    self._last_rel,
                    error=self.write_error,
                    note="the run is stopped; CAN traffic and snapshots are no longer recorded",
                )
        if self.on_write_failure is not None:
            self.on_write_failure(self.write_error)

    def _release_reserve(self) -> None:
        fd, self._reserve = self._reserve, None
        if fd is not None:
            os.close(fd)

    def copy_input(self, path: Path, name: str | None = None) -> str:
        target = self.dir / "inputs" / (name or path.name)
        if target.exists():
            target = target.with_name(f"{target.stem}-{len(list(target.parent.iterdir()))}{target.suffix}")
        shutil.copyfile(path, target)
        return target.relative_to(self.dir).as_posix()

    def event(self, kind: EventKind, t: float, **fields: Any) -> None:
        """Record one event; never raises for a failed write (the caller may be the safe state)."""
        self.event_fields(kind, t, fields)

    def event_fields(self, kind: EventKind, t: float, fields: dict[str, Any]) -> None:
        """``event`` with the fields as one dictionary (the engine's path: not copied on the way)."""
        rel = t - self.t0
        self._last_rel = rel
        if self.write_error is not None and kind == EventKind.SNAPSHOT:
            self.events_lost += 1  # the space left is kept for the events that prove the end
        else:
            self._append(kind, rel, fields)
        if not self.listeners:
            return
        for listener in list(self.listeners):
            try:
                listener(kind, rel, fields)
            except OSError:
                # A console that cannot be written to (a full disk behind a redirect, a closed
                # pipe) must not stop the run: it stops hearing about it instead.
                self.listeners.remove(listener)

    def _append(self, kind: EventKind, rel: float, fields: dict[str, Any]) -> None:
        try:
            self.log.append_fields(kind, rel, fields)
            return
        except OSError as exc:
            first = self.write_error is None
            self.note_write_failure("events.jsonl", exc)
        if first:
            # Once more, into the space that the first failure freed (a torn line was cut off).
            with contextlib.suppress(OSError):
                self.log.append_fields(kind, rel, fields)
                return
        self.events_lost += 1

    def frame(self, msg: can.Message, tx: bool) -> None:
        blf = self._blf
        if blf is None:
            if self.write_error is not None:
                self.frames_lost += 1
            return
        if tx == msg.is_rx:
            msg = can.Message(
                timestamp=msg.timestamp,
                arbitration_id=msg.arbitration_id,
                is_extended_id=msg.is_extended_id,
                dlc=msg.dlc,
                data=msg.data,
                is_fd=msg.is_fd,
                is_rx=not tx,
                channel=msg.channel,
            )
        try:
            blf.on_message_received(msg)
        except OSError as exc:
            # Called from the CAN link's receive path: a full disk must not look like a bus fault.
            self.note_write_failure("can.blf", exc)
            self.frames_lost += 1
            return
        self.frames += 1
        self._last_frame_t = msg.timestamp

    def frames_received(self, msgs: list[can.Message]) -> None:
        """Received frames in bus order: what ``frame(msg, False)`` for each would record, in one call."""
        blf = self._blf
        if blf is None or not all(map(attrgetter("is_rx"), msgs)):
            # No record left, or a frame not marked received (its direction is set frame by frame).
            for msg in msgs:
                self.frame(msg, False)
            return
        before = blf.object_count
        try:
            blf.write_frames(msgs)
        except OSError as exc:
            # Counted as frame by frame: the frame whose write failed and those after it are lost.
            written = blf.object_count - before - 1
            self.note_write_failure("can.blf", exc)
            self.frames += written
            self.frames_lost += len(msgs) - written
            if written > 0:
                self._last_frame_t = msgs[written - 1].timestamp
            return
        if msgs:
            self.frames += len(msgs)
            self._last_frame_t = msgs[-1].timestamp

    def close_traffic(self) -> None:
        blf, self._blf = self._blf, None
        if blf is None:
            return
        blf.start_timestamp = self.start_epoch
        blf.stop_timestamp = self.start_epoch + (self._last_frame_t - self.t0)
        try:
            blf.stop()
        except OSError as exc:
            self.note_write_failure("can.blf", exc)

    def write_outputs(self, result: RunResult, full: bool = True) -> dict[str, str]:
        """Write the outputs of the run; the SHA-256 of each file written.

        ``result.json`` and ``junit.xml`` are the record: an ``OSError`` writing them is raised.
        The report (17025 HTML, the MF4 archive copy) is not: what fails there is kept in
        ``render_error``, the plain report stands in for it, the result is marked
        ``report_degraded``, and the run is still sealed. The PDF is not written here: it is
        typeset from the sealed ``report.html`` once the record is final (``pdf_pending``).
        """
        self._write_result(result)
        write_junit(result, self.dir / "junit.xml")
        names = ["result.json", "junit.xml", "report.html", "can.blf"]
        if full:
            names += self._render_full(result)
        else:
            # The record stays complete (events, traffic, result); `bench report` can render it later.
            self._plain_report(result)
        if self.render_error is not None:
            result.report_degraded = self.render_error
            # Replaced whole or not at all: a disk too full for the mark keeps the first result.json.
            with contextlib.suppress(OSError):
                self._write_result(result)
        return {name: file_sha256(self.dir / name) for name in names if (self.dir / name).is_file()}

    def _write_result(self, result: RunResult) -> None:
        target = self.dir / "result.json"
        tmp = target.with_name(".result.json.tmp")
        try:
            tmp.write_text(result.model_dump_json(indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def _report_failed(self, what: str) -> None:
        self.render_error = "; ".join(filter(None, [self.render_error, what]))

    def _plain_report(self, result: RunResult) -> None:
        try:
            write_report_html(result, self.dir / "report.html")
        except OSError as exc:
            self._report_failed(f"report.html: {exc}")

    def _render_full(self, result: RunResult) -> list[str]:
        """The 17025 report and the MF4 archive copy; the names of the files written."""
        names: list[str] = []
        timings = self.timings
        archive: threading.Thread | None = None
        mf4_error: list[str] = []
        if (self.dir / "can.blf").is_file():
            # The archive copy of the raw traffic, converted after the run (bench/record/mf4.py says
            # why). In a thread: it is numpy and zlib work that releases the GIL, so it overlaps
            # with the report rendering below on a second core.
            from bench.record.mf4 import blf_to_mf4

            def convert() -> None:
                t0 = time.perf_counter()
                try:
                    blf_to_mf4(self.dir / "can.blf", self.dir / "can.mf4", sorted((self.dir / "inputs").glob("*.dbc")))
                except Exception as exc:  # the BLF stays the raw record; the run is still sealed
                    mf4_error.append(f"mf4: {type(exc).__name__}: {exc}")
                timings["mf4_s"] = time.perf_counter() - t0

            # A daemon: an emergency exit while the record is written must not wait for the archive.
            archive = threading.Thread(target=convert, name="mf4-archive", daemon=True)
            archive.start()
        t = time.perf_counter()
        try:
            from bench.report.render import build_html

            text = build_html(self.dir, sequence=self.sequence)
            (self.dir / "report.html").write_text(text, encoding="utf-8")
        except Exception as exc:
            # The record must be sealed whatever the renderer does: fall back to the plain report,
            # mark the report degraded and say what failed rather than lose the run.
            self._report_failed(f"report: {type(exc).__name__}: {exc}")
            self._plain_report(result)
            text = ""
        timings["html_s"] = time.perf_counter() - t
        self.pdf_pending = bool(text) and os.environ.get("BENCH_REPORT_PDF", "1") != "0" and _pdf_available()
        if archive is not None:
            archive.join()
            if mf4_error:
                self._report_failed("; ".join(mf4_error))
            elif (self.dir / "can.mf4").is_file():
                names.append("can.mf4")
        return names

    def seal(self, info: dict[str, Any]) -> Path:
        from bench.record.signing import load_key, sign_file

        self.log.close()
        key = load_key()
        signer = {"algorithm": "Ed25519", "public_key": key.public_b64, "fingerprint": key.fingerprint} if key else None
        try:
            path = write_manifest(self.dir, events=self.log, info={**info, "signer": signer})
            if key is not None:
                sign_file(path, key)
        finally:
            self._release_reserve()
        return path

    def abandon(self) -> None:
        """Close what is open after a failure; the folder stays for inspection."""
        try:
            self.close_traffic()
        finally:
            self._release_reserve()
            self.log.close()


# Set aside at the start of a run, given back at the first failed write: room for the end of the
# record (the safe-state events, result.json, the plain report, the manifest) on a full disk.
RESERVE_BYTES = 256 * 1024


def _set_aside(path: Path) -> int | None:
    """An open, already unlinked file of RESERVE_BYTES: closing it frees the space, and a
    process that dies frees it too, leaving nothing behind in the run folder."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:
        return None
    try:
        os.unlink(path)
        os.write(fd, bytes(RESERVE_BYTES))  # written, not sparse: the file system counts it now
    except OSError:
        os.close(fd)  # no room even for this: the run goes on without a reserve
        return None
    return fd


def _pdf_available() -> bool:
    """Whether the typesetter (Typst) loads here; without it the HTML report stands alone."""
    try:
        import typst  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))
