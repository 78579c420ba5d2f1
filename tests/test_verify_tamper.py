"""``verify_run`` finds every kind of change to a sealed run folder, and names where."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.record import EventLog, verify_run, write_manifest
from bench.record.manifest import canonical_json

N_EVENTS = 50
EVENTS = "events.jsonl"


@pytest.fixture(scope="module")
def sealed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A realistic run folder: event log, binary bus log, result, reports, a nested file."""
    run = tmp_path_factory.mktemp("runs") / "0190a1b2-run"
    run.mkdir()
    rng = random.Random(7)
    log = EventLog(run / EVENTS)
    log.append("run_start", 0.0, run_id="0190a1b2-run", sequence="R100-9G-OVERCHARGE")
    t = 0.0
    for i in range(1, N_EVENTS - 1):
        t += rng.uniform(0.001, 2.0)
        if i % 10 == 0:
            log.append("step", t, index=i // 10, name=f"step {i // 10}", outcome="PASS")
        elif i % 7 == 0:
            log.append("command", t, device="psu", set={"voltage": 850.0, "output": True})
        else:
            log.append("sample", t, signal="bms.cell_v_max", value=round(rng.uniform(3.9, 4.3), 4), unit="V")
    log.append("verdict", t + 0.5, verdict="PASS", reason="all limits met — Zelle OK")
    assert log.count == N_EVENTS
    # Deliberately not closed: sealing must close it first.

    (run / "can.blf").write_bytes(bytes(rng.randrange(256) for _ in range(4096)))
    (run / "result.json").write_text(json.dumps({"run_id": "0190a1b2-run", "verdict": "PASS"}, indent=2))
    (run / "report.html").write_text("<!DOCTYPE html><p>PASS</p>\n")
    (run / "attachments").mkdir()
    (run / "attachments" / "scope.csv").write_text("t,v\n0,1\n")
    write_manifest(
        run,
        events=log,
        info={"run_id": "0190a1b2-run", "sequence": {"id": "R100-9G-OVERCHARGE", "sha256": "ab" * 32}},
    )
    return run


def _lines(run: Path) -> list[bytes]:
    return (run / EVENTS).read_bytes().split(b"\n")[:-1]


def _write_lines(run: Path, lines: list[bytes]) -> None:
    (run / EVENTS).write_bytes(b"".join(line + b"\n" for line in lines))


def edit_middle_value(run: Path) -> None:
    lines = _lines(run)
    obj = json.loads(lines[19])
    assert obj["kind"] == "sample"
    lines[19] = lines[19].replace(b'"value":', b'"value":1', 1)  # still valid JSON, other value
    json.loads(lines[19])
    _write_lines(run, lines)


def edit_middle_byte_breaking_json(run: Path) -> None:
    data = bytearray((run / EVENTS).read_bytes())
    start = sum(len(line) + 1 for line in _lines(run)[:19])
    data[start] = ord("[")
    (run / EVENTS).write_bytes(bytes(data))


def edit_middle_prev(run: Path) -> None:
    lines = _lines(run)
    lines[19] = lines[19][:-3] + (b"0" if lines[19][-3:-2] != b"0" else b"1") + lines[19][-2:]
    _write_lines(run, lines)


def edit_last_line(run: Path) -> None:
    lines = _lines(run)
    lines[-1] = lines[-1].replace(b'"PASS"', b'"FAIL"')
    _write_lines(run, lines)


def delete_middle_line(run: Path) -> None:
    lines = _lines(run)
    del lines[19]
    _write_lines(run, lines)


def delete_last_line(run: Path) -> None:
    _write_lines(run, _lines(run)[:-1])


def delete_last_three_lines(run: Path) -> None:
    _write_lines(run, _lines(run)[:-3])


def truncate_mid_line(run: Path) -> None:
    lines = _lines(run)
    keep = sum(len(line) + 1 for line in lines[:29]) + len(lines[29]) // 2
    (run / EVENTS).write_bytes((run / EVENTS).read_bytes()[:keep])


def truncate_in_last_line(run: Path) -> None:
    (run / EVENTS).write_bytes((run / EVENTS).read_bytes()[:-10])


def remove_final_newline(run: Path) -> None:
    (run / EVENTS).write_bytes((run / EVENTS).read_bytes()[:-1])


def swap_two_lines(run: Path) -> None:
    lines = _lines(run)
    lines[19], lines[20] = lines[20], lines[19]
    _write_lines(run, lines)


def append_forged_line(run: Path) -> None:
    lines = _lines(run)
    last = json.loads(lines[-1])
    forged = {"seq": last["seq"] + 1, "t": last["t"] + 1, "kind": "note", "text": "late edit"}
    forged["prev"] = hashlib.sha256(lines[-1]).hexdigest()
    lines.append(json.dumps(forged, separators=(",", ":")).encode())
    _write_lines(run, lines)


def empty_event_log(run: Path) -> None:
    (run / EVENTS).write_bytes(b"")


def change_binary_file(run: Path) -> None:
    data = bytearray((run / "can.blf").read_bytes())
    data[1000] ^= 0x01
    (run / "can.blf").write_bytes(bytes(data))


def change_result(run: Path) -> None:
    path = run / "result.json"
    path.write_text(path.read_text().replace("PASS", "FAIL"))


def change_nested_file(run: Path) -> None:
    (run / "attachments" / "scope.csv").write_text("t,v\n0,2\n")


def delete_file(run: Path) -> None:
    (run / "report.html").unlink()


def delete_event_log(run: Path) -> None:
    (run / EVENTS).unlink()


def add_extra_file(run: Path) -> None:
    (run / "notes.txt").write_text("added later\n")


def add_extra_nested_file(run: Path) -> None:
    (run / "attachments" / "extra.png").write_bytes(b"\x89PNG\r\n")


def _edit_manifest(run: Path, change: Callable[[dict], None]) -> None:
    path = run / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest, indent=2))


def edit_manifest_field(run: Path) -> None:
    _edit_manifest(run, lambda m: m.update(run_id="someone-else"))


def edit_manifest_hash(run: Path) -> None:
    _edit_manifest(run, lambda m: m["files"].update({"can.blf": "0" * 64}))


def edit_manifest_line_count(run: Path) -> None:
    _edit_manifest(run, lambda m: m["events"].update(lines=49))


def delete_manifest(run: Path) -> None:
    (run / "manifest.json").unlink()


def corrupt_manifest(run: Path) -> None:
    (run / "manifest.json").write_text('{"manifest_version": "1", ')


CASES: list[tuple[Callable[[Path], None], str, str]] = [
    # (tampering, expected `where` of the first problem, expected words in its message)
    (edit_middle_value, f"{EVENTS}:20", "hash chain broken"),
    (edit_middle_byte_breaking_json, f"{EVENTS}:20", "not valid JSON"),
    (edit_middle_prev, f"{EVENTS}:19", "hash chain broken between lines 19 and 20"),
    (edit_last_line, f"{EVENTS}:50", "last line changed"),
    (delete_middle_line, f"{EVENTS}:20", "seq 20, expected 19"),
    (delete_last_line, f"{EVENTS}:50", "1 line(s) missing at the end"),
    (delete_last_three_lines, f"{EVENTS}:48", "3 line(s) missing at the end"),
    (truncate_mid_line, f"{EVENTS}:30", "incomplete last line"),
    (truncate_in_last_line, f"{EVENTS}:50", "incomplete last line"),
    (remove_final_newline, f"{EVENTS}:50", "no final newline"),
    (swap_two_lines, f"{EVENTS}:20", "seq 20, expected 19"),
    (append_forged_line, f"{EVENTS}:51", "appended after sealing"),
    (empty_event_log, f"{EVENTS}:1", "50 line(s) missing"),
    (delete_event_log, EVENTS, "missing"),
    (change_binary_file, "can.blf", "sha256 mismatch"),
    (change_result, "result.json", "sha256 mismatch"),
    (change_nested_file, "attachments/scope.csv", "sha256 mismatch"),
    (delete_file, "report.html", "missing"),
    (add_extra_file, "notes.txt", "not listed"),
    (add_extra_nested_file, "attachments/extra.png", "not listed"),
    (edit_manifest_field, "manifest.json", "self_sha256 mismatch"),
    (edit_manifest_hash, "manifest.json", "self_sha256 mismatch"),
    (edit_manifest_line_count, "manifest.json", "self_sha256 mismatch"),
    (delete_manifest, "manifest.json", "missing"),
    (corrupt_manifest, "manifest.json", "not valid JSON"),
]


def test_untouched_run_verifies(sealed_run: Path) -> None:
    assert verify_run(sealed_run) == []


def test_manifest_lists_every_file_and_the_chain_end(sealed_run: Path) -> None:
    manifest = json.loads((sealed_run / "manifest.json").read_text())
    assert manifest["manifest_version"] == "1"
    assert manifest["run_id"] == "0190a1b2-run"
    assert sorted(manifest["files"]) == [
        "attachments/scope.csv",
        "can.blf",
        EVENTS,
        "report.html",
        "result.json",
    ]
    assert manifest["events"]["file"] == EVENTS
    assert manifest["events"]["lines"] == N_EVENTS
    assert manifest["events"]["last_hash"] == hashlib.sha256(_lines(sealed_run)[-1]).hexdigest()
    body = {k: v for k, v in manifest.items() if k != "self_sha256"}
    assert manifest["self_sha256"] == hashlib.sha256(canonical_json(body)).hexdigest()


def test_signature_file_is_not_an_extra(sealed_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(sealed_run, run)
    (run / "manifest.sig").write_bytes(b"signature bytes")
    assert verify_run(run) == []


@pytest.mark.parametrize(("tamper", "where", "words"), CASES, ids=[c[0].__name__ for c in CASES])
def test_tampering_is_found_where_it_happened(
    sealed_run: Path, tmp_path: Path, tamper: Callable[[Path], None], where: str, words: str
) -> None:
    run = tmp_path / "run"
    shutil.copytree(sealed_run, run)
    tamper(run)
    problems = verify_run(run)
    assert problems, "tampering went undetected"
    first = problems[0]
    assert first.where == where, [str(p) for p in problems]
    assert words in first.message, [str(p) for p in problems]
    assert "\n" not in first.message
    # One change should not drown the reader in consequences.
    assert len(problems) <= 4, [str(p) for p in problems]


def test_info_survives_json_round_trip(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    log = EventLog(run / EVENTS)
    log.append("run_start", 0.0)
    (run / "manifest.json.tmp").write_text("left over from an interrupted seal")
    write_manifest(run, events=log, info={"ids": ("a", "b"), "cal": {10: "x", 2: "y"}, "note": "Prüfstand"})
    assert verify_run(run) == []


def test_event_log_outside_run_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    log = EventLog(tmp_path / EVENTS)
    with pytest.raises(ValueError, match="not inside the run folder"):
        write_manifest(tmp_path / "run", events=log, info={})
