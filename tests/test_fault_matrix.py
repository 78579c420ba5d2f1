"""The committed fault matrix and the campaign command.

The full matrix runs as `pytest sequences/` items (bench/pytest_plugin.py), each cell compared
with tests/fault_matrix_expected.yaml. Here: the expectation itself is convincing and covers
every sequence file and every fault mode of the station, and `bench campaign` writes the matrix
and compares it, on a small slice.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from bench.campaign import collect_sequences, faults_out_of_reach, load_expected, run_cell, station_fault_names
from bench.matrix import CAUGHT, NOMINAL
from tests.conftest import ROOT, SIM_STATION, bench

EXPECTED = ROOT / "tests" / "fault_matrix_expected.yaml"
SEQUENCES = ROOT / "sequences"
# Fault modes of the station's own instruments: a broken instrument stops the bench (ERROR).
INSTRUMENT_FAULTS = {"h2_sensor_silent", "h2_sensor_disconnected"}


@pytest.fixture(scope="module")
def expected() -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    return load_expected(EXPECTED)


def test_expectation_covers_every_sequence_and_fault(
    expected: tuple[dict[str, str], dict[str, dict[str, str]]],
) -> None:
    _, cells = expected
    sequences = collect_sequences([SEQUENCES])
    faults = station_fault_names(SIM_STATION, "all")
    assert set(cells) == set(sequences)
    assert len(sequences) >= 14 and len(faults) >= 20
    for seq, row in cells.items():
        assert set(row) == {NOMINAL, *faults}, f"{seq}: cells missing or unknown"


def test_expectation_is_a_convincing_matrix(expected: tuple[dict[str, str], dict[str, dict[str, str]]]) -> None:
    _, cells = expected
    faults = station_fault_names(SIM_STATION, "all")
    for seq, row in cells.items():
        assert row[NOMINAL] == "PASS", f"{seq} must pass on the nominal simulator"
        assert any(row[f] in CAUGHT for f in faults), f"{seq}: no fault mode makes it fail (empty row)"
    for f in faults:
        verdicts = {row[f] for row in cells.values()}
        if f in INSTRUMENT_FAULTS:
            assert "ERROR" in verdicts, f"{f}: the bench must stop on its broken instrument"
        else:
            # A defect of the item or the rig is caught by a sequence's own criteria.
            assert verdicts & {"FAIL", "ABORTED"}, f"fault {f}: no sequence catches it (empty column)"


def test_campaign_writes_the_matrix_and_compares_it(
    tmp_path: Path, expected: tuple[dict[str, str], dict[str, dict[str, str]]]
) -> None:
    params, cells = expected
    picks = {
        "R100-6.13-CONTROL-FAILURE-WARNING": "warning_control_failure.yaml",
        "R134-VALVE-FAILSAFE": "valve_failsafe.yaml",
    }
    faults = ["command_timeout_ignored", "shutoff_valve_normally_open"]
    subset = tmp_path / "expected.yaml"
    YAML(typ="safe").dump(
        {"params": params, "sequences": {s: {f: cells[s][f] for f in [NOMINAL, *faults]} for s in picks}}, subset
    )
    paths = [p for p in SEQUENCES.rglob("*.yaml") if p.name in picks.values()]
    args = [a for k, v in params.items() for a in ("-p", f"{k}={v}")]
    run = bench(
        "campaign",
        *paths,
        "--faults",
        ",".join(faults),
        "--reports",
        tmp_path,
        "--expect",
        subset,
        *args,
        "--jobs",
        "1",
    )
    assert run.rc == 0, run.out + run.err
    assert "the matrix is complete and as expected" in run.out
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    data = json.loads((folder / "fault-matrix.json").read_text())
    assert data["columns"] == [NOMINAL, *faults]
    assert len(data["cells"]) == 6 and not data["findings"]
    for cell in data["cells"]:
        assert (folder / "runs" / cell["run_id"] / "result.json").is_file()
        assert cell["verdict"] == cells[cell["sequence"]][cell["fault"]]
    html = (folder / "fault-matrix.html").read_text()
    assert "R134-VALVE-FAILSAFE" in html and "shutoff_valve_normally_open" in html
    # One progress line per cell on stderr.
    assert sum(1 for line in run.err.splitlines() if line.startswith("[")) == 6
    # The FCCU's fault cannot act on the BMS sequence (no FCCU plant in its runs): that cell stands
    # on the nominal run instead of repeating it.
    idle = [(c["sequence"], c["fault"], c["same_as"]) for c in data["cells"] if c["same_as"]]
    assert idle == [("R100-6.13-CONTROL-FAILURE-WARNING", "shutoff_valve_normally_open", NOMINAL)]
    assert len(list((folder / "runs").iterdir())) == 5
    assert "5 runs in" in html


def test_a_fault_of_a_simulator_the_sequence_does_not_start_leaves_the_nominal_run(tmp_path: Path) -> None:
    """What lets the campaign skip such a cell: run anyway, it is the nominal run in every respect."""
    sequence = next(SEQUENCES.rglob("warning_control_failure.yaml"))
    fault = "shutoff_valve_normally_open"
    assert faults_out_of_reach({"S": sequence}, SIM_STATION, [fault], {}) == {("S", fault): ["fccu"]}
    nominal = run_cell(str(sequence), str(SIM_STATION), NOMINAL, {}, str(tmp_path / "a"), 1)
    faulted = run_cell(str(sequence), str(SIM_STATION), fault, {}, str(tmp_path / "b"), 1)
    assert nominal.verdict == "PASS"
    same = ("verdict", "reason", "sim_s", "unsafe_end", "measurements")
    assert [getattr(faulted, k) for k in same] == [getattr(nominal, k) for k in same]
    # ... while a fault of the BMS's own simulator is in reach of it.
    assert faults_out_of_reach({"S": sequence}, SIM_STATION, ["command_timeout_ignored"], {}) == {}


def test_a_differing_cell_fails_the_campaign(
    tmp_path: Path, expected: tuple[dict[str, str], dict[str, dict[str, str]]]
) -> None:
    params, _ = expected
    wrong = tmp_path / "expected.yaml"
    YAML(typ="safe").dump({"params": params, "sequences": {"R134-VALVE-FAILSAFE": {NOMINAL: "FAIL"}}}, wrong)
    path = SEQUENCES / "r134" / "valve_failsafe.yaml"
    args = [a for k, v in params.items() for a in ("-p", f"{k}={v}")]
    run = bench("campaign", path, "--faults", "none", "--reports", tmp_path, "--expect", wrong, *args)
    assert run.rc == 1
    assert "R134-VALVE-FAILSAFE x nominal: expected FAIL, observed PASS" in run.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--faults", "no_such_fault"], "unknown fault 'no_such_fault'"),
        (["-p", "nonsense=1 s"], "-p nonsense: no sequence declares this parameter"),
        (["-p", "observation=3 A"], "wrong unit"),
    ],
)
def test_bad_campaign_input_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    run = bench(
        "campaign", SEQUENCES / "r134" / "valve_failsafe.yaml", SEQUENCES / "r100", "--reports", tmp_path, *args
    )
    assert run.rc == 2
    assert message in run.err and "Traceback" not in run.err
    assert len(run.err.strip().splitlines()) == 1


def test_bench_faults_lists_each_fault_once_with_its_plants() -> None:
    run = bench("faults")
    assert run.rc == 0, run.err
    names = [line.split()[0] for line in run.out.splitlines()]
    assert names == sorted(set(names)) and set(names) == set(station_fault_names(SIM_STATION, "all"))
    stuck = next(line for line in run.out.splitlines() if line.startswith("h2_sensor_stuck"))
    assert stuck.endswith("[bms_pack, fccu]")  # the sensor model's faults act on both plants' sensors


def test_under_xdist_the_sequence_items_share_one_campaign(tmp_path: Path) -> None:
    # Spread over two workers without the plugin's scheduler, each worker ran its own campaign.
    picks = [SEQUENCES / "r100" / "warning_control_failure.yaml", SEQUENCES / "r134" / "valve_failsafe.yaml"]
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-n",
            "2",
            "-p",
            "no:cacheprovider",
            *map(str, picks),
            "--faults",
            "none",
            "--bench-reports",
            str(tmp_path),
            "--rootdir",
            str(ROOT),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 passed" in run.stdout
    campaigns = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(campaigns) == 1, campaigns
    cells = json.loads((campaigns[0] / "fault-matrix.json").read_text())["cells"]
    assert sorted(c["sequence"] for c in cells) == ["R100-6.13-CONTROL-FAILURE-WARNING", "R134-VALVE-FAILSAFE"]
