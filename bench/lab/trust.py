"""Signed results: a bench signs what it reports with its station key, and a lab that lists its
benches' public keys counts a result only when it carries that bench's signature.

The key is the one that signs the bench's run records (bench/record/signing.py, ``bench keys
init``). The signature covers every field of the result but itself, so the verdict, the run id
and the manifest's SHA-256 are the bench's word together: a result whose manifest hash was
changed, or that was published under the bench's topic without its key (a stolen broker
password), does not count.

The lab's keys are a file of ``<bench id> <base64 public key>`` lines (``#`` comments), given by
``--lab-keys`` or ``$BENCH_LAB_KEYS``; whoever gives one requires signatures.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path

from bench.errors import LoadError
from bench.lab.protocol import Result
from bench.record.signing import StationKey

LAB_KEYS_ENV = "BENCH_LAB_KEYS"

LabKeys = dict[str, str]  # bench id -> base64 Ed25519 public key


def read_lab_keys(path: Path) -> LabKeys:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LoadError(f"lab keys {path}: cannot be read ({exc.__class__.__name__}: {exc})") from None
    keys: LabKeys = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or not _is_public_key(parts[1]):
            raise LoadError(f"lab keys {path}:{n}: expected '<bench id> <base64 Ed25519 public key>'")
        keys[parts[0]] = parts[1]
    return keys


def lab_keys(path: Path | None) -> LabKeys | None:
    """The lab's keys from ``--lab-keys`` or ``$BENCH_LAB_KEYS``; None when the lab requires no signatures."""
    chosen = path or (Path(os.environ[LAB_KEYS_ENV]) if os.environ.get(LAB_KEYS_ENV) else None)
    return None if chosen is None else read_lab_keys(chosen)


def _is_public_key(text: str) -> bool:
    try:
        return len(base64.b64decode(text, validate=True)) == 32
    except (binascii.Error, ValueError):
        return False


def signed_body(res: Result) -> bytes:
    """The bytes a result's signature covers: every field but the signature, in one canonical form."""
    body = res.model_dump(mode="json", exclude={"signature"})
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def sign_result(res: Result, key: StationKey) -> Result:
    sig = key.private.sign(signed_body(res))
    return res.model_copy(update={"signature": base64.b64encode(sig).decode("ascii")})


def check_result(res: Result, keys: LabKeys | None) -> str | None:
    """None when the result counts as far as signatures go, else why not (one line)."""
    if keys is None:
        return None  # the lab requires no signatures
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    pub = keys.get(res.bench)
    if pub is None:
        return f"no public key for bench {res.bench} in the lab's keys"
    if not res.signature:
        return f"result of bench {res.bench} is unsigned; the lab requires signatures"
    try:
        Ed25519PublicKey.from_public_bytes(base64.b64decode(pub)).verify(
            base64.b64decode(res.signature, validate=True), signed_body(res)
        )
    except (InvalidSignature, binascii.Error, ValueError):
        return f"signature of the result does not match bench {res.bench}'s key (result changed, or another key)"
    return None
