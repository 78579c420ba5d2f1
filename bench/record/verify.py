"""Prove that a run folder is exactly what was sealed: nothing changed, added or lost.

``verify_run`` reports problems in the order a reader should look at them: the manifest
first (everything else is judged against it), then the event log line by line, then the other
files. One tampering usually shows as one problem; the checks avoid reporting every later line
as a consequence of the first.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from bench.events import EventKind
from bench.record.chain import GENESIS, line_hash
from bench.record.manifest import (
    MANIFEST_NAME,
    MANIFEST_VERSION,
    SIGNATURE_NAME,
    UNLISTED,
    file_sha256,
    list_run_files,
    manifest_self_sha256,
)

_HEX = frozenset("0123456789abcdef")
EVENTS_NAME = "events.jsonl"


@dataclass(frozen=True)
class Problem:
    where: str
    """``"events.jsonl:17"`` (1-based line), ``"result.json"`` or ``"manifest.json"``."""
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def _is_sha256(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and _HEX.issuperset(value)


def _safe_relpath(rel: Any) -> bool:
    """A manifest path must stay inside the run folder; the manifest is input we do not trust."""
    if not isinstance(rel, str) or not rel or "\\" in rel:
        return False
    p = PurePosixPath(rel)
    return not p.is_absolute() and ".." not in p.parts and p.as_posix() == rel


def _load_manifest(run_dir: Path, problems: list[Problem]) -> dict[str, Any] | None:
    path = run_dir / MANIFEST_NAME
    if not path.is_file():
        problems.append(Problem(MANIFEST_NAME, "missing (the run was never sealed, or it was deleted)"))
        return None
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        problems.append(Problem(MANIFEST_NAME, f"not valid JSON ({e})"))
        return None
    if not isinstance(manifest, dict):
        problems.append(Problem(MANIFEST_NAME, "not a JSON object"))
        return None
    recorded = manifest.get("self_sha256")
    try:
        actual = manifest_self_sha256(manifest)
    except ValueError as e:  # NaN/Infinity literals
        problems.append(Problem(MANIFEST_NAME, f"not canonical JSON ({e})"))
        return None
    if recorded != actual:
        problems.append(Problem(MANIFEST_NAME, "content changed (self_sha256 mismatch)"))
        # Keep going: what the edited manifest claims is still worth comparing against.
    if manifest.get("manifest_version") != MANIFEST_VERSION:
        problems.append(Problem(MANIFEST_NAME, f"unsupported manifest_version {manifest.get('manifest_version')!r}"))
        return None
    events = manifest.get("events")
    files = manifest.get("files")
    if (
        not isinstance(events, dict)
        or not _safe_relpath(events.get("file"))
        or type(events.get("lines")) is not int
        or not _is_sha256(events.get("last_hash"))
    ):
        problems.append(Problem(MANIFEST_NAME, "malformed 'events' entry (file, lines, last_hash)"))
        return None
    if not isinstance(files, dict) or not all(_safe_relpath(k) and _is_sha256(v) for k, v in files.items()):
        problems.append(Problem(MANIFEST_NAME, "malformed 'files' entry (relative path -> sha256)"))
        return None
    return manifest


@dataclass
class ChainWalk:
    """What one walk along an event log found."""

    problems: list[Problem] = field(default_factory=list)
    lines: int = 0
    """Complete lines (a torn last line of an unsealed log is not counted)."""
    intact_lines: int = 0
    """Length of the leading run of lines whose chain holds (the whole log when nothing is wrong)."""
    last_intact: dict[str, Any] | None = None
    """The last event of that leading run."""
    torn_bytes: int = 0
    """Size of a last line cut off without its newline (a write interrupted by a crash)."""


def _check_events(run_dir: Path, name: str, expected: dict[str, Any] | None) -> list[Problem]:
    """Walk the chain; compare its length and end with the manifest's ``expected`` if known."""
    return walk_events(run_dir / name, name, expected).problems


def walk_events(path: Path, name: str, expected: dict[str, Any] | None, *, sealed: bool = True) -> ChainWalk:
    """Walk the chain of ``path`` (shown as ``name``); compare its end with ``expected`` if known.

    ``sealed=False`` is for a log whose run never sealed it: a last line without its newline is
    then the write the crash interrupted (the log writes each line with its newline in one call),
    reported as torn and left out of the chain, not as an edit.
    """
    walk = ChainWalk()
    problems = walk.problems
    if not path.is_file():
        problems.append(Problem(name, "missing"))
        return walk
    first_bad: int | None = None

    def flag(line: int, message: str) -> None:
        nonlocal first_bad
        problems.append(Problem(f"{name}:{line}", message))
        first_bad = line if first_bad is None else min(first_bad, line)

    prev_hash = GENESIS
    prev_flagged = False  # the previous line already has a problem: don't blame it twice
    expected_seq = 0
    lineno = 0
    # Line number of the line whose hash is the manifest's last_hash, once seen.
    sealed_end: int | None = None
    if expected is not None and expected["lines"] == 0:
        sealed_end = 0
    # The last few lines of the leading intact run, to name its last event once the walk is over
    # (a broken link is blamed on the line before the one that shows it).
    recent: deque[tuple[int, dict[str, Any] | None]] = deque(maxlen=3)
    with open(path, "rb") as f:
        for raw in f:
            lineno += 1
            where = f"{name}:{lineno}"
            flagged = False
            if not raw.endswith(b"\n"):
                if not sealed:
                    problems.append(
                        Problem(
                            where,
                            f"torn last line ({len(raw)} bytes without a newline: the write the process "
                            "died in); not part of the chain",
                        )
                    )
                    walk.torn_bytes = len(raw)
                    lineno -= 1
                    break
                flag(lineno, "incomplete last line (no final newline: file truncated or edited)")
                flagged = True
            line = raw[:-1] if raw.endswith(b"\n") else raw
            digest = line_hash(line)
            if sealed_end is None and expected is not None and digest == expected["last_hash"]:
                sealed_end = lineno
            obj: Any = None
            if not flagged:
                try:
                    obj = json.loads(line.decode("utf-8"))
                except (UnicodeDecodeError, ValueError):
                    flag(lineno, "not valid JSON (line edited or damaged)")
                    flagged = True
                else:
                    if not isinstance(obj, dict):
                        flag(lineno, "not a JSON object (line edited or damaged)")
                        flagged = True
            if isinstance(obj, dict):
                seq = obj.get("seq")
                if type(seq) is not int or seq != expected_seq:
                    flag(lineno, f"seq {seq!r}, expected {expected_seq} (line removed, inserted or reordered)")
                    flagged = True
                # Resynchronise on what the line says, so one removed line is one problem.
                expected_seq = seq + 1 if type(seq) is int else expected_seq + 1
                if obj.get("prev") != prev_hash and not flagged and not prev_flagged:
                    # The link from this line back to the previous one is broken while both
                    # look fine on their own: the previous line's bytes are no longer the ones
                    # this line was chained to (or this line's "prev" was edited; the two
                    # cannot be told apart). Blame the earlier line, where a reader should look.
                    if lineno == 1:
                        flag(lineno, "does not start the chain (prev is not GENESIS)")
                    else:
                        flag(
                            lineno - 1,
                            f"hash chain broken between lines {lineno - 1} and {lineno} "
                            "(line edited, removed or reordered)",
                        )
                    flagged = True
            else:
                expected_seq += 1
            if first_bad is None or first_bad >= lineno - 1:
                recent.append((lineno, obj if isinstance(obj, dict) else None))
            prev_hash = digest
            prev_flagged = flagged

    walk.lines = lineno
    walk.intact_lines = lineno if first_bad is None else first_bad - 1
    walk.last_intact = next((o for n, o in recent if n == walk.intact_lines), None)
    if expected is None:
        return walk
    want: int = expected["lines"]
    if lineno == want and prev_hash == expected["last_hash"]:
        return walk
    if sealed_end is not None:
        # The sealed last line is still there: lines were added after it and/or the count of
        # lines before it changed (the latter is normally already reported as a seq problem).
        if sealed_end < lineno:
            problems.append(
                Problem(
                    f"{name}:{sealed_end + 1}",
                    f"{lineno - sealed_end} line(s) after the sealed last line (appended after sealing)",
                )
            )
        if sealed_end != want:
            problems.append(
                Problem(
                    name,
                    f"{sealed_end} line(s) up to the sealed last line where the manifest records {want} "
                    "(lines removed or inserted)",
                )
            )
    elif lineno < want:
        problems.append(Problem(f"{name}:{lineno + 1}", f"{want - lineno} line(s) missing at the end (truncated)"))
    elif lineno > want:
        problems.append(
            Problem(
                f"{name}:{want + 1}",
                f"{lineno - want} line(s) more than the manifest records, and the sealed last line is gone",
            )
        )
    elif not prev_flagged:
        where = f"{name}:{lineno}" if lineno else name
        problems.append(Problem(where, "last line changed (hash differs from the manifest's last_hash)"))
    return walk


@dataclass(frozen=True)
class SignatureState:
    signed: bool
    text: str
    """For a signed record, the algorithm and key; for an unsigned one, what it does not prove."""


# What an unsigned record is worth, said wherever one is reported (docs/reports.md).
UNSIGNED_MEANING = (
    "consistent with itself only: anyone who can write to the folder can recompute the chain and the "
    "manifest, so it proves neither authorship nor that the record was not rewritten"
)


def signature_state(run_dir: Path) -> SignatureState:
    """Whether the (verified) record is signed, in words that cannot be mistaken for each other."""
    try:
        manifest = json.loads((Path(run_dir) / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return SignatureState(False, "no readable manifest")
    signer = manifest.get("signer") if isinstance(manifest, dict) else None
    if not signer:
        # Whether the station had no key or the signature was stripped cannot be told from here.
        return SignatureState(False, UNSIGNED_MEANING)
    return SignatureState(True, f"Ed25519, station key {signer.get('fingerprint')}")


@dataclass(frozen=True)
class Unsealed:
    """A run folder without a manifest (the run was killed or crashed before sealing it)."""

    walk: ChainWalk | None
    """The walk along its event log; None when there is none."""
    problems: list[Problem]
    files: list[str]
    """Other files of the folder: nothing pins their content."""

    def summary(self) -> str:
        """One line: ``unsealed: N events, chain intact up to line K, last event #S kind ...``."""
        w = self.walk
        if w is None:
            return f"unsealed: no {EVENTS_NAME} (no manifest.json either: nothing can be checked)"
        text = f"unsealed: {w.lines} events, chain intact up to line {w.intact_lines}"
        last = w.last_intact
        if last is not None:
            # json.dumps quotes the name and escapes control characters a record could carry.
            step = f" {json.dumps(last['step'], ensure_ascii=False)}" if isinstance(last.get("step"), str) else ""
            text += f", last event #{last.get('seq')} {last.get('kind')}{step} at {last.get('t')} s"
        if w.torn_bytes:
            text += f", then a torn line of {w.torn_bytes} bytes"
        return text + " (no manifest.json: the run never sealed its record)"


def inspect_unsealed(run_dir: Path) -> Unsealed:
    """What a folder without a manifest still proves: how far its hash chain holds, and its last event."""
    run_dir = Path(run_dir)
    problems: list[Problem] = []
    if (run_dir / SIGNATURE_NAME).exists():
        problems.append(
            Problem(MANIFEST_NAME, f"missing, but {SIGNATURE_NAME} is there (the manifest was deleted after sealing)")
        )
    walk = None
    if (run_dir / EVENTS_NAME).is_file():
        walk = walk_events(run_dir / EVENTS_NAME, EVENTS_NAME, None, sealed=False)
        problems.extend(walk.problems)
        if walk.last_intact is not None and walk.last_intact.get("kind") == EventKind.RUN_ENDED:
            # run_ended is the last event before the seal: the run got as far as sealing.
            problems.append(
                Problem(
                    MANIFEST_NAME,
                    "missing although the log ends with run_ended (deleted after sealing, or the run died while sealing)",
                )
            )
    files = [rel for rel in list_run_files(run_dir) if rel != EVENTS_NAME]
    return Unsealed(walk, problems, files)


def is_sealed(run_dir: Path) -> bool:
    """A run folder is sealed once it has a manifest (whether the manifest holds is ``verify_run``'s job)."""
    return (Path(run_dir) / MANIFEST_NAME).exists()


def _check_signature(run_dir: Path, manifest: dict[str, Any], trust: Path | None) -> list[Problem]:
    from bench.record.signing import check_signature, fingerprint, trusted_keys

    sig = run_dir / SIGNATURE_NAME
    if "signer" not in manifest:
        # Sealed by a caller that does not sign (no 'signer' key at all): the signature file, if
        # any, belongs to whoever added it and is not judged here.
        return []
    signer = manifest["signer"]
    if not signer:
        if sig.exists():
            return [Problem(SIGNATURE_NAME, "present but the manifest records no signer (added after sealing)")]
        return []
    if not isinstance(signer, dict) or not isinstance(signer.get("public_key"), str):
        return [Problem(MANIFEST_NAME, "malformed 'signer' entry")]
    if not sig.is_file():
        return [Problem(SIGNATURE_NAME, "missing (the manifest records a signer)")]
    why = check_signature(run_dir / MANIFEST_NAME, sig, trusted_keys(trust))
    if why is not None:
        return [Problem(SIGNATURE_NAME, why)]
    try:
        signed_by = json.loads(sig.read_text(encoding="utf-8"))["public_key"]
    except (OSError, ValueError, KeyError):  # pragma: no cover - check_signature read it already
        signed_by = ""
    if signed_by != signer["public_key"]:
        return [
            Problem(
                SIGNATURE_NAME,
                f"signed by key {fingerprint(signed_by)}, but the manifest names {signer.get('fingerprint')}",
            )
        ]
    return []


def verify_run(run_dir: Path, trust: Path | None = None) -> list[Problem]:
    """Check ``run_dir`` against its manifest. An empty list means the record is intact.

    The first problem is the first bad place: the manifest, else the first bad line of the
    event log, else the first bad file, else the signature. An unsigned record is not a
    problem here (``signature_state`` says so, and the caller applies the signature policy); a signed one must carry a valid signature by a
    trusted key (``trust``: an extra file of trusted public keys).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return [Problem(str(run_dir), "not a directory")]
    problems: list[Problem] = []
    manifest = _load_manifest(run_dir, problems)

    if manifest is None:
        # Without a usable manifest the chain can still be checked on its own (``inspect_unsealed``
        # says more about a folder that was never sealed).
        if (run_dir / EVENTS_NAME).is_file():
            sealed = is_sealed(run_dir)
            problems.extend(walk_events(run_dir / EVENTS_NAME, EVENTS_NAME, None, sealed=sealed).problems)
        return problems

    events_name: str = manifest["events"]["file"]
    event_problems = _check_events(run_dir, events_name, manifest["events"])
    problems.extend(event_problems)

    files: dict[str, str] = manifest["files"]
    if events_name not in files:
        problems.append(Problem(MANIFEST_NAME, f"does not list the event log {events_name}"))
    for rel in sorted(files):
        path = run_dir / rel
        if not path.is_file():
            if not (rel == events_name and event_problems):
                problems.append(Problem(rel, "missing"))
        elif file_sha256(path) != files[rel] and not (rel == events_name and event_problems):
            problems.append(Problem(rel, "content changed (sha256 mismatch)"))

    from bench.record.pdfseal import check_pdf_seal

    # The report's PDF is typeset after the seal; report-pdf.json vouches for it (pdfseal.py).
    after_seal, pdf_problems = check_pdf_seal(run_dir, manifest, trust)
    for rel in list_run_files(run_dir):
        if rel not in files and rel not in UNLISTED and rel not in after_seal:
            problems.append(Problem(rel, "not listed in the manifest (added after sealing)"))
    problems.extend(pdf_problems)
    problems.extend(_check_signature(run_dir, manifest, trust))
    return problems
