"""A run's place in the results history, for the page after a run (docs/results.md has the database).

Asked of the station's results database (``BENCH_RESULTS``, else the station's ``results:``, else
the user's SQLite file) through the same questions as ``bench db runs`` and ``bench db dut``. The
database is an index beside the records: when it cannot answer, the page says so in one line and
the run's own record and report stay what they are.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from bench.results.after_run import DATABASE_ERRORS, one_line
from bench.results.queries import QueryError, Table, dut_history, report_path, runs
from bench.results.store import open_store, results_url, shown_url
from bench.station import load_station


def _rows(table: Table) -> list[dict[str, Any]]:
    """The table's rows as dicts a page can take as JSON: instants as ISO text, a run's folder with its report."""
    out = []
    for row in table.dicts():
        for key, value in row.items():
            if isinstance(value, dt.datetime):
                row[key] = (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).isoformat()
        if row.get("folder"):
            row["report"] = report_path(row["folder"])
        out.append(row)
    return out


def run_history(
    station_path: Path, run_id: str | None = None, dut_serial: str | None = None, limit: int = 10
) -> dict[str, Any]:
    """The station's latest runs, and a run's and a DUT's history.

    ``{"db": URL shown without password, "error": one line or None, "runs": the station's newest
    ``limit`` runs (newest first), "run": the run ``run_id`` or None (not indexed), "dut_serial":
    the DUT asked for (else the run's), "dut": that DUT's last ``limit`` runs (oldest first),
    "place": {"dut_index", "dut_total", "sequence_index", "sequence_total"} of the run in its DUT's
    history (1-based; sequence_*: among that DUT's runs of the same sequence), or None}``.
    """
    station = load_station(station_path).model
    url = results_url(None, station.results)
    out: dict[str, Any] = {
        "db": shown_url(url),
        "error": None,
        "runs": [],
        "run": None,
        "dut_serial": dut_serial,
        "dut": [],
        "place": None,
    }
    try:
        with open_store(url) as store:
            out["runs"] = _rows(runs(store.engine, station=station.id, limit=max(1, limit)))
            if run_id is not None:
                found = _rows(runs(store.engine, run_id=run_id, include_campaigns=True))
                out["run"] = found[0] if found else None
                if found and dut_serial is None:
                    dut_serial = out["dut_serial"] = found[0]["dut_serial"]
            if dut_serial:
                try:
                    history = _rows(dut_history(store.engine, dut_serial))
                except QueryError:
                    history = []  # no run of this DUT indexed yet
                out["dut"] = history[-max(1, limit) :]
                out["place"] = _place(history, out["run"])
    except DATABASE_ERRORS as exc:
        out["error"] = f"results database {shown_url(url)}: {one_line(exc)}"
    return out


def _place(history: list[dict[str, Any]], run: dict[str, Any] | None) -> dict[str, int] | None:
    if run is None:
        return None
    ids = [r["run_id"] for r in history]
    if run["run_id"] not in ids:
        return None
    same = [r["run_id"] for r in history if r["sequence_id"] == run["sequence_id"]]
    return {
        "dut_index": ids.index(run["run_id"]) + 1,
        "dut_total": len(ids),
        "sequence_index": same.index(run["run_id"]) + 1,
        "sequence_total": len(same),
    }
