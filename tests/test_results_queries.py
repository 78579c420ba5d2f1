"""The questions on a generated history, the same bodies on SQLite and PostgreSQL (tests/pg.py).

Every expected figure is computed here from the generated rows themselves (tests/results_history.py),
never read back from the database: which runs used an instrument in a window, each group's
first-pass and final yield, a capability index by hand.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
import json
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.results import queries as q
from bench.results.rows import RunRow
from bench.results.store import Store, open_store
from tests import pg
from tests.conftest import bench
from tests.results_history import MOVING_ASSET, SPACING, T0, generate

N_RUNS = 1200
SHIFT_AT = T0 + SPACING * 1000  # ov_trip_v moves up by 5 sd from the 1000th run on
SHIFT = ("ov_trip_v", SHIFT_AT, 5 * 0.004)


@dataclass
class History:
    store: Store
    rows: list[RunRow]


# The PostgreSQL cluster of tests/pg.py; the history is written once per database kind, not per test.
pg_cluster = pg.pg_cluster


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def history_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "postgresql":
        cluster: pg.Cluster = request.getfixturevalue("pg_cluster")
        return cluster.create_database()
    return f"sqlite:///{tmp_path_factory.mktemp('results') / 'results.db'}"


@pytest.fixture(scope="module")
def history(history_url: str) -> Iterator[History]:
    rows = list(generate(N_RUNS, shift=SHIFT))
    with open_store(history_url) as store:
        store.index_many(rows)
        yield History(store, rows)


def _assets(row: RunRow) -> set[str]:
    return {e.asset_id for e in row.equipment}


def test_affected_finds_exactly_the_runs_that_used_the_instrument_in_the_window(history: History) -> None:
    moved = T0 + SPACING * (N_RUNS // 2)  # where the analyzer moves from bench-a to bench-b
    # The window opens in the middle of a run that used the analyzer, and closes in another's.
    users = [r for r in history.rows if MOVING_ASSET in _assets(r)]
    opening = next(r for r in users if r.started_utc >= moved - dt.timedelta(hours=6))
    closing = next(r for r in users if r.started_utc >= moved + dt.timedelta(hours=6))
    since = opening.started_utc + (opening.ended_utc - opening.started_utc) / 2
    until = closing.started_utc + dt.timedelta(seconds=1)
    expected = {
        r.run_id for r in history.rows if MOVING_ASSET in _assets(r) and r.ended_utc >= since and r.started_utc < until
    }
    answer = q.affected(history.store.engine, MOVING_ASSET, since, until)
    found = [row["run_id"] for row in answer.dicts()]
    assert len(found) == len(set(found))  # one row per run
    assert set(found) == expected
    # The window holds runs of both stations the analyzer served, and runs of others it never touched.
    by_id = {r.run_id: r for r in history.rows}
    assert {by_id[i].station_id for i in found} == {"bench-a", "bench-b"}
    in_window = {r.run_id for r in history.rows if r.ended_utc >= since and r.started_utc < until}
    assert in_window - expected and {by_id[i].station_id for i in in_window - expected} >= {"bench-c", "sim"}
    # A run that started before the window and ended inside it used the instrument in the window.
    assert opening.run_id in found and closing.run_id in found
    assert all(row["report"] == by_id[row["run_id"]].folder for row in answer.dicts())  # no report file: the folder


def test_affected_of_an_unknown_instrument_is_one_line_with_a_suggestion(history: History) -> None:
    with pytest.raises(q.QueryError, match=r"no run used equipment 'PA7'; did you mean 'PA-7'\?"):
        q.affected(history.store.engine, "PA7", T0)


def _yield_by(rows: list[RunRow], key: str, since: dt.datetime | None = None) -> dict[str, tuple[int, int, int]]:
    """Units (DUT, sequence) grouped by their first run's key: (units, first-pass passes, final passes)."""
    units: dict[tuple[str, str], list[RunRow]] = {}
    for r in sorted(rows, key=lambda r: (r.started_utc, r.run_id)):
        if r.campaign_id is None:
            units.setdefault((r.dut_serial or r.run_id, r.sequence_id), []).append(r)
    out: dict[str, list[int]] = {}
    for runs in units.values():
        first, last = runs[0], runs[-1]
        if since is not None and first.started_utc < since:
            continue
        if key == "week":
            year, week, _ = first.started_utc.isocalendar()
            group = f"{year}-W{week:02d}"
        else:
            group = {
                "sequence": first.sequence_id,
                "station": first.station_id,
                "dut_type": first.dut_part_number or "",
            }[key]
        acc = out.setdefault(group, [0, 0, 0])
        acc[0] += 1
        acc[1] += first.verdict == "PASS"
        acc[2] += last.verdict == "PASS"
    return {k: (a, b, c) for k, (a, b, c) in out.items()}


@pytest.mark.parametrize("by", q.YIELD_BY)
def test_yield_matches_counts_computed_from_the_runs(history: History, by: str) -> None:
    answer = q.yield_(history.store.engine, by=by)
    got = {row["group"]: (row["units"], row["first_pass"], row["final_pass"]) for row in answer.dicts()}
    expected = _yield_by(history.rows, by)
    assert got == expected
    retested = sum(n for n, _, _ in expected.values()) < sum(1 for r in history.rows if r.campaign_id is None)
    assert retested  # the history has retests, so first-pass and final yield differ
    for row in answer.dicts():
        assert row["first_pass_yield"] == round(row["first_pass"] / row["units"], 4)
        assert row["final_pass"] >= row["first_pass"]


def test_yield_since_counts_the_units_first_tested_since(history: History) -> None:
    since = T0 + SPACING * 600
    got = {
        row["group"]: (row["units"], row["first_pass"], row["final_pass"])
        for row in q.yield_(history.store.engine, "sequence", since).dicts()
    }
    assert got == _yield_by(history.rows, "sequence", since)


def test_runs_filters_and_campaign_cells_left_out_unless_asked(history: History) -> None:
    engine = history.store.engine
    production = [r for r in history.rows if r.campaign_id is None]
    assert len(q.runs(engine, station="bench-b").rows) == sum(r.station_id == "bench-b" for r in production)
    assert len(q.runs(engine, verdict="fail").rows) == sum(r.verdict == "FAIL" for r in production)
    cells = len(history.rows) - len(production)
    assert cells > 0
    assert len(q.runs(engine, include_campaigns=True).rows) == len(production) + cells
    since, until = T0 + SPACING * 100, T0 + SPACING * 200
    window = q.runs(engine, sequence="R100-OVERCHARGE", since=since, until=until)
    assert [row["run_id"] for row in window.dicts()] == [
        r.run_id
        for r in sorted(production, key=lambda r: (r.started_utc, r.run_id), reverse=True)
        if r.sequence_id == "R100-OVERCHARGE" and since <= r.started_utc < until
    ]


def test_dut_history_lists_every_run_of_the_serial_with_its_report(history: History) -> None:
    retested = next(r.dut_serial for r in history.rows if r.verdict == "FAIL" and r.campaign_id is None)
    assert retested is not None
    answer = q.dut_history(history.store.engine, retested)
    assert [row["run_id"] for row in answer.dicts()] == [r.run_id for r in history.rows if r.dut_serial == retested]
    assert len(answer.rows) >= 2 and answer.dicts()[0]["verdict"] == "FAIL"
    with pytest.raises(q.QueryError, match="no run of DUT 'nobody' is indexed"):
        q.dut_history(history.store.engine, "nobody")


def test_trend_flags_the_planted_shift(history: History) -> None:
    points = sorted(
        (r.started_utc, r.run_id) for r in history.rows if r.sequence_id == "R100-OVERCHARGE" and r.campaign_id is None
    )
    before = sum(1 for started, _ in points if started < SHIFT_AT)
    trend = q.trend(history.store.engine, "ov_trip_v", last=None, baseline=before)
    assert [row[0] for row in trend.points.rows] == [run_id for _, run_id in points]
    beyond = next(v.points for v in trend.chart.violations if v.rule.number == 1)
    after = range(before, len(points))
    assert len(set(beyond) & set(after)) >= 0.9 * len(after)  # a 5 sigma shift: nearly every point beyond 3 sigma
    assert len([i for i in beyond if i < before]) <= 0.01 * before
    assert set(after) <= set(trend.chart.flagged)
    flagged_runs = {row[3] for row in trend.violations().rows}
    assert {points[i][1] for i in after} <= flagged_runs


def test_trend_grouped_by_software_version_shows_the_shifted_version(history: History) -> None:
    trend = q.trend(history.store.engine, "ov_trip_v", group_by_sw_version=True)
    means = {row[0]: row[2] for row in trend.summary().rows[1:]}
    assert list(means) == ["1.0.0", "1.1.0", "1.2.0"]
    assert trend.versions is not None and trend.versions == sorted(v or "" for v in trend.versions)
    assert means["1.2.0"] - means["1.1.0"] > 2 * 0.004  # the shift lands in the last version's runs


def test_cpk_against_a_hand_computation(history: History) -> None:
    values = [
        m.value
        for r in sorted(history.rows, key=lambda r: (r.started_utc, r.run_id))
        if r.campaign_id is None and r.started_utc < SHIFT_AT
        for m in r.measurements
        if m.name == "ot_trip_c" and m.value is not None
    ]
    mean = sum(values) / len(values)
    mr_bar = sum(abs(b - a) for a, b in itertools.pairwise(values)) / (len(values) - 1)
    sigma = mr_bar / 1.128
    high = 65.0  # R100-THERMAL records an upper limit only: Cpk is its one side, Cp undefined
    answer = q.cpk(history.store.engine, "ot_trip_c", until=SHIFT_AT)
    assert answer.capability.n == len(values)
    assert answer.capability.cpk == pytest.approx((high - mean) / (3 * sigma), rel=1e-9)
    assert answer.capability.cp is None
    assert answer.capability.ppk == pytest.approx((high - mean) / (3 * statistics.stdev(values)), rel=1e-9)


def test_unknown_measurement_is_one_line_with_a_suggestion(history: History) -> None:
    with pytest.raises(q.QueryError, match=r"no measurement named 'ov_trip' is indexed; did you mean 'ov_trip_v'\?"):
        q.trend(history.store.engine, "ov_trip")


def test_cli_trend_writes_the_chart_and_lists_the_violations(
    history: History, history_url: str, tmp_path: Path
) -> None:
    png = tmp_path / "trend.png"
    out = bench("db", "trend", "ov_trip_v", "--by-sw-version", "--last", "0", "-o", png, "--db", history_url, "--json")
    assert out.rc == 0, out.err
    answer = json.loads(out.out)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    flagged_after = {v["run_id"] for v in answer["violations"]}
    shifted = {r.run_id for r in history.rows if r.sequence_id == "R100-OVERCHARGE" and r.started_utc >= SHIFT_AT}
    assert shifted & flagged_after  # the planted shift is listed
    assert len(answer["points"]) == sum(
        1 for r in history.rows if r.sequence_id == "R100-OVERCHARGE" and r.campaign_id is None
    )
    assert [row["sw_version"] for row in answer["limits"]] == ["all", "1.0.0", "1.1.0", "1.2.0"]


def test_cli_answers_in_one_formatter_table_json_csv(history: History, history_url: str) -> None:
    table = bench("db", "yield", "--by", "station", "--db", history_url)
    as_json = bench("db", "yield", "--by", "station", "--db", history_url, "--json")
    as_csv = bench("db", "yield", "--by", "station", "--db", history_url, "--csv")
    assert table.rc == as_json.rc == as_csv.rc == 0, table.err + as_json.err + as_csv.err
    rows = json.loads(as_json.out)
    parsed = list(csv.DictReader(io.StringIO(as_csv.out)))
    assert [r["group"] for r in rows] == [r["group"] for r in parsed] == ["bench-a", "bench-b", "bench-c", "sim"]
    assert [str(r["first_pass"]) for r in rows] == [r["first_pass"] for r in parsed]
    lines = table.out.splitlines()
    assert lines[0].split() == list(rows[0]) and len(lines) == 2 + len(rows)
    assert lines[2].split()[:3] == ["bench-a", str(rows[0]["units"]), str(rows[0]["first_pass"])]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("trend", "ov_trip"), "error: no measurement named 'ov_trip' is indexed; did you mean 'ov_trip_v'?"),
        (("runs", "--since", "2026-13-01"), "error: --since '2026-13-01': not a date (2026-11-01) or an instant"),
        (
            ("yield", "--by", "stations"),
            "error: yield by 'stations': expected one of sequence, dut_type, station, week",
        ),
        (("affected", "--equipment", "PA-77", "--since", "2026-01-01"), "error: no run used equipment 'PA-77'"),
        (("cpk", "ov_trip_v", "--json", "--csv"), "error: --json and --csv: choose one"),
    ],
    ids=["measurement", "date", "yield-by", "equipment", "formats"],
)
def test_cli_bad_input_is_one_line_and_exit_2(
    history: History, history_url: str, args: tuple[str, ...], message: str
) -> None:
    out = bench("db", *args, "--db", history_url)
    assert out.rc == 2
    assert out.err.strip().startswith(message) and len(out.err.strip().splitlines()) == 1
    assert out.out == ""


def test_sqlite_keeps_its_planner_statistics_as_the_runs_grow(tmp_path: Path) -> None:
    """Without ANALYZE's statistics SQLite plans blind; the store gathers them again whenever the
    runs have doubled, so that they never lag the table by more than half."""
    rows = list(generate(300))
    with open_store(f"sqlite:///{tmp_path / 'results.db'}") as store:
        analysed: list[tuple[int, int]] = []
        for start in range(0, len(rows), 25):
            store.index_many(rows[start : start + 25])
            with store.engine.connect() as conn:
                stat = conn.exec_driver_sql("SELECT stat FROM sqlite_stat1 WHERE tbl = 'runs' LIMIT 1").scalar_one()
            analysed.append((start + 25, int(stat.split()[0])))
    assert all(2 * seen > runs for runs, seen in analysed), analysed
    assert len({seen for _, seen in analysed}) < len(analysed)  # gathered again only as the table doubles
