"""pytest runs sequence files as test items: ``pytest sequences/``.

Each sequence file under the sequence folders (ini ``bench_sequence_dirs``, default
``sequences``) becomes one test item per simulator configuration: the nominal simulator and,
with ``--faults all`` (the default), every fault mode of the station. A nominal item passes when
the run passes; a fault item passes when the run's verdict is the one the committed expectation
(``--expect``, default ``tests/fault_matrix_expected.yaml``) gives for that cell. So a CI
system shows one JUnit test case per sequence and fault.

The runs themselves are one fault-matrix campaign (bench/campaign.py), started by the first
item and spread over one worker process per core; the items then read their cell. The matrix
and every cell's run record land in ``reports/<campaign id>/``. Without ``--junitxml`` the
JUnit XML goes to ``reports/junit-sequences.xml``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_MATRIX_KEY = pytest.StashKey[Any]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("bench", "sequence files as tests")
    group.addoption("--station", default=None, help="station file for sequence items [default: stations/sim.yaml]")
    group.addoption(
        "--faults", default="all", help="fault modes to run each sequence against: all (default), none, or a comma list"
    )
    group.addoption("--expect", default=None, help="expected fault matrix [default: tests/fault_matrix_expected.yaml]")
    group.addoption("--bench-reports", default="reports", help="folder for the campaign's records")
    parser.addini("bench_sequence_dirs", "folders whose *.yaml files are sequences", type="args", default=["sequences"])


def _sequence_dirs(config: pytest.Config) -> list[Path]:
    return [(config.rootpath / d).resolve() for d in config.getini("bench_sequence_dirs")]


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # Before the junitxml plugin reads the option: sequence runs always leave a JUnit file.
    dirs = _sequence_dirs(config)
    wants_sequences = any(
        any(Path(str(a).split("::")[0]).resolve().is_relative_to(d) for d in dirs) for a in config.args
    )
    if wants_sequences and not getattr(config.option, "xmlpath", None):
        config.option.xmlpath = str(config.rootpath / config.getoption("bench_reports") / "junit-sequences.xml")


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Collector | None:
    if file_path.suffix != ".yaml":
        return None
    if not any(file_path.resolve().is_relative_to(d) for d in _sequence_dirs(parent.config)):
        return None
    return SequenceFile.from_parent(parent, path=file_path)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under pytest-xdist: every sequence item on one worker, test modules whole.

    The first sequence item of a process runs the campaign for all the sequence items that process
    collected (``_matrix``). Spread over several workers, each would run the whole matrix again.
    Test modules stay whole so that their module-scoped fixtures (a served station, a run) are
    set up once. The largest unit, the matrix, is handed out first.
    """
    from xdist.scheduler import LoadScopeScheduling  # type: ignore[import-untyped]

    dirs = _sequence_dirs(config)

    class SequencesTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = nodeid.split("::", 1)[0]
            if file.endswith(".yaml") and any((config.rootpath / file).resolve().is_relative_to(d) for d in dirs):
                return "bench sequence items"
            return file

    return SequencesTogether(config, log)


class SequenceFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        from bench.campaign import NOMINAL, station_fault_names
        from bench.plan import load_sequence

        _, model = load_sequence(self.path)
        station = _station(self.config)
        for fault in [NOMINAL, *station_fault_names(station, self.config.getoption("faults"))]:
            item = SequenceItem.from_parent(self, name=f"{model.id}[{fault}]", sequence_id=model.id, fault=fault)
            # The first item runs the whole campaign; a per-test timeout must not cut it short.
            item.add_marker(pytest.mark.timeout(3600))
            yield item


class SequenceItem(pytest.Item):
    def __init__(self, *, sequence_id: str, fault: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sequence_id = sequence_id
        self.fault = fault

    def runtest(self) -> None:
        from bench.campaign import NOMINAL

        matrix, expected = _matrix(self.session)
        cell = matrix.cell(self.sequence_id, self.fault)
        assert cell is not None
        self.user_properties.append(("verdict", cell.verdict))
        self.user_properties.append(("run_id", cell.run_id))
        want = expected.get(self.sequence_id, {}).get(self.fault)
        if want is None:
            if self.fault == NOMINAL:
                want = "PASS"
            else:
                raise SequenceMismatch(
                    f"no expected verdict for {self.sequence_id} x {self.fault}; observed {cell.verdict}:"
                    f" {cell.reason} (record it in the expectation file after review)"
                )
        if cell.verdict != want:
            raise SequenceMismatch(f"expected {want}, observed {cell.verdict}: {cell.reason} [run {cell.run_id}]")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, SequenceMismatch):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return (
            self.path,
            0,
            f"{self.sequence_id} on {'the nominal simulator' if self.fault == 'nominal' else self.fault}",
        )


class SequenceMismatch(AssertionError):
    pass


def _station(config: pytest.Config) -> Path:
    given = config.getoption("station")
    return Path(given) if given else config.rootpath / "stations" / "sim.yaml"


def _matrix(session: pytest.Session) -> tuple[Any, dict[str, dict[str, str]]]:
    """Run every selected sequence item as one campaign, once per session."""
    if _MATRIX_KEY in session.stash:
        result: tuple[Any, dict[str, dict[str, str]]] = session.stash[_MATRIX_KEY]
        return result
    import uuid6

    from bench.campaign import NOMINAL, load_expected, print_progress, run_campaign
    from bench.clock import utc

    config = session.config
    items = [i for i in session.items if isinstance(i, SequenceItem)]
    sequences = {i.sequence_id: i.path for i in items}
    faults = list(dict.fromkeys(i.fault for i in items if i.fault != NOMINAL))
    expect_opt = config.getoption("expect")
    expect_path = Path(expect_opt) if expect_opt else config.rootpath / "tests" / "fault_matrix_expected.yaml"
    params: dict[str, str] = {}
    expected: dict[str, dict[str, str]] = {}
    if expect_path.is_file():
        params, expected = load_expected(expect_path)
    elif expect_opt or faults:
        raise pytest.UsageError(f"{expect_path}: no expected fault matrix (needed for fault items; or --faults none)")
    campaign_id = str(uuid6.uuid7())
    out = config.rootpath / config.getoption("bench_reports") / campaign_id
    started = utc(time.time())
    capman = config.pluginmanager.getplugin("capturemanager")
    # One line per finished run on the terminal: the campaign takes minutes.
    with capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext():
        print(f"\nbench: running {len(sequences)} sequences x {len(faults) + 1} simulator configurations", flush=True)
        matrix = run_campaign(
            sequences, _station(config), faults, params, out, campaign_id, started, progress=print_progress
        )
    from bench.campaign import write_matrix

    write_matrix(matrix, out)
    session.stash[_MATRIX_KEY] = (matrix, expected)
    return matrix, expected
