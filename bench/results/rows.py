"""What one sealed run folder contributes to the results database, read from its record alone.

``from_run_folder`` reads ``result.json`` and ``manifest.json`` (and the station file the run
copied into ``inputs/``), so the database can be rebuilt from the folders at any time. What the
record does not hold comes in as ``RunTags`` from the entry point that ran it: the lab agent's
bench name and the submitter, a campaign's id and the cell's fault column (a campaign folder's
``fault-matrix.json`` gives those back on import).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.errors import LoadError
from bench.record.manifest import MANIFEST_NAME
from bench.result import RunResult

RESULT_NAME = "result.json"
AMENDMENT_NAME = "amendment.json"  # bench/report/amend.py: an amended report's folder, not a run
MATRIX_NAME = "fault-matrix.json"  # bench/campaign.py write_matrix

# Where a DUT's identity is found in a device's identity (read over UDS at connect), by column.
IDENTITY_KEYS = {
    "dut_serial": ("ecu_serial", "serial", "serial_number"),
    "dut_part_number": ("part_number", "spare_part_number"),
    "dut_hw_version": ("hardware_version", "hw_version"),
    "dut_sw_version": ("software_version", "sw_version", "firmware"),
}
# The same, from an operator's identification answer, by what the prompt asked for.
PROMPT_WORDS = {
    "dut_serial": re.compile(r"\bserial", re.I),
    "dut_part_number": re.compile(r"\bpart\b", re.I),
    "dut_hw_version": re.compile(r"\bhardware\b|\bhw\b", re.I),
    "dut_sw_version": re.compile(r"\bsoftware\b|\bsw\b", re.I),
}


@dataclass(frozen=True)
class RunTags:
    """What the entry point knows about a run that its record does not say."""

    bench_id: str | None = None  # the lab agent's bench name; else the station id
    operator: str | None = None
    campaign_id: str | None = None
    fault: str | None = None  # the campaign cell's fault column ("nominal" included)


@dataclass
class MeasurementRow:
    name: str
    step: str
    value: float | None
    unit: str
    uncertainty: float | None
    low: float | None
    high: float | None
    decision: str
    outcome: str
    t: float


@dataclass
class StepRow:
    phase: str
    index: int
    name: str
    kind: str
    outcome: str
    started: float
    ended: float
    message: str


@dataclass
class EquipmentRow:
    asset_id: str
    device: str
    maker: str
    model: str
    serial: str
    certificate: str
    calibrated: dt.date | None
    due: dt.date | None
    in_calibration: bool


@dataclass
class DtcRow:
    device: str
    at: str
    code: str
    status: int
    text: str


@dataclass
class RunRow:
    """The ``runs`` columns of one run, with its children."""

    run_id: str
    manifest_sha256: str
    sequence_id: str
    sequence_version: str
    sequence_sha256: str
    parameters: dict[str, str]
    station_id: str
    station_sha256: str
    bench_id: str
    operator: str | None
    dut_serial: str | None
    dut_part_number: str | None
    dut_hw_version: str | None
    dut_sw_version: str | None
    started_utc: dt.datetime
    ended_utc: dt.datetime
    clock: str
    sim_duration_s: float
    wall_duration_s: float
    verdict: str
    exit_code: int
    reason: str
    unsafe_end: bool
    signer: str | None
    folder: str
    campaign_id: str | None = None
    fault: str | None = None
    measurements: list[MeasurementRow] = field(default_factory=list)
    steps: list[StepRow] = field(default_factory=list)
    equipment: list[EquipmentRow] = field(default_factory=list)
    dtcs: list[DtcRow] = field(default_factory=list)

    CHILDREN = ("measurements", "steps", "equipment", "dtcs")

    def columns(self) -> dict[str, Any]:
        """The ``runs`` columns (without ``indexed_utc``, which the store sets)."""
        return {k: v for k, v in self.__dict__.items() if k not in self.CHILDREN}

    def tagged(self, tags: RunTags) -> RunRow:
        """This row with what the entry point knows; a tag left None keeps the record's value."""
        given = {k: v for k, v in tags.__dict__.items() if v is not None}
        return replace(self, **given)


def parse_utc(text: str) -> dt.datetime:
    """``2026-12-03T19:38:56.267Z`` (result.json) as an aware UTC datetime."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC)


def _date(text: Any) -> dt.date | None:
    try:
        return dt.date.fromisoformat(str(text)) if text else None
    except ValueError:
        return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except OSError as exc:
        raise LoadError(f"{path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise LoadError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise LoadError(f"{path}: not a JSON object")
    return data


def _item_device(folder: Path, station: dict[str, Any]) -> str | None:
    """The station device that is the item under test, from the station file the run copied."""
    from ruamel.yaml import YAML

    name = Path(str(station.get("path") or "")).name
    copy = folder / "inputs" / name
    if not name or not copy.is_file():
        return None
    try:
        data = YAML(typ="safe").load(copy.read_text(encoding="utf-8"))
        device = data["laboratory"]["item"]["device"]
    except Exception:  # any shape: the item is then found by its identity alone
        return None
    return str(device) if device else None


def dut_identity(folder: Path, result: RunResult) -> dict[str, str | None]:
    """Serial, part number, hardware and software version of the item: read from it over UDS
    (the station's item device, else any device that reported an ECU serial), else from what the
    operator entered as identification at a prompt that asked for it."""
    found: dict[str, str | None] = dict.fromkeys(IDENTITY_KEYS)
    item = _item_device(folder, result.station)
    devices = [d for d in result.devices if d.name == item] or [d for d in result.devices if "ecu_serial" in d.identity]
    for dev in devices[:1]:
        for column, keys in IDENTITY_KEYS.items():
            found[column] = next((dev.identity[k] for k in keys if dev.identity.get(k)), None)
    for entry in result.operator_entries:
        if entry.record != "identification":
            continue
        for column, words in PROMPT_WORDS.items():
            if found[column] is None and words.search(entry.prompt):
                found[column] = entry.answer
    return found


def campaign_tags(folder: Path, run_id: str) -> RunTags:
    """A campaign cell's id and fault, from ``<campaign>/fault-matrix.json`` beside ``runs/``."""
    matrix = folder.parent.parent / MATRIX_NAME
    if folder.parent.name != "runs" or not matrix.is_file():
        return RunTags()
    try:
        data = json.loads(matrix.read_bytes())
        cell = next(c for c in data["cells"] if c.get("run_id") == run_id and not c.get("same_as"))
        return RunTags(campaign_id=str(data["campaign_id"]), fault=str(cell["fault"]))
    except (OSError, ValueError, KeyError, TypeError, StopIteration):
        return RunTags()


def is_run_folder(path: Path) -> bool:
    """A sealed run's folder: a manifest, and not an amended report's (which has one too)."""
    return (path / MANIFEST_NAME).is_file() and not (path / AMENDMENT_NAME).is_file()


def from_run_folder(path: Path, tags: RunTags | None = None) -> RunRow:
    """The row of the sealed run in ``path``; a folder that is not one is refused with one line."""
    from bench.console import run_exit_code

    folder = path.resolve()
    if not (folder / MANIFEST_NAME).is_file():
        raise LoadError(f"{path}: not a sealed run folder (no {MANIFEST_NAME})")
    if (folder / AMENDMENT_NAME).is_file():
        raise LoadError(
            f"{path}: an amended report ({AMENDMENT_NAME}), not a run: its run is indexed from its own folder"
        )
    manifest_bytes = (folder / MANIFEST_NAME).read_bytes()
    manifest = _read_json(folder / MANIFEST_NAME)
    data = _read_json(folder / RESULT_NAME)
    try:
        result = RunResult.model_validate(data)
    except ValueError as exc:
        raise LoadError(f"{path}: {RESULT_NAME} is not a run result ({str(exc).splitlines()[0]})") from None
    signer = manifest.get("signer")
    seq, station = result.sequence, result.station
    row = RunRow(
        run_id=result.run_id,
        manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
        sequence_id=str(seq.get("id", "")),
        sequence_version=str(seq.get("version", "")),
        sequence_sha256=str(seq.get("sha256", "")),
        parameters={p.name: p.value for p in result.parameters},
        station_id=str(station.get("id", "")),
        station_sha256=str(station.get("sha256", "")),
        bench_id=str(station.get("id", "")),
        operator=result.operator,
        **dut_identity(folder, result),
        started_utc=parse_utc(result.started_utc),
        ended_utc=parse_utc(result.ended_utc),
        clock="virtual" if station.get("virtual_time") else "wall",
        sim_duration_s=result.sim_duration_s,
        wall_duration_s=result.wall_duration_s,
        verdict=result.verdict.value,
        exit_code=run_exit_code(result),
        reason=result.reason,
        unsafe_end=result.unsafe_end,
        signer=str(signer.get("fingerprint")) if isinstance(signer, dict) else None,
        folder=str(folder),
        measurements=[
            MeasurementRow(
                m.name, m.step, m.value, m.unit, m.uncertainty, m.low, m.high, m.decision, m.outcome.value, m.t
            )
            for m in result.measurements
        ],
        steps=[
            StepRow(s.phase, s.index, s.name, s.kind, s.outcome.value, s.started, s.ended, s.message)
            for s in result.steps
        ],
        equipment=[_equipment(e) for e in data.get("equipment") or [] if isinstance(e, dict)],
        dtcs=[
            DtcRow(read.device, read.at, d.code, d.status, ", ".join(d.flags))
            for read in result.dtcs
            for d in read.dtcs
        ],
    )
    row = row.tagged(campaign_tags(folder, row.run_id))
    return row.tagged(tags) if tags is not None else row


def _equipment(e: dict[str, Any]) -> EquipmentRow:
    return EquipmentRow(
        asset_id=str(e.get("asset_id", "")),
        device=str(e.get("device", "")),
        maker=str(e.get("maker", "")),
        model=str(e.get("model", "")),
        serial=str(e.get("serial", "")),
        certificate=str(e.get("certificate", "")),
        calibrated=_date(e.get("calibrated")),
        due=_date(e.get("due")),
        in_calibration=bool(e.get("in_calibration")),
    )
