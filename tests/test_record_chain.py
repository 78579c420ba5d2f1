"""The event log's hash chain: exact bytes, key order, strict JSON."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest

from bench.record.chain import GENESIS, EventLog


def _lines(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return data[:-1].split(b"\n")


def test_lines_chain_and_hashes_are_of_exact_bytes(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.jsonl")
    returned = [
        log.append("run_start", 0.0, run_id="r1"),
        log.append("step", 0.25, index=1, name="set", outcome="PASS"),
        log.append("sample", 1.5, signal="bms.cell_v_max", value=4.21, unit="V"),
    ]
    assert log.count == 3
    assert log.last_hash == returned[-1]
    log.close()

    lines = _lines(tmp_path / "events.jsonl")
    assert len(lines) == 3
    prev = GENESIS
    for i, (raw, digest) in enumerate(zip(lines, returned, strict=True)):
        obj = json.loads(raw)
        assert obj["seq"] == i
        assert obj["prev"] == prev
        assert hashlib.sha256(raw).hexdigest() == digest
        prev = digest


def test_line_layout_is_compact_and_ordered(tmp_path: Path) -> None:
    with EventLog(tmp_path / "e.jsonl") as log:
        log.append("sample", 1.23456789, signal="psu.voltage", value=850.0)
    (raw,) = _lines(tmp_path / "e.jsonl")
    obj = json.loads(raw)
    assert list(obj) == ["seq", "t", "kind", "signal", "value", "prev"]
    assert obj["t"] == 1.234568  # rounded to 1 µs
    assert b" " not in raw
    assert raw == json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def test_non_finite_floats_become_null_everywhere(tmp_path: Path) -> None:
    with EventLog(tmp_path / "e.jsonl") as log:
        log.append("sample", 2.0, value=math.nan, hi=math.inf, nested={"a": [1.0, -math.inf]}, ok=3.5)
    (raw,) = _lines(tmp_path / "e.jsonl")
    assert b"NaN" not in raw and b"Infinity" not in raw
    obj = json.loads(raw)
    assert obj["value"] is None
    assert obj["hi"] is None
    assert obj["nested"] == {"a": [1.0, None]}
    assert obj["ok"] == 3.5


def test_non_ascii_is_written_as_utf8_and_hashed_as_written(tmp_path: Path) -> None:
    with EventLog(tmp_path / "e.jsonl") as log:
        h = log.append("note", 0.0, text="Zelle 3: 65 °C — Überhitzung")
        h_bad = log.append("note", 0.1, text="bad \udce4 byte")  # lone surrogate from a device
    first, second = _lines(tmp_path / "e.jsonl")
    assert "65 °C".encode() in first
    assert hashlib.sha256(first).hexdigest() == h
    assert hashlib.sha256(second).hexdigest() == h_bad
    assert json.loads(second)["prev"] == h
    assert json.loads(second)["text"] == "bad \udce4 byte"


def test_each_line_reaches_the_os_before_close(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    log = EventLog(path)
    log.append("a", 0.0)
    log.append("b", 0.1)
    assert path.read_bytes().count(b"\n") == 2
    log.close()


def test_truncates_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_bytes(b"old content\n")
    with EventLog(path) as log:
        log.append("a", 0.0)
    assert json.loads(_lines(path)[0])["prev"] == GENESIS
    assert len(_lines(path)) == 1


def test_close_is_idempotent_and_final(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "e.jsonl")
    log.append("a", 0.0)
    log.close()
    log.close()
    with pytest.raises(ValueError, match="closed"):
        log.append("b", 1.0)
    assert log.count == 1


@pytest.mark.parametrize("field", ["seq", "prev"])
def test_reserved_field_names_are_refused(tmp_path: Path, field: str) -> None:
    with EventLog(tmp_path / "e.jsonl") as log:
        with pytest.raises(ValueError, match="reserved"):
            log.append("x", 0.0, **{field: 1})
        assert log.count == 0
        assert log.last_hash == GENESIS


def test_unserialisable_value_raises_and_leaves_chain_intact(tmp_path: Path) -> None:
    with EventLog(tmp_path / "e.jsonl") as log:
        with pytest.raises(TypeError):
            log.append("x", 0.0, value=object())
        h = log.append("y", 0.1)
    (raw,) = _lines(tmp_path / "e.jsonl")
    assert json.loads(raw)["seq"] == 0
    assert json.loads(raw)["prev"] == GENESIS
    assert hashlib.sha256(raw).hexdigest() == h
