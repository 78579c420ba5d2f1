"""The manifest of a run: the hash of every file in the run folder, sealed by its own hash.

The manifest is written last, after every other file of the run is final. ``verify.py`` checks
a run folder against it; a signature over it (``manifest.sig``) is added by another module.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from bench.record.chain import EventLog

MANIFEST_VERSION = "1"
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
# Files in the run folder that cannot be listed in the manifest because they are derived from it.
UNLISTED = frozenset({MANIFEST_NAME, SIGNATURE_NAME})
_OWN_KEYS = frozenset({"manifest_version", "events", "files", "self_sha256"})


def file_sha256(path: Path) -> str:
    """sha256 hex of a file's content, read in chunks (raw bus logs can be large)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def canonical_json(obj: Any) -> bytes:
    """The byte form that is hashed (and later signed): sorted keys, no whitespace, UTF-8.

    ``allow_nan=False`` because NaN/Infinity are not JSON and another implementation could not
    reproduce the bytes.
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def manifest_self_sha256(manifest: dict[str, Any]) -> str:
    """The seal of a manifest: sha256 of its canonical JSON without the ``self_sha256`` key."""
    body = {k: v for k, v in manifest.items() if k != "self_sha256"}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def list_run_files(run_dir: Path) -> list[str]:
    """Relative POSIX paths of every file under ``run_dir`` that the manifest must cover."""
    names = []
    for p in run_dir.rglob("*"):
        if not p.is_file():
            continue
        rel = p.relative_to(run_dir).as_posix()
        if rel in UNLISTED:
            continue
        names.append(rel)
    return sorted(names)


def _fsync_dir(path: Path) -> None:
    # The rename of the manifest is only durable once the directory entry is; not all platforms
    # can open a directory, and there the rename is the best we can do.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_manifest(run_dir: Path, *, events: EventLog, info: dict[str, Any]) -> Path:
    """Seal ``run_dir``: close the event log and write ``manifest.json``; return its path.

    ``info`` (run id, hashes of sequence/station/DBCs, code version, instrument identities ...)
    is copied into the top level of the manifest. The event log is closed here because hashing
    a file that can still grow would seal a state that does not last.
    """
    run_dir = Path(run_dir)
    clash = _OWN_KEYS.intersection(info)
    if clash:
        raise ValueError(f"info key(s) reserved by the manifest: {', '.join(sorted(clash))}")
    events.close()
    try:
        events_rel = events.path.resolve().relative_to(run_dir.resolve()).as_posix()
    except ValueError:
        raise ValueError(f"event log {events.path} is not inside the run folder {run_dir}") from None

    tmp = run_dir / (MANIFEST_NAME + ".tmp")
    # A leftover from an interrupted earlier seal would otherwise be listed, then vanish.
    tmp.unlink(missing_ok=True)

    manifest: dict[str, Any] = {"manifest_version": MANIFEST_VERSION}
    manifest.update(info)
    manifest["events"] = {"file": events_rel, "lines": events.count, "last_hash": events.last_hash}
    manifest["files"] = {rel: file_sha256(run_dir / rel) for rel in list_run_files(run_dir)}
    # Seal what the verifier will read back, not the caller's objects: tuples, non-string keys
    # or str/float subclasses would otherwise hash differently after the JSON round trip.
    manifest = json.loads(json.dumps(manifest, allow_nan=False))
    manifest["self_sha256"] = manifest_self_sha256(manifest)

    text = json.dumps(manifest, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    target = run_dir / MANIFEST_NAME
    # Written under another name, then renamed, so that a crash never leaves a half-written
    # manifest that would look like tampering.
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk leaves no empty half-manifest behind
        raise
    _fsync_dir(run_dir)
    return target
