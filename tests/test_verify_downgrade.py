"""A signed record rewritten and stripped of its signature (a "downgrade" to unsigned).

Whoever can write to a run folder can edit a line of the event log, recompute every chain link
and every hash of the manifest, set ``signer: null`` and delete ``manifest.sig``: the folder is
then consistent with itself, like any unsigned record. ``bench verify`` cannot tell it from an
honest unsigned run, so it must never present it like a signed one, must warn when this machine
has a station key (its own runs are signed), and must refuse it under ``--require-signature`` or
the ``BENCH_REQUIRE_SIGNATURE`` policy.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from bench.record.chain import GENESIS, encode_line, line_hash
from bench.record.manifest import canonical_json, file_sha256, manifest_self_sha256
from tests.conftest import Completed, bench


def downgrade(run: Path, *, drop_signer_key: bool = False) -> None:
    """Rewrite the record as an attacker with write access would, leaving no inconsistency."""
    path = run / "events.jsonl"
    objs = [json.loads(line) for line in path.read_bytes().splitlines()]
    edited = next(o for o in objs if o["kind"] == "step_ended")
    edited["message"] = "rewritten after the run"
    prev = GENESIS
    out = b""
    for obj in objs:
        obj["prev"] = prev
        line = encode_line(obj)
        prev = line_hash(line)
        out += line + b"\n"
    path.write_bytes(out)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["events"]["last_hash"] = prev
    manifest["files"]["events.jsonl"] = file_sha256(path)
    if drop_signer_key:
        del manifest["signer"]
    else:
        manifest["signer"] = None
    manifest["self_sha256"] = manifest_self_sha256(manifest)
    (run / "manifest.json").write_bytes(canonical_json(manifest))
    (run / "manifest.sig").unlink()
    # The PDF's seal names the manifest it was made for: made again for the rewritten one, unsigned.
    seal_path = run / "report-pdf.json"
    if seal_path.exists():
        seal = json.loads(seal_path.read_text())
        seal["manifest_sha256"] = file_sha256(run / "manifest.json")
        seal["self_sha256"] = hashlib.sha256(
            canonical_json({k: v for k, v in seal.items() if k != "self_sha256"})
        ).hexdigest()
        seal_path.write_text(json.dumps(seal, indent=2) + "\n")
        (run / "report-pdf.sig").unlink(missing_ok=True)


@pytest.fixture(params=["signer null", "signer removed"])
def downgraded(request: pytest.FixtureRequest, signed_run: Completed, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(signed_run.run_dir(), run)
    downgrade(run, drop_signer_key=request.param == "signer removed")
    return run


def verify(run: Path, *extra: str, key: Path, env: dict[str, str] | None = None) -> Completed:
    return bench("verify", run, *extra, env={"BENCH_KEY_DIR": str(key), **(env or {})})


def test_the_signed_original_is_intact_and_signed(signed_run: Completed, station_key: Path) -> None:
    original = signed_run.run_dir()
    r = verify(original, key=station_key)
    assert r.rc == 0, r.err
    assert "intact and signed" in r.out and "UNSIGNED" not in r.out and r.err == ""
    assert verify(original, "--require-signature", key=station_key).rc == 0
    assert verify(original, key=station_key, env={"BENCH_REQUIRE_SIGNATURE": "1"}).rc == 0


def test_a_downgraded_record_never_reads_like_a_signed_one(downgraded: Path, station_key: Path, tmp_path: Path) -> None:
    # On another machine, without a station key: accepted as unsigned, but said plainly.
    r = verify(downgraded, key=tmp_path / "no-key")
    assert r.rc == 0, r.err
    assert "intact but UNSIGNED" in r.out
    assert "signed (" not in r.out and "intact and signed" not in r.out and "intact (" not in r.out
    assert "authorship" in r.out  # what it does not prove is on the same line
    assert "WARNING" not in r.err


def test_verify_warns_on_a_machine_that_holds_the_station_key(downgraded: Path, station_key: Path) -> None:
    r = verify(downgraded, key=station_key)
    assert r.rc == 0
    assert "intact but UNSIGNED" in r.out
    warnings = [line for line in r.err.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1, r.err
    assert "station key" in warnings[0] and "--require-signature" in warnings[0]


def test_require_signature_refuses_an_unsigned_record(downgraded: Path, station_key: Path) -> None:
    r = verify(downgraded, "--require-signature", key=station_key)
    assert r.rc == 1
    assert r.out == ""
    assert len(r.err.strip().splitlines()) == 1, r.err
    assert "UNSIGNED" in r.err and "refused" in r.err


@pytest.mark.parametrize("value", ["1", "true", "yes"])
def test_the_environment_policy_turns_the_requirement_on(downgraded: Path, station_key: Path, value: str) -> None:
    r = verify(downgraded, key=station_key, env={"BENCH_REQUIRE_SIGNATURE": value})
    assert r.rc == 1 and len(r.err.strip().splitlines()) == 1, r.out + r.err
    assert "BENCH_REQUIRE_SIGNATURE" in r.err


def test_the_policy_off_and_a_bad_policy_value(downgraded: Path, tmp_path: Path) -> None:
    nokey = tmp_path / "no-key"
    assert verify(downgraded, key=nokey, env={"BENCH_REQUIRE_SIGNATURE": "0"}).rc == 0
    r = verify(downgraded, key=nokey, env={"BENCH_REQUIRE_SIGNATURE": "maybe"})
    assert r.rc == 2 and r.err.startswith("error: ") and len(r.err.strip().splitlines()) == 1, r.err
    assert "Traceback" not in r.err
