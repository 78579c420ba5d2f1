"""The sequence library of a station as the browser station shows it, and its checks of typed input.

The library is the station's ``lab.library`` (the folders a lab agent offers too), scanned by the
lab's own scanner; each sequence is built into a plan for this station exactly as ``bench run``
builds it, so a sequence the page offers as runnable is one the run path takes, and a typed
parameter is judged by the parser and checks of ``bench run -p``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from bench import stepkinds
from bench.errors import BenchError
from bench.lab.agent import lab_settings, library_paths, scan_library
from bench.plan import Plan, build_plan, load_sequence, override_errors
from bench.sequence import Sequence
from bench.station import load_station


@dataclass
class ParamField:
    name: str
    default: str  # as written in the sequence
    unit: str  # the default's unit ('' for a plain number, or when the sequence does not build here)
    minimum: str | None
    maximum: str | None
    doc: str
    origin: str | None  # regulation, item or lab (bench/origins.py)


@dataclass
class LibraryEntry:
    id: str
    title: str
    version: str
    path: Path
    sha256: str
    standard: str
    clause: str
    requires: list[str] = field(default_factory=list)
    parameters: list[ParamField] = field(default_factory=list)
    prompts: int = 0  # prompt steps: a run of it will ask the operator
    runnable: str | None = None  # None, or why it does not build on this station (one line)


def _prompts(model: Sequence) -> int:
    return sum(1 for st in (*model.steps, *model.cleanup) if stepkinds.of_model(st).name == "prompt")


def _entry(path: Path, sha256: str, station_path: Path) -> LibraryEntry:
    _, model = load_sequence(path)
    plan: Plan | None = None
    runnable: str | None = None
    try:
        plan = build_plan(path, station_path)
    except BenchError as exc:
        runnable = str(exc)
    params = [
        ParamField(
            name=name,
            default=p.default,
            unit=plan.params[name].default.unit.text if plan is not None else "",
            minimum=p.min,
            maximum=p.max,
            doc=p.doc,
            origin=p.origin,
        )
        for name, p in model.parameters.items()
    ]
    return LibraryEntry(
        id=model.id,
        title=model.title,
        version=model.version,
        path=path,
        sha256=sha256,
        standard=model.basis.standard,
        clause=model.basis.clause,
        requires=list(model.requires),
        parameters=params,
        prompts=_prompts(model),
        runnable=runnable,
    )


def library(station_path: Path) -> list[LibraryEntry]:
    """Every sequence of the station's library, sorted by id (then file); files that do not load are left out."""
    station = load_station(station_path)
    found = scan_library(library_paths(station, lab_settings(station)))
    entries = []
    for (_, sha256), path in found.items():
        try:
            entries.append(_entry(path, sha256, station_path))
        except (BenchError, OSError):
            continue  # changed or removed since the scan: not offered
    return sorted(entries, key=lambda e: (e.id, str(e.path)))


def check_parameters(entry: LibraryEntry, station_path: Path, values: dict[str, str]) -> dict[str, str]:
    """Parameter name -> the one-line error ``bench run -p name=value`` gives; {} when every value is taken.

    An empty value stands for the default (as ``-p name=`` does). A sequence that does not build
    on the station takes no value: each name gets that reason.
    """
    try:
        plan = build_plan(entry.path, station_path)
    except BenchError as exc:
        return dict.fromkeys(values, str(exc))
    return override_errors(plan, values)


def check_serial(station_path: Path, serial: str) -> str | None:
    """None when ``serial`` identifies a DUT for this station (the whole text matches ``ui.serial_pattern``), else why not."""
    pattern = load_station(station_path).model.ui.serial_pattern
    if not serial.strip():
        return "no DUT serial given"
    if pattern is not None and re.fullmatch(pattern, serial) is None:
        return f"serial '{serial}' does not match this station's serial pattern {pattern}"
    return None
