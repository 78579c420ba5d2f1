"""What the engine's fast per-step path must keep: the same record as the slow path it replaced.

The measurement event is built once from the values the step judged, instead of being dumped
back out of the validated ``Measurement``; the event log's JSON encoder is made once instead of
per line. Both must write exactly what the slower way wrote (docs/performance.md, "The engine's
step"): the event of every measurement is the validated model's dump without its time, and
every line is the bytes ``json.dumps`` gives.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench.events import EventKind
from bench.plan import build_plan
from bench.record.chain import GENESIS, EventLog, encode_line, event_line
from bench.result import Measurement
from bench.runner import run_plan
from tests.conftest import SIM_STATION

SEQUENCE = """\
id: T-STEP-PATH
title: the measurement event and the result agree
version: 1.0.0
basis: {standard: test, clause: engine fast path}
requires: [psu, bms]
steps:
  - set: {psu.voltage_set: 120 V}
  - check: bms.soc > 10 % and bms.contactors == OPEN
  - measure: {name: from_register, signal: bms.cell_v_max, min: 3 V, max: 4.3 V}
  - measure: {name: stated_u, signal: psu.voltage, max: 1000 V, uncertainty: 0.5 V}
  - measure: {name: in_mv, signal: bms.cell_v_max, unit: mV, min: 3000 mV}
  - measure: {name: no_limits, signal: bms.soc}
  - measure: {name: failing, signal: bms.cell_v_max, max: 1 V}
"""


def _events(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def test_measurement_events_are_the_validated_models_dump(tmp_path: Path) -> None:
    path = tmp_path / "steps.yaml"
    path.write_text(SEQUENCE)
    result = run_plan(build_plan(path, SIM_STATION), tmp_path / "reports", full_report=False)
    assert result.verdict.value == "FAIL"  # 'failing' fails, and every measurement is still taken
    events = [e for e in _events(tmp_path / "reports" / result.run_id) if e["kind"] == EventKind.MEASUREMENT]
    assert [e["name"] for e in events] == ["from_register", "stated_u", "in_mv", "no_limits", "failing"]
    for event, kept in zip(events, result.measurements, strict=True):
        fields = {k: v for k, v in event.items() if k not in ("seq", "t", "kind", "prev")}
        # The model validated from the event's fields (and the time the result kept) dumps to the
        # event's fields, in the same order: nothing converted, added or lost on the fast path.
        model = Measurement.model_validate({**fields, "t": kept.t})
        assert model == kept
        # As text: 3 == 3.0 in Python, but not in the record.
        assert json.dumps(model.model_dump(mode="json", exclude={"t"})) == json.dumps(fields)
    assert events[0]["uncertainty"] is not None and events[0]["uncertainty_budget"]
    assert events[1]["uncertainty"] == 0.5
    assert events[4]["outcome"] == "FAIL"


VALUES: list[dict[str, Any]] = [
    {"a": 1.5, "b": [1, "é", None, True], "c": {"d": -0.0, "e": 1e300, "f": 12345678901234567890}},
    {"kind": EventKind.STEP_ENDED, "text": 'quote " backslash \\ tab \t ✓'},
    {"x": 0.1 + 0.2, "y": [], "z": {}},
]


def test_the_encoder_writes_what_json_dumps_writes(tmp_path: Path) -> None:
    for obj in VALUES:
        expected = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
        assert encode_line(obj) == expected
    # The slow paths stay: non-finite floats become null, a lone surrogate is escaped.
    assert encode_line({"v": math.nan, "w": [math.inf]}) == b'{"v":null,"w":[null]}'
    assert encode_line({"s": "\ud800"}) == b'{"s":"\\ud800"}'


@pytest.mark.parametrize(
    ("t", "kind", "fields"),
    [
        (1.25, EventKind.STEP_STARTED, {"step": "00 set", "line": 7, "text": "set psu.voltage_set = 100 V"}),
        (3, "snapshot", {}),
        (0.1 + 0.2, "x", {"v": math.nan, "u": [1.0, math.inf]}),
        (math.nan, "x", {"v": 1}),
        (math.inf, "x", {}),
        (2.5, "x", {"s": "lone \ud800 surrogate", "é": "✓"}),
        (2.5, "kind \ud800", {"a": None}),
        (1e-7, "x", {1: "int key", "b": True, "n": {"deep": [{"x": -0.0}]}}),
    ],
)
def test_event_lines_are_encode_line_of_the_whole_object(t: float, kind: str, fields: dict[Any, Any]) -> None:
    prev = "ab" * 32
    assert event_line(42, t, kind, fields, prev) == encode_line(
        {"seq": 42, "t": t, "kind": kind, **fields, "prev": prev}
    )


def test_the_log_refuses_what_it_cannot_encode_and_keeps_its_chain(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.jsonl")
    first = log.append("a", 0.0, v=1)
    try:
        log.append("b", 1.0, v=object())
    except TypeError as exc:
        assert "not JSON serializable" in str(exc)
    else:
        raise AssertionError("an object that JSON cannot hold was written")
    log.append_fields("c", 2.0, {"v": 2})
    log.close()
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert [json.loads(x)["kind"] for x in lines] == ["a", "c"]
    assert json.loads(lines[0])["prev"] == GENESIS and json.loads(lines[1])["prev"] == first
