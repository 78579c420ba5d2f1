"""The fault matrix: sequences x fault modes, one run's verdict per cell, and what makes it unconvincing.

The data of a campaign (``bench/campaign.py`` fills it, ``bench/report/fault_matrix.py`` renders
it); it imports neither.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

NOMINAL = "nominal"
# Verdicts that count as "caught": the sequence failed or stopped the run on the fault (FAIL,
# ABORTED), or the bench stopped on the faulty instrument itself (ERROR: a driver fault, whose
# run is invalid by design). The matrix shows the three apart.
CAUGHT = ("FAIL", "ABORTED", "ERROR")
MATRIX_SCHEMA = "1.1"  # 1.1: a cell's same_as


@dataclass
class Cell:
    sequence: str  # sequence id
    fault: str  # fault name or NOMINAL
    verdict: str
    reason: str
    run_id: str = ""
    sim_s: float = 0.0
    wall_s: float = 0.0
    unsafe_end: bool = False
    measurements: list[dict[str, Any]] = field(default_factory=list)
    # The column whose run stands for this cell, when the cell's fault cannot act on the sequence
    # (its simulator is not started by the sequence's runs): the cell is not run (bench/campaign.py).
    same_as: str = ""

    @property
    def caught(self) -> bool:
        return self.verdict in CAUGHT and not self.same_as


@dataclass
class Matrix:
    campaign_id: str
    station: str
    sequences: dict[str, str]  # id -> path
    faults: list[str]  # columns after NOMINAL
    params: dict[str, str]
    cells: list[Cell]
    started_utc: str = ""
    wall_s: float = 0.0

    def cell(self, sequence: str, fault: str) -> Cell | None:
        for c in self.cells:
            if c.sequence == sequence and c.fault == fault:
                return c
        return None

    def verdicts(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {s: {} for s in self.sequences}
        for c in self.cells:
            out[c.sequence][c.fault] = c.verdict
        return out

    def findings(self) -> list[str]:
        """What makes the matrix unconvincing: a nominal run that does not pass, a fault no
        sequence catches, a sequence no fault can make fail."""
        problems = []
        for seq in self.sequences:
            nominal = self.cell(seq, NOMINAL)
            if nominal is not None and nominal.verdict != "PASS":
                problems.append(f"{seq} does not pass on the nominal simulator ({nominal.verdict}: {nominal.reason})")
            if self.faults and not any((c := self.cell(seq, f)) is not None and c.caught for f in self.faults):
                problems.append(f"{seq} is not made to fail by any fault mode (an empty row)")
        for f in self.faults:
            if not any((c := self.cell(s, f)) is not None and c.caught for s in self.sequences):
                problems.append(f"fault {f} is caught by no sequence (an empty column)")
        return problems

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": MATRIX_SCHEMA,
            "campaign_id": self.campaign_id,
            "station": self.station,
            "started_utc": self.started_utc,
            "wall_s": round(self.wall_s, 2),
            "params": self.params,
            "sequences": self.sequences,
            "columns": [NOMINAL, *self.faults],
            "cells": [asdict(c) for c in self.cells],
            "findings": self.findings(),
        }
