"""Amended reports (ISO/IEC 17025 7.8.8): a new report id that references and supersedes the original.

The original run folder is never touched (its manifest and signature stay valid). The
amendment is a sibling folder ``<run-id>.A<n>/`` with its own hash-chained event log (one
``report_amended`` event naming the original report, its manifest hash, the reason, the person
and the date), the re-rendered report, and its own signed manifest, so ``bench verify`` works
on it exactly as on a run.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from bench.events import EventKind
from bench.record.chain import EventLog
from bench.record.manifest import file_sha256, write_manifest
from bench.report.render import render_report, report_id


def _next_number(run_dir: Path) -> int:
    n = 1
    while (run_dir.parent / f"{run_dir.name}.A{n}").exists():
        n += 1
    return n


def amend_report(
    run_dir: Path, *, reason: str, by: str, pdf: bool = True, today: dt.date | None = None
) -> tuple[Path, str]:
    run_dir = Path(run_dir)
    result = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
    run_id = result["run_id"]
    n = _next_number(run_dir)
    new_id = report_id(run_id, n)
    previous = report_id(run_id, n - 1)
    issued = (today or dt.datetime.now(dt.UTC).date()).isoformat()
    out = run_dir.parent / f"{run_dir.name}.A{n}"
    out.mkdir()
    manifest = run_dir / "manifest.json"
    amendment: dict[str, Any] = {
        "report_id": new_id,
        "supersedes": previous,
        "original_report": report_id(run_id),
        "run_id": run_id,
        "reason": reason,
        "by": by,
        "issued": issued,
        "original_manifest_sha256": file_sha256(manifest) if manifest.is_file() else None,
    }
    (out / "amendment.json").write_text(json.dumps(amendment, indent=2) + "\n", encoding="utf-8")
    render_report(run_dir, out, pdf=pdf, amendment=amendment, issued=issued)
    log = EventLog(out / "events.jsonl")
    log.append(EventKind.REPORT_AMENDED, 0.0, **amendment)
    from bench.record.signing import load_key, sign_file

    key = load_key()
    signer = {"algorithm": "Ed25519", "public_key": key.public_b64, "fingerprint": key.fingerprint} if key else None
    path = write_manifest(out, events=log, info={"run_id": run_id, "amendment": new_id, "signer": signer})
    if key is not None:
        sign_file(path, key)
    return out, new_id
