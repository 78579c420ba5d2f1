"""The PDF of a run's report, written after the record is sealed, and the file that vouches for it.

A run's verdict, record and manifest are final before its PDF is typeset (docs/lifecycle.md,
stage 8): the PDF is a rendering of the sealed ``report.html``, and a typesetter that fails is
an error of the report, not of the run. The manifest therefore cannot list ``report.pdf``;
``report-pdf.json`` does instead, pinned to the manifest it follows:

* ``manifest_sha256``: SHA-256 of the exact bytes of ``manifest.json``;
* ``source``: ``report.html`` and its SHA-256 as the manifest lists it;
* ``file`` and ``sha256`` of ``report.pdf``, or ``file: null`` and ``error`` (what failed);
* ``self_sha256``: its own seal, as the manifest's.

It is signed (``report-pdf.sig``) with the key that signed the manifest. ``bench verify``
accepts the three files after the seal only as this file vouches for them: a PDF changed,
added without it, or vouched for by a file made for another manifest is reported.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.record.manifest import MANIFEST_NAME, canonical_json, file_sha256

if TYPE_CHECKING:
    from bench.record.verify import Problem

PDF_NAME = "report.pdf"
SEAL_NAME = "report-pdf.json"
SEAL_SIGNATURE = "report-pdf.sig"
SEAL_VERSION = "1"


def _self_sha256(doc: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json({k: v for k, v in doc.items() if k != "self_sha256"})).hexdigest()


def seal_pdf(run_dir: Path, error: str | None, typesetter: str) -> Path:
    """Write ``report-pdf.json`` for the ``report.pdf`` now in ``run_dir`` (or for ``error``), and sign it
    when the manifest was signed. Raises ``OSError`` (a full disk) for the caller to note."""
    manifest_path = run_dir / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    pdf = run_dir / PDF_NAME
    doc: dict[str, Any] = {
        "report_pdf_version": SEAL_VERSION,
        "run_id": manifest.get("run_id"),
        "manifest_sha256": file_sha256(manifest_path),
        "source": {"file": "report.html", "sha256": manifest.get("files", {}).get("report.html")},
        "typesetter": typesetter,
    }
    if error is None and pdf.is_file():
        doc.update(file=PDF_NAME, sha256=file_sha256(pdf))
    else:
        doc.update(file=None, error=error or "report.pdf was not written")
    doc["self_sha256"] = _self_sha256(doc)
    target = run_dir / SEAL_NAME
    tmp = run_dir / f".{SEAL_NAME}.tmp"
    try:
        tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    if manifest.get("signer"):
        from bench.record.signing import load_key, sign_file

        key = load_key()
        if key is not None:
            sign_file(target, key)
    return target


def pdf_error(run_dir: Path | str) -> str | None:
    """What ``report-pdf.json`` says failed, if it says so."""
    try:
        doc = json.loads((Path(run_dir) / SEAL_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    error = doc.get("error") if isinstance(doc, dict) else None
    return str(error) if error else None


def check_pdf_seal(run_dir: Path, manifest: dict[str, Any], trust: Path | None) -> tuple[set[str], list[Problem]]:
    """The files after the seal that ``report-pdf.json`` vouches for, and what is wrong with them."""
    from bench.record.verify import Problem

    run_dir = Path(run_dir)
    seal = run_dir / SEAL_NAME
    if not seal.is_file():
        return set(), []  # no PDF was typeset after the seal (or none was wanted)
    vouched = {SEAL_NAME}
    try:
        doc = json.loads(seal.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return vouched, [Problem(SEAL_NAME, f"not valid JSON ({exc})")]
    if not isinstance(doc, dict) or doc.get("report_pdf_version") != SEAL_VERSION:
        return vouched, [Problem(SEAL_NAME, "not a report-pdf seal this version of bench reads")]
    problems: list[Problem] = []
    if doc.get("self_sha256") != _self_sha256(doc):
        problems.append(Problem(SEAL_NAME, "content changed (self_sha256 mismatch)"))
    if doc.get("manifest_sha256") != file_sha256(run_dir / MANIFEST_NAME):
        problems.append(Problem(SEAL_NAME, "made for another manifest.json (manifest_sha256 differs)"))
    if doc.get("file") == PDF_NAME:
        vouched.add(PDF_NAME)
        pdf = run_dir / PDF_NAME
        if not pdf.is_file():
            problems.append(Problem(PDF_NAME, "missing"))
        elif file_sha256(pdf) != doc.get("sha256"):
            problems.append(Problem(PDF_NAME, "content changed (sha256 mismatch)"))
    signature = run_dir / SEAL_SIGNATURE
    signer = manifest.get("signer")
    if signature.exists():
        vouched.add(SEAL_SIGNATURE)
    if signer and isinstance(signer, dict):
        from bench.record.signing import check_signature, trusted_keys

        if not signature.is_file():
            problems.append(Problem(SEAL_SIGNATURE, "missing (the manifest records a signer)"))
        else:
            why = check_signature(seal, signature, trusted_keys(trust))
            signed_by = json.loads(signature.read_text(encoding="utf-8")).get("public_key") if why is None else None
            if why is not None:
                problems.append(Problem(SEAL_SIGNATURE, why.replace("manifest.json", SEAL_NAME)))
            elif signed_by != signer.get("public_key"):
                problems.append(Problem(SEAL_SIGNATURE, "signed by another key than the manifest"))
    elif signature.exists():
        problems.append(Problem(SEAL_SIGNATURE, "present but the manifest records no signer (added after sealing)"))
    return vouched, problems
