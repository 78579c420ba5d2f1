"""The folder of one run: inputs copied in, the hash-chained event log, raw CAN as BLF, outputs.

Times in the record are seconds since the run started, on the event-loop clock (virtual or
wall). The wall-clock start is written once, in the first event, so the record can be placed
in calendar time without letting the wall clock into the engine.
"""

from __future__ import annotations

import json
import shutil
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

    def write_outputs(self, result: RunResult) -> dict[str, str]:
        (self.dir / "result.json").write_text(result.model_dump_json(indent=2) + "\n", encoding="utf-8")
        write_junit(result, self.dir / "junit.xml")
        write_report_html(result, self.dir / "report.html")
        return {name: file_sha256(self.dir / name) for name in ("result.json", "junit.xml", "report.html", "can.blf")}

    def seal(self, info: dict[str, Any]) -> Path:
        self.log.close()
        return write_manifest(self.dir, events=self.log, info=info)

    def abandon(self) -> None:
        """Close what is open after a failure; the folder stays for inspection."""
        try:
            self.close_traffic()
        finally:
            self.log.close()


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))
