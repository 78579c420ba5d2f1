"""Statements of conformity (ISO/IEC 17025 7.8.6.2 b) and deviations (7.8.2.1 n) for every sequence.

For each sequence file of the library: it loads on the simulated station and passes `bench
validate`'s origin rules; its report is rendered from a record made of the sequence file and a
result with every measure of the sequence (once all PASS, once all FAIL), and the statements
section is read back. The expected origin of each limit is read here from the YAML itself: a
limit that is one parameter has that parameter's origin, anything else is the laboratory's. No
item or lab limit may be stated against a regulation, and every declared deviation is listed.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from bench.plan import build_plan
from bench.report.render import build_html
from bench.result import Measurement, Outcome, RunResult, Verdict
from tests.conftest import ROOT, SIM_STATION, bench

SEQUENCES = sorted((ROOT / "sequences").rglob("*.yaml"))
ONE_PARAM = re.compile(r"^\s*-?\s*\$([A-Za-z_]\w*)\s*$")


def _doc(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    return doc


def _expected_limits(doc: dict[str, Any]) -> dict[str, dict[str, tuple[str, str | None]]]:
    """measure -> bound -> (origin, parameter) as the sequence file declares it."""
    params = doc.get("parameters") or {}
    out: dict[str, dict[str, tuple[str, str | None]]] = {}
    for step in (doc.get("steps") or []) + (doc.get("cleanup") or []):
        spec = step.get("measure") if isinstance(step, dict) else None
        if not spec:
            continue
        for bound in ("min", "max"):
            if spec.get(bound) is None:
                continue
            one = ONE_PARAM.match(str(spec[bound]))
            if one:
                p = params[one.group(1)]
                out.setdefault(spec["name"], {})[bound] = (p["origin"], one.group(1))
            else:
                out.setdefault(spec["name"], {})[bound] = ("lab", None)
    return out


def _record(tmp: Path, sequence: Path, outcome: Outcome, measures: dict[str, dict[str, Any]]) -> Path:
    """A run folder with what the report reads: result.json, the run_started event and inputs/."""
    run = tmp / f"run-{outcome}"
    (run / "inputs").mkdir(parents=True)
    (run / "inputs" / "sequence.yaml").write_bytes(sequence.read_bytes())
    event = {"kind": "run_started", "t": 0.0, "inputs": {"sequence": "inputs/sequence.yaml"}}
    (run / "events.jsonl").write_text(json.dumps(event) + "\n")
    doc = _doc(sequence)
    measurements = [
        Measurement.model_validate(
            dict(
                name=name,
                step=name,
                # FAIL: above the upper limit, or below the lower one when there is no upper limit.
                value=1.5 if outcome == Outcome.PASS else (3.0 if "max" in bounds else 0.0),
                unit="x",
                low=1.0 if "min" in bounds else None,
                high=2.0 if "max" in bounds else None,
                outcome=outcome,
                t=1.0,
                how="synthetic",
                decision="simple acceptance",
            )
        )
        for name, bounds in measures.items()
    ]
    result = RunResult.model_validate(
        dict(
            run_id=f"conformity-{outcome}",
            verdict=Verdict.PASS if outcome == Outcome.PASS else Verdict.FAIL,
            reason="synthetic",
            sequence={"id": doc["id"], "title": doc["title"], "version": doc["version"], "basis": doc["basis"]},
            station={"id": "sim", "simulated": True, "virtual_time": True},
            parameters=[],
            faults=[],
            seed=1,
            started_utc="2026-12-03T00:00:00Z",
            ended_utc="2026-12-03T00:00:01Z",
            sim_duration_s=1.0,
            wall_duration_s=1.0,
            steps=[],
            measurements=measurements,
            marks={},
            devices=[],
            safe_state=[],
            code_version="test",
            deviations=["parameter observation overridden: 1 s instead of 1 h (method default)"],
        )
    )
    (run / "result.json").write_text(result.model_dump_json())
    return run


def _section(html: str, start: str, end: str) -> str:
    return html[html.index(start) : html.index(end)]


def test_every_sequence_is_in_the_library() -> None:
    assert len(SEQUENCES) >= 23


@pytest.mark.parametrize("path", SEQUENCES, ids=[p.stem for p in SEQUENCES])
def test_statements_name_only_the_specification_of_each_limit(path: Path, tmp_path: Path) -> None:
    from bench.origins import problems

    plan = build_plan(path, SIM_STATION)  # loads on the simulated station
    assert problems(plan.sequence) == [], "bench validate refuses it"
    doc = _doc(path)
    expected = _expected_limits(doc)
    params = doc.get("parameters") or {}
    regulation_words = [doc["basis"]["standard"], "(regulation)", "conforms to the limit of"]
    for outcome in (Outcome.PASS, Outcome.FAIL):
        run = _record(tmp_path, path, outcome, {m: dict.fromkeys(b) for m, b in expected.items()})
        text_html = build_html(run, with_plots=False)
        statements = _section(text_html, "<h2>7.", "<h2>8.")
        items = re.findall(r'<li data-origin="([^"]*)">(.*?)</li>', statements)
        assert len(items) == sum(len(b) for b in expected.values()), statements
        for (origin, text), (name, bound) in zip(
            items, [(m, b) for m, bs in expected.items() for b in ("min", "max") if b in bs], strict=True
        ):
            want, param = expected[name][bound]
            assert text.startswith(name + " = "), text
            assert origin == want, f"{name} {bound}: stated as {origin}, declared {want}"
            if origin == "regulation":
                assert param is not None and html.escape(params[param]["source"]) in text, text
            else:
                # Never attributed to a regulation: not its standard, not "(regulation)".
                assert not any(w in text for w in regulation_words), (
                    f"{name} {bound} ({origin}) names a regulation: {text}"
                )
                assert ("the item specification" if origin == "item" else "the lab's method limit") in text, text
            # A FAIL's value lies beyond the upper limit (the lower one without an upper): that bound is not met.
            missed = outcome == Outcome.FAIL and bound == ("max" if "max" in expected[name] else "min")
            verb = ("does not conform to", "does not meet") if missed else ("conforms to", "meets")
            assert any(text.startswith(f"{name} = ") and f" {v} " in text for v in verb), text
            assert missed == ("does not" in text), text
        deviations = _section(text_html, "<h2>8.", "<h2>9.")
        declared = doc.get("deviations") or []
        if doc["basis"].get("method") in ("physical", "hil"):
            assert declared, "a method performed at HIL level departs from its basis"
        for d in declared:
            assert html.escape(d) in deviations
        if declared:
            assert "none declared" not in deviations
        assert "parameter observation overridden" in deviations
        assert "None: the method was performed as written" not in text_html


def test_a_record_without_its_sequence_attributes_no_limit(tmp_path: Path) -> None:
    """A report of a record whose sequence file cannot be read states no regulation, and no 'no deviations'."""
    path = ROOT / "sequences" / "r100" / "overcharge.yaml"
    expected = _expected_limits(_doc(path))
    run = _record(tmp_path, path, Outcome.PASS, {m: dict.fromkeys(b) for m, b in expected.items()})
    (run / "inputs" / "sequence.yaml").unlink()
    text_html = build_html(run, with_plots=False)
    statements = _section(text_html, "<h2>7.", "<h2>8.")
    origins = set(re.findall(r'<li data-origin="([^"]*)">', statements))
    assert origins == {"unknown"}
    assert "UN R100" not in statements.split("</p>", 2)[-1]
    assert "could not be read from the record" in _section(text_html, "<h2>8.", "<h2>9.")


def test_validate_shows_the_tags_origins_and_deviations() -> None:
    r = bench("validate", ROOT / "sequences" / "r100" / "overcharge.yaml")
    assert r.rc == 0, r.err
    out = r.out
    assert re.search(r"^  basis source: .*GB 38031-2025 8\.2\.14 \[S\]", out, re.M), out
    assert "  deviation: Performed at HIL level" in out
    assert "  limit peak_cell_voltage max $cell_v_limit: item specification" in out
    assert "  limit reaction_time min 0 s: lab method" in out


def test_a_measure_names_the_origin_of_the_limits_written_in_it(tmp_path: Path) -> None:
    from bench.origins import limits
    from bench.plan import load_sequence

    seq = tmp_path / "seq.yaml"
    seq.write_text(
        "id: T\ntitle: t\nversion: '1'\nbasis: {standard: ISO 26262, clause: '4', method: lab}\nrequires: [bms]\n"
        "parameters:\n  fdti: {default: 500 ms, origin: item}\n  frti: {default: 300 ms, origin: item}\n"
        "steps:\n"
        "  - measure: {name: a, expr: '1 s', min: 0 s, max: $fdti + $frti, origin: item, source: safety concept}\n"
        "  - measure: {name: b, expr: '1 s', max: $fdti + $frti}\n"
    )
    _, model = load_sequence(seq)
    got = {(lim.measure, lim.bound): (lim.origin, lim.reference) for lim in limits(model)}
    assert got[("a", "max")] == ("item", "safety concept")
    assert got[("a", "min")] == ("item", "safety concept")
    assert got[("b", "max")][0] == "lab" and "fdti" in got[("b", "max")][1]
    # A regulation's limit written in a step cites its source with a tag, like a parameter.
    seq.write_text(seq.read_text().replace("origin: item, source: safety concept", "origin: regulation"))
    r = bench("validate", seq)
    assert r.rc == 2 and "a regulation limit needs a source" in r.err, r.err
