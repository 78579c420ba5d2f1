"""The questions a lab asks across runs, on the results database (docs/results.md, "Questions").

Each question is a function over a SQLAlchemy engine (the same code on SQLite and PostgreSQL)
that answers with a :class:`Table` (column names and rows), so that the command line prints
every answer through one formatter (table, JSON or CSV); ``trend`` and ``cpk`` also give their
chart and indices for the Python caller.

Production questions (``runs``, ``yield_``, ``trend``, ``cpk``) leave fault-matrix cells
(``campaign_id`` set) out unless asked: a cell runs a DUT with a fault injected on purpose, and
its verdict says nothing about production. ``affected`` and ``dut_history`` keep them: a 17025
review needs every run an instrument touched, and a DUT's history is all of it.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa

from bench.errors import BenchError
from bench.results.schema import EquipmentTable, MeasurementTable, RunTable
from bench.results.spc import Capability, Chart, SpcError, capability, chart
from bench.suggest import did_you_mean

R = RunTable.__table__.c
M = MeasurementTable.__table__.c
E = EquipmentTable.__table__.c
PASS = "PASS"
YIELD_BY = ("sequence", "dut_type", "station", "week")
TREND_POINTS = 500  # the latest points a trend charts by default: a chart of 100 000 runs reads as a smear


_Select = TypeVar("_Select", bound=sa.Select)  # a select of any columns


class QueryError(BenchError):
    """A question the database cannot answer as asked (an unknown measurement, no data): one line."""

    exit_code = 2


@dataclass
class Table:
    """An answer: named columns and their rows, printed by one formatter (bench/cli_db.py)."""

    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]] = field(default_factory=list)

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


def report_path(folder: str) -> str:
    """The run folder's report: report.pdf where it was written, else report.html, else the folder."""
    for name in ("report.pdf", "report.html"):
        path = Path(folder) / name
        if path.exists():
            return str(path)
    return folder


RUN_COLUMNS = (
    "run_id",
    "started_utc",
    "sequence_id",
    "sequence_version",
    "station_id",
    "bench_id",
    "dut_serial",
    "dut_sw_version",
    "operator",
    "verdict",
    "exit_code",
    "campaign_id",
    "folder",
)


@contextmanager
def _reading(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection for one question. On PostgreSQL without JIT compilation: a question costs
    milliseconds, but its plan's estimated cost (a probe per run) passes jit_above_cost, and
    compiling it took over a second on 100 000 runs (benchmarks/results_db.py)."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SET LOCAL jit = off")
        yield conn


def _refuse_unknown(conn: sa.Connection, column: Any, value: str, message: str) -> None:
    """QueryError(``message``, with the closest known value as a suggestion) when no row has ``value``."""
    if conn.execute(sa.select(column).where(column == value).limit(1)).first() is None:
        known = conn.execute(sa.select(column).where(column.is_not(None)).distinct()).scalars()
        raise QueryError(f"{message}{did_you_mean(value, known)}")


def _production(engine: sa.Engine, columns: Any = R) -> sa.ColumnElement[bool]:
    """Not a fault-matrix cell. Nearly every run matches: SQLite, without statistics, would read
    the runs through the campaign_id index for ``IS NULL`` and sort them all instead of walking
    the index the question needs, so there it is written in a form no index serves.
    PostgreSQL's planner knows the share from its statistics, and misjudges that other form
    (as matching 0.5 %: a sequential scan and a sort, ten times slower for a trend)."""
    if engine.dialect.name == "sqlite":
        return sa.func.coalesce(columns.campaign_id, "") == ""
    return columns.campaign_id.is_(None)


def _window(stmt: _Select, since: dt.datetime | None, until: dt.datetime | None) -> _Select:
    """Runs that started in [since, until)."""
    if since is not None:
        stmt = stmt.where(R.started_utc >= since)
    if until is not None:
        stmt = stmt.where(R.started_utc < until)
    return stmt


def runs(
    engine: sa.Engine,
    *,
    dut: str | None = None,
    sequence: str | None = None,
    station: str | None = None,
    verdict: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    include_campaigns: bool = False,
    limit: int | None = None,
    run_id: str | None = None,
) -> Table:
    """Runs matching every filter given, newest first (``limit``: the newest so many)."""
    stmt = sa.select(*(R[c] for c in RUN_COLUMNS))
    for column, value in ((R.run_id, run_id), (R.dut_serial, dut), (R.sequence_id, sequence), (R.station_id, station)):
        if value is not None:
            stmt = stmt.where(column == value)
    if verdict is not None:
        stmt = stmt.where(R.verdict == verdict.upper())
    if not include_campaigns:
        stmt = stmt.where(_production(engine))
    stmt = _window(stmt, since, until).order_by(R.started_utc.desc(), R.run_id.desc())
    if limit:
        stmt = stmt.limit(limit)
    with _reading(engine) as conn:
        return Table(RUN_COLUMNS, [tuple(r) for r in conn.execute(stmt)])


def dut_history(engine: sa.Engine, serial: str) -> Table:
    """Every run of the DUT ``serial``, oldest first, with its report; campaign cells included."""
    cols: tuple[str, ...] = ("run_id", "started_utc", "sequence_id", "sequence_version", "station_id")
    cols += ("dut_sw_version", "verdict", "reason", "campaign_id", "fault", "folder")
    stmt = sa.select(*(R[c] for c in cols)).where(R.dut_serial == serial).order_by(R.started_utc, R.run_id)
    with _reading(engine) as conn:
        rows = [tuple(r) for r in conn.execute(stmt)]
        if not rows:
            _refuse_unknown(conn, R.dut_serial, serial, f"no run of DUT '{serial}' is indexed")
    return Table((*cols[:-1], "report"), [(*r[:-1], report_path(r[-1])) for r in rows])


def _utc_day(engine: sa.Engine, column: Any) -> Any:
    """The UTC calendar day of an instant, in the engine's own SQL (SQLite keeps UTC text)."""
    if engine.dialect.name == "postgresql":
        return sa.cast(sa.func.timezone("UTC", column), sa.Date)
    return sa.func.date(column)


def _as_date(value: Any) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))


def _week(day: dt.date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def yield_(
    engine: sa.Engine,
    by: str = "sequence",
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    include_campaigns: bool = False,
) -> Table:
    """First-pass and final yield of each group of units.

    A unit is one DUT through one sequence (a run without a DUT serial is a unit of its own).
    Its first-pass result is the verdict of its first run, its final result that of its last;
    a unit belongs to the group of its first run (its sequence, DUT part number, station, or
    ISO week) and is counted when that first run started in [since, until): the first-pass
    yield of a month is that of the units first tested in it, whatever their retests later.
    """
    if by not in YIELD_BY:
        raise QueryError(f"yield by '{by}': expected one of {', '.join(YIELD_BY)}{did_you_mean(by, YIELD_BY)}")
    # Per run that is its unit's first, the unit's last verdict and its number of runs: probes of
    # the unit index (ix_runs_unit), not a window over every run (10x slower on SQLite).
    runs_t = RunTable.__table__
    first, other = runs_t.alias("first"), runs_t.alias("other")
    f, o = first.c, other.c

    def _same_unit() -> sa.ColumnElement[bool]:
        same = sa.and_(o.dut_serial == f.dut_serial, o.sequence_id == f.sequence_id)
        return same if include_campaigns else sa.and_(same, _production(engine, o))

    # The unit's first run, as a LIMIT 1 probe: PostgreSQL would turn a NOT EXISTS into a hash
    # anti-join over every run (5x slower for a month).
    first_run = sa.select(o.run_id).where(_same_unit()).order_by(o.started_utc, o.run_id).limit(1).scalar_subquery()
    last_verdict = (
        sa.select(o.verdict)
        .where(_same_unit())
        .order_by(o.started_utc.desc(), o.run_id.desc())
        .limit(1)
        .scalar_subquery()
    )
    unit_runs = sa.select(sa.func.count()).where(_same_unit()).scalar_subquery()
    # A run without a DUT serial matches no other run (NULL = NULL is not true): a unit of its own.
    final = sa.func.coalesce(last_verdict, f.verdict)
    key_of = {
        "sequence": f.sequence_id,
        "dut_type": sa.func.coalesce(f.dut_part_number, ""),
        "station": f.station_id,
        "week": _utc_day(engine, f.started_utc),
    }[by]
    stmt = sa.select(
        key_of,
        sa.func.count(),
        sa.func.sum(sa.case((f.verdict == PASS, 1), else_=0)),
        sa.func.sum(sa.case((final == PASS, 1), else_=0)),
        sa.func.sum(sa.case((f.dut_serial.is_(None), 1), else_=unit_runs)),
    ).where(sa.or_(f.dut_serial.is_(None), f.run_id == first_run))
    if not include_campaigns:
        stmt = stmt.where(_production(engine, f))
    if since is not None:
        stmt = stmt.where(f.started_utc >= since)
    if until is not None:
        stmt = stmt.where(f.started_utc < until)
    stmt = stmt.group_by(key_of)
    with _reading(engine) as conn:
        groups = [(k, int(n), int(fp), int(fin), int(r)) for k, n, fp, fin, r in conn.execute(stmt)]
    if by == "week":  # grouped by UTC day in SQL (portable), gathered into ISO weeks here
        weeks: dict[str, list[int]] = {}
        for day, *counts in groups:
            acc = weeks.setdefault(_week(_as_date(day)), [0, 0, 0, 0])
            for i, c in enumerate(counts):
                acc[i] += c
        groups = [(w, *acc) for w, acc in weeks.items()]  # type: ignore[misc]
    cols = ("group", "units", "first_pass", "first_pass_yield", "final_pass", "final_yield", "runs")
    rows = [
        (key, n, fp, round(fp / n, 4), fin, round(fin / n, 4), r)
        for key, n, fp, fin, r in sorted(groups, key=lambda g: str(g[0]))
    ]
    return Table(cols, rows)


@dataclass
class Trend:
    """A measurement's values across runs, oldest first, and their X/MR chart."""

    measurement: str
    unit: str
    points: Table  # run_id, started_utc, dut_sw_version, station_id, value, low, high
    chart: Chart
    versions: list[str | None] | None  # each point's DUT software version, when grouped by it

    @property
    def starts(self) -> list[dt.datetime]:
        return [r[1] for r in self.points.rows]

    def violations(self) -> Table:
        """One row per point a Nelson test flags: the test and the run."""
        rows = []
        for v in self.chart.violations:
            for i in v.points:
                run_id, started, sw, *_ = self.points.rows[i]
                rows.append((v.rule.number, v.rule.name, i, run_id, started, sw, self.chart.values[i]))
        return Table(("test", "rule", "point", "run_id", "started_utc", "dut_sw_version", "value"), rows)

    def points_flagged(self) -> Table:
        """Every point with its moving range and the Nelson tests that flag it (space separated)."""
        c = self.chart
        by_point: dict[int, list[str]] = {}
        for v in c.violations:
            for i in v.points:
                by_point.setdefault(i, []).append(str(v.rule.number))
        rows = [
            (i, *row, c.moving_ranges[i - 1] if i else None, " ".join(by_point.get(i, [])))
            for i, row in enumerate(self.points.rows)
        ]
        return Table(("point", *self.points.columns, "moving_range", "flagged_by"), rows)

    def summary(self) -> Table:
        """The chart's centre and limits, and per software version its count and mean when grouped."""
        c = self.chart
        rows: list[tuple[Any, ...]] = [("all", len(c.values), c.centre, c.sigma, c.lcl, c.ucl, c.mr_bar, c.mr_ucl)]
        if self.versions is not None:
            by: dict[str, list[float]] = {}
            for sw, v in zip(self.versions, c.values, strict=True):
                by.setdefault(sw or "unknown", []).append(v)
            for sw, vs in by.items():
                rows.append((sw, len(vs), statistics.fmean(vs), None, None, None, None, None))
        return Table(("sw_version", "n", "mean", "sigma", "lcl", "ucl", "mr_bar", "mr_ucl"), rows)


def _measurement_points(
    engine: sa.Engine,
    measurement: str,
    sequence: str | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
    include_campaigns: bool,
    last: int | None,
) -> tuple[str, list[tuple[Any, ...]]]:
    """(unit, rows) of ``measurement``'s values, oldest first (the latest ``last`` of them)."""
    cols = (R.run_id, R.started_utc, R.dut_sw_version, R.station_id, M.value, M.low, M.high, M.unit)
    stmt = sa.select(*cols).join_from(MeasurementTable, RunTable, M.run_id == R.run_id)
    stmt = stmt.where(M.name == measurement, M.value.is_not(None))
    if sequence is not None:
        stmt = stmt.where(R.sequence_id == sequence)
    if not include_campaigns:
        stmt = stmt.where(_production(engine))
    stmt = _window(stmt, since, until).order_by(R.started_utc.desc(), R.run_id.desc())
    if last:
        stmt = stmt.limit(last)
    with _reading(engine) as conn:
        rows = [tuple(r) for r in conn.execute(stmt)]
        if not rows:
            _refuse_unknown(conn, M.name, measurement, f"no measurement named '{measurement}' is indexed")
            raise QueryError(f"measurement '{measurement}' has no value in the runs asked for")
    rows.reverse()
    units = {r[-1] for r in rows}
    if len(units) > 1:
        raise QueryError(
            f"measurement '{measurement}' is recorded in several units ({', '.join(sorted(units))}): give --sequence"
        )
    return rows[0][-1], [r[:-1] for r in rows]


def trend(
    engine: sa.Engine,
    measurement: str,
    sequence: str | None = None,
    group_by_sw_version: bool = False,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    include_campaigns: bool = False,
    last: int | None = TREND_POINTS,
    baseline: int | None = None,
) -> Trend:
    """The X/MR chart of ``measurement`` over its latest ``last`` runs, its limits from the first
    ``baseline`` points of them (all by default); grouped by DUT software version, the points run
    version after version (each version in the order it first appeared)."""
    unit, rows = _measurement_points(engine, measurement, sequence, since, until, include_campaigns, last)
    versions: list[str | None] | None = None
    if group_by_sw_version:
        order: dict[str | None, int] = {}
        for r in rows:
            order.setdefault(r[2], len(order))
        rows.sort(key=lambda r: order[r[2]])  # stable: oldest first within a version
        versions = [r[2] for r in rows]
    table = Table(("run_id", "started_utc", "dut_sw_version", "station_id", "value", "low", "high"), rows)
    try:
        drawn = chart([r[4] for r in rows], baseline)
    except SpcError as exc:
        raise QueryError(f"trend of '{measurement}': {exc}") from None
    return Trend(measurement, unit, table, drawn, versions)


@dataclass
class Cpk:
    measurement: str
    unit: str
    capability: Capability
    left_out: int  # values recorded against other limits than the latest ones

    def table(self) -> Table:
        c = self.capability
        cols: tuple[str, ...] = ("measurement", "unit", "n", "mean", "sigma_within", "sigma_overall", "low", "high")
        cols += ("cp", "cpk", "pp", "ppk", "left_out")
        row: tuple[Any, ...] = (
            self.measurement,
            self.unit,
            c.n,
            c.mean,
            c.sigma_within,
            c.sigma_overall,
            c.low,
            c.high,
        )
        row += (c.cp, c.cpk, c.pp, c.ppk, self.left_out)
        return Table(cols, [row])


def cpk(
    engine: sa.Engine,
    measurement: str,
    sequence: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    include_campaigns: bool = False,
    last: int | None = None,
) -> Cpk:
    """Capability of ``measurement`` against the limits recorded with it.

    Limits change with a sequence's version; the indices are taken against the latest run's
    limits, over the values recorded against those same limits (the others are counted as left out).
    """
    unit, rows = _measurement_points(engine, measurement, sequence, since, until, include_campaigns, last)
    low, high = rows[-1][5], rows[-1][6]
    same = [r[4] for r in rows if (r[5], r[6]) == (low, high)]
    try:
        found = capability(same, low, high)
    except SpcError as exc:
        raise QueryError(f"cpk of '{measurement}': {exc}") from None
    return Cpk(measurement, unit, found, len(rows) - len(same))


def affected(
    engine: sa.Engine,
    equipment_id: str,
    since: dt.datetime,
    until: dt.datetime | None = None,
) -> Table:
    """Every run that used the instrument ``equipment_id`` (its asset id) at any time in [since,
    until), with its report: a run is in the window when it ended at or after ``since`` and
    started before ``until``. Campaign cells are included: the review needs every result the
    instrument touched (ISO/IEC 17025 7.10)."""
    cols: tuple[str, ...] = (
        "run_id",
        "started_utc",
        "ended_utc",
        "station_id",
        "bench_id",
        "sequence_id",
        "dut_serial",
    )
    cols += ("verdict",)
    cols += ("campaign_id",)
    eq = ("serial", "certificate", "calibrated", "due", "in_calibration")
    stmt = (
        sa.select(*(R[c] for c in cols), *(E[c] for c in eq), R.folder)
        .join_from(EquipmentTable, RunTable, E.run_id == R.run_id)
        .where(E.asset_id == equipment_id, R.ended_utc >= since)
    )
    if until is not None:
        stmt = stmt.where(R.started_utc < until)
    stmt = stmt.order_by(R.started_utc, R.run_id)
    with _reading(engine) as conn:
        rows = [tuple(r) for r in conn.execute(stmt)]
        if not rows:
            _refuse_unknown(conn, E.asset_id, equipment_id, f"no run used equipment '{equipment_id}'")
    # One row per run, even when the run lists the instrument twice (two roles of one asset).
    seen: set[str] = set()
    out = []
    for r in rows:
        if r[0] not in seen:
            seen.add(r[0])
            out.append((*r[:-1], report_path(r[-1])))
    return Table((*cols, *eq, "report"), out)
