"""The folder of one run: inputs copied in, the hash-chained event log, raw CAN as BLF, outputs.

Times in the record are seconds since the run started, on the event-loop clock (virtual or
wall). The wall-clock start is written once, in the first event, so the record can be placed
in calendar time without letting the wall clock into the engine.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import can

from bench.record import EventLog, file_sha256, write_junit, write_manifest, write_report_html
from bench.result import RunResult


class RunRecorder:
    def __init__(self, run_dir: Path, t0: float, start_epoch: float) -> None:
        self.dir = run_dir
        self.dir.mkdir(parents=True, exist_ok=False)
        (self.dir / "inputs").mkdir()
        self.t0 = t0
        # BLF headers keep milliseconds; round so frame times read back exactly.
        self.start_epoch = round(start_epoch, 3)
        self.log = EventLog(self.dir / "events.jsonl")
        self.frames = 0
        self._last_frame_t = t0
        self._blf: can.BLFWriter | None = can.BLFWriter(str(self.dir / "can.blf"))
        # Frame offsets are taken from the run start on the loop clock; the header gets the epoch at stop().
        self._blf.start_timestamp = t0
        self.listeners: list[Any] = []
        # Wall time of the post-run work (MF4, report, PDF), for benchmarks/report_archive.py.
        self.timings: dict[str, float] = {}
        self.render_error: str | None = None

    def copy_input(self, path: Path, name: str | None = None) -> str:
        target = self.dir / "inputs" / (name or path.name)
        if target.exists():
            target = target.with_name(f"{target.stem}-{len(list(target.parent.iterdir()))}{target.suffix}")
        shutil.copyfile(path, target)
        return target.relative_to(self.dir).as_posix()

    def event(self, kind: str, t: float, **fields: Any) -> None:
        rel = t - self.t0
        self.log.append(kind, rel, **fields)
        for listener in self.listeners:
            listener(kind, rel, fields)

    def frame(self, msg: can.Message, tx: bool) -> None:
        blf = self._blf
        if blf is None:
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
        blf.on_message_received(msg)
        self.frames += 1
        self._last_frame_t = msg.timestamp

    def close_traffic(self) -> None:
        blf, self._blf = self._blf, None
        if blf is None:
            return
        blf.start_timestamp = self.start_epoch
        blf.stop_timestamp = self.start_epoch + (self._last_frame_t - self.t0)
        blf.stop()

    def write_outputs(self, result: RunResult, full: bool = True) -> dict[str, str]:
        (self.dir / "result.json").write_text(result.model_dump_json(indent=2) + "\n", encoding="utf-8")
        write_junit(result, self.dir / "junit.xml")
        names = ["result.json", "junit.xml", "report.html", "can.blf"]
        if not full:
            # The record stays complete (events, traffic, result); `bench report` can render it later.
            write_report_html(result, self.dir / "report.html")
            return {name: file_sha256(self.dir / name) for name in names}
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

            archive = threading.Thread(target=convert, name="mf4-archive")
            archive.start()
        t = time.perf_counter()
        try:
            from bench.report.render import build_html

            text = build_html(self.dir)
            (self.dir / "report.html").write_text(text, encoding="utf-8")
        except Exception as exc:
            # The record must be sealed whatever the renderer does: fall back to the plain report
            # and say so in the event log (run_ended) rather than lose the run.
            write_report_html(result, self.dir / "report.html")
            self.render_error = f"report: {type(exc).__name__}: {exc}"
            text = ""
        timings["html_s"] = time.perf_counter() - t
        t = time.perf_counter()
        if text and os.environ.get("BENCH_REPORT_PDF", "1") != "0":
            try:
                from bench.report.render import write_pdf

                write_pdf(text, self.dir / "report.pdf")
                names.append("report.pdf")
            except Exception as exc:  # e.g. no Pango on this machine: the HTML report stands
                self.render_error = f"pdf: {type(exc).__name__}: {exc}"
        timings["pdf_s"] = time.perf_counter() - t
        if archive is not None:
            archive.join()
            if mf4_error:
                self.render_error = "; ".join(filter(None, [self.render_error, *mf4_error]))
            elif (self.dir / "can.mf4").is_file():
                names.append("can.mf4")
        return {name: file_sha256(self.dir / name) for name in names}

    def seal(self, info: dict[str, Any]) -> Path:
        from bench.record.signing import load_key, sign_file

        self.log.close()
        key = load_key()
        signer = {"algorithm": "Ed25519", "public_key": key.public_b64, "fingerprint": key.fingerprint} if key else None
        path = write_manifest(self.dir, events=self.log, info={**info, "signer": signer})
        if key is not None:
            sign_file(path, key)
        return path

    def abandon(self) -> None:
        """Close what is open after a failure; the folder stays for inspection."""
        try:
            self.close_traffic()
        finally:
            self.log.close()


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))
