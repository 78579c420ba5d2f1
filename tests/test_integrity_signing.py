"""Signed manifests (ISO/IEC 17025 7.11): tampering with any file, the signature, or re-signing with
another key makes ``bench verify`` fail and name what failed; an unsigned record says so."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Completed, bench
from tests.report_support import short_sequence, station_copy


def _verify(run: Path, station_key: Path, *extra: str) -> Completed:
    return bench("verify", run, *extra, env={"BENCH_KEY_DIR": str(station_key)})


def test_keys_init_refuses_to_overwrite_and_keeps_the_key_private(station_key: Path) -> None:
    assert (station_key / "station.key").stat().st_mode & 0o077 == 0
    r = bench("keys", "init", "--dir", station_key)
    assert r.rc == 2 and "already exists" in r.err


def test_signed_run_verifies(signed_run: Completed, station_key: Path) -> None:
    r = _verify(signed_run.run_dir(), station_key)
    assert r.rc == 0, r.err
    assert "intact and signed" in r.out and "Ed25519, station key" in r.out
    pub = (station_key / "station.pub").read_text().strip()
    assert json.loads((signed_run.run_dir() / "manifest.json").read_text())["signer"]["public_key"] == pub


def _flip(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))


def _resign_with_other_key(run: Path, tmp: Path) -> None:
    from bench.record.signing import init_key, load_key, sign_file

    other = tmp / "otherkey"
    init_key(other)
    key = load_key(other)
    assert key is not None
    sign_file(run / "manifest.json", key)


def _bad_signature_bytes(run: Path, tmp: Path) -> None:
    doc = json.loads((run / "manifest.sig").read_text())
    sig = bytearray(base64.b64decode(doc["signature"]))
    sig[0] ^= 0xFF
    doc["signature"] = base64.b64encode(bytes(sig)).decode()
    (run / "manifest.sig").write_text(json.dumps(doc))


def _edit_manifest_and_reseal(run: Path, tmp: Path) -> None:
    # An attacker who edits a file and recomputes every hash in the manifest is caught by the signature.
    from bench.record.manifest import file_sha256, manifest_self_sha256

    result = json.loads((run / "result.json").read_text())
    result["verdict"] = "FAIL"
    (run / "result.json").write_text(json.dumps(result))
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["files"]["result.json"] = file_sha256(run / "result.json")
    manifest["self_sha256"] = manifest_self_sha256(manifest)
    (run / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def _replace_pdf_and_reseal(run: Path, tmp: Path) -> None:
    # The PDF comes after the seal: a replaced PDF with its report-pdf.json recomputed is caught
    # by that file's signature.
    from bench.record.manifest import file_sha256
    from bench.record.pdfseal import _self_sha256

    _flip(run / "report.pdf")
    seal = json.loads((run / "report-pdf.json").read_text())
    seal["sha256"] = file_sha256(run / "report.pdf")
    seal["self_sha256"] = _self_sha256(seal)
    (run / "report-pdf.json").write_text(json.dumps(seal, indent=2) + "\n")


TAMPERS: dict[str, tuple[Callable[[Path, Path], None], str, str]] = {
    "result.json": (lambda r, t: _flip(r / "result.json"), "result.json", "content changed"),
    "report.pdf": (lambda r, t: _flip(r / "report.pdf"), "report.pdf", "content changed"),
    "report.html": (lambda r, t: _flip(r / "report.html"), "report.html", "content changed"),
    "can.mf4": (lambda r, t: _flip(r / "can.mf4"), "can.mf4", "content changed"),
    "can.blf": (lambda r, t: _flip(r / "can.blf"), "can.blf", "content changed"),
    "input": (lambda r, t: _flip(r / "inputs" / "short.yaml"), "inputs/short.yaml", "content changed"),
    "events": (lambda r, t: _flip(r / "events.jsonl"), "events.jsonl", ""),
    "signature bytes": (_bad_signature_bytes, "manifest.sig", "signature does not match"),
    "signature removed": (lambda r, t: (r / "manifest.sig").unlink(), "manifest.sig", "missing"),
    "other key": (_resign_with_other_key, "manifest.sig", "untrusted key"),
    "manifest resealed": (_edit_manifest_and_reseal, "manifest.sig", "signature does not match"),
    "pdf resealed": (_replace_pdf_and_reseal, "report-pdf.sig", "signature does not match"),
    "pdf seal removed": (lambda r, t: (r / "report-pdf.json").unlink(), "report.pdf", "added after sealing"),
    "pdf signature removed": (lambda r, t: (r / "report-pdf.sig").unlink(), "report-pdf.sig", "missing"),
}


@pytest.mark.parametrize("tamper", list(TAMPERS))
def test_tampering_fails_verify_and_names_the_check(
    tamper: str, signed_run: Completed, station_key: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(signed_run.run_dir(), run)
    action, where, message = TAMPERS[tamper]
    action(run, tmp_path)
    r = _verify(run, station_key)
    assert r.rc == 1, r.out + r.err
    assert where in r.err and message in r.err, r.err


def test_another_key_is_accepted_only_when_trusted(signed_run: Completed, station_key: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(signed_run.run_dir(), run)
    _resign_with_other_key(run, tmp_path)
    # The manifest names the station key; a trusted other key still does not match it.
    trusted = tmp_path / "trusted.pub"
    trusted.write_text((tmp_path / "otherkey" / "station.pub").read_text())
    r = _verify(run, station_key, "--trust", str(trusted))
    assert r.rc == 1 and "but the manifest names" in r.err


def test_unsigned_run_says_unsigned(tmp_path: Path) -> None:
    env = {"BENCH_KEY_DIR": str(tmp_path / "no-key-here"), "BENCH_REPORT_PDF": "0"}
    r = bench(
        "run", short_sequence(tmp_path), "--station", station_copy(tmp_path), "--reports", tmp_path / "r", "-q", env=env
    )
    assert r.rc == 0, r.err
    assert not (r.run_dir() / "manifest.sig").exists()
    v = bench("verify", r.run_dir(), env=env)
    assert v.rc == 0 and "intact but UNSIGNED" in v.out
    # A signature file added afterwards is not accepted as part of the record.
    (r.run_dir() / "manifest.sig").write_text("{}")
    v2 = bench("verify", r.run_dir(), env=env)
    assert v2.rc == 1 and "manifest.sig" in v2.err
