"""The one shape every benchmark reports in, so that `make bench` gathers them into one table.

Each script in this folder takes `--smoke` (a short run that still performs every check it
makes, used by `make test` so that no benchmark rots) and `--json FILE` (append its rows to
FILE). A row is our figure, the baseline measured in the same run, their ratio and what the
ratio means, and the goal it is held against, if any. The machine and the date are added by
`benchmarks/run_all.py`, which runs every script.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class Row:
    benchmark: str  # the script's stem, e.g. "engine_steps"
    figure: str  # what was measured, e.g. "engine cost per step, record written"
    ours: float
    baseline: float
    unit: str  # unit of `ours` and `baseline`, e.g. "ms/step"
    ratio: float
    ratio_means: str  # e.g. "ours / floor" or "speed-up over the naive pipeline"
    goal: str = ""  # e.g. "<= 0.05 ms/step"; empty when the row has no goal
    met: bool | None = None  # None when the row has no goal, or in a smoke run

    def line(self) -> str:
        goal = f"  goal {self.goal}: {'met' if self.met else 'NOT met'}" if self.goal and self.met is not None else ""
        return (
            f"{self.benchmark}: {self.figure}: {self.ours:.4g} {self.unit} against {self.baseline:.4g}"
            f" (ratio {self.ratio:.3g}, {self.ratio_means}){goal}"
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--smoke", action="store_true", help="a short run that still makes every check")
    parser.add_argument("--json", type=Path, help="append this run's rows to a JSON list in FILE")


def emit(rows: list[Row], args: argparse.Namespace) -> None:
    """Print the rows and, with --json, append them to the file (a smoke run's rows say so)."""
    if args.smoke:  # a smoke run's figure is not a measurement of the goal, printed or written
        rows = [replace(row, met=None) for row in rows]
    for row in rows:
        print(row.line())
    if args.json is None:
        return
    existing = json.loads(args.json.read_text()) if args.json.exists() else []
    for row in rows:
        entry = asdict(row)
        entry["smoke"] = bool(args.smoke)
        existing.append(entry)
    args.json.write_text(json.dumps(existing, indent=1) + "\n")
