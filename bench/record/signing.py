"""Ed25519 signature over a run's manifest (``manifest.sig``), and the station key that makes it.

The station key lives outside the repository and outside the run folders, so that whoever can
edit a record cannot re-sign it: ``$BENCH_KEY_DIR``, else ``$XDG_CONFIG_HOME/hil-bench``, else
``~/.config/hil-bench``. ``bench keys init`` creates it (``station.key``, mode 0600, and
``station.pub``). Without a key a run still completes; its manifest is then *unsigned* and
``bench verify`` says so (see docs/reports.md).

A signature proves who sealed the record only if the verifier trusts the public key. The key is
recorded in ``manifest.sig`` for identification, but ``verify`` accepts it only when it is the
local station key or listed in a trusted-keys file (``--trust FILE``, or
``$BENCH_KEY_DIR/trusted.pub``), one base64 public key per line. Another key's signature over
the same manifest therefore fails.

An *unsigned* record proves only that it is consistent with itself: anyone who can write to the
folder can edit it, recompute the chain and the manifest and drop the signature. Where records
must be signed, ``bench verify --require-signature`` (or ``BENCH_REQUIRE_SIGNATURE=1`` in the
environment of a station, a lab agent or CI) refuses unsigned records.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import LoadError

KEY_NAME = "station.key"
PUB_NAME = "station.pub"
TRUSTED_NAME = "trusted.pub"
SIG_VERSION = "1"
# The policy switch of a machine or a lab: when true, an unsigned record does not verify.
REQUIRE_ENV = "BENCH_REQUIRE_SIGNATURE"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


def key_dir() -> Path:
    env = os.environ.get("BENCH_KEY_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg) if xdg else Path.home() / ".config"
    return base / "hil-bench"


def has_station_key() -> bool:
    """True when this machine holds a station key, so the runs it seals are signed."""
    return (key_dir() / KEY_NAME).is_file()


def signature_requirement(flag: bool) -> str | None:
    """What requires a signature (the ``--require-signature`` flag or the environment), or None.

    A value of ``BENCH_REQUIRE_SIGNATURE`` that is neither true nor false is refused rather than
    read as "off": a typo must not silently turn a policy off.
    """
    if flag:
        return "--require-signature"
    value = os.environ.get(REQUIRE_ENV, "").strip().lower()
    if value in _TRUE:
        return f"{REQUIRE_ENV}={os.environ[REQUIRE_ENV].strip()}"
    if value in _FALSE:
        return None
    raise LoadError(f"{REQUIRE_ENV}={os.environ[REQUIRE_ENV]!r}: expected 1/true/yes or 0/false/no")


def fingerprint(public_b64: str) -> str:
    """Short, stable name of a public key: sha256 of its raw bytes, first 16 hex digits."""
    return hashlib.sha256(base64.b64decode(public_b64)).hexdigest()[:16]


@dataclass
class StationKey:
    private: Any  # cryptography Ed25519PrivateKey
    public_b64: str

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_b64)


def _public_b64(private: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def init_key(directory: Path | None = None, force: bool = False) -> tuple[Path, str]:
    """Create the station key pair; refuse to overwrite an existing one unless ``force``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    d = directory or key_dir()
    d.mkdir(parents=True, exist_ok=True)
    path = d / KEY_NAME
    if path.exists() and not force:
        raise FileExistsError(f"{path} already exists (use --force to replace it; old records then need --trust)")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "wb") as f:
        f.write(pem)
    pub = _public_b64(private)
    (d / PUB_NAME).write_text(pub + "\n", encoding="ascii")
    return path, pub


def load_key(directory: Path | None = None) -> StationKey | None:
    """The station key, or None when there is none (the run's manifest is then unsigned)."""
    from cryptography.hazmat.primitives import serialization

    path = (directory or key_dir()) / KEY_NAME
    if not path.is_file():
        return None
    private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    return StationKey(private, _public_b64(private))


def trusted_keys(extra: Path | None = None) -> set[str]:
    keys: set[str] = set()
    d = key_dir()
    for p in (d / PUB_NAME, d / TRUSTED_NAME, extra):
        if p is not None and p.is_file():
            keys.update(line.strip() for line in p.read_text(encoding="ascii").splitlines() if line.strip())
    return keys


def sign_file(path: Path, key: StationKey) -> Path:
    """Write ``<path>.sig`` -> here ``manifest.sig``: the signature over the file's exact bytes."""
    sig = key.private.sign(path.read_bytes())
    doc = {
        "signature_version": SIG_VERSION,
        "algorithm": "Ed25519",
        "signed_file": path.name,
        "public_key": key.public_b64,
        "key_fingerprint": key.fingerprint,
        "signature": base64.b64encode(sig).decode("ascii"),
    }
    out = path.with_suffix(".sig")
    out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return out


def check_signature(manifest: Path, sig_path: Path, trusted: set[str]) -> str | None:
    """None when ``sig_path`` is a valid signature over ``manifest`` by a trusted key, else why not."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        doc = json.loads(sig_path.read_text(encoding="utf-8"))
        pub = str(doc["public_key"])
        sig = base64.b64decode(str(doc["signature"]), validate=True)
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(pub, validate=True))
    except (ValueError, KeyError, TypeError) as exc:
        return f"malformed signature file ({exc})"
    if doc.get("algorithm") != "Ed25519":
        return f"unsupported algorithm {doc.get('algorithm')!r}"
    try:
        key.verify(sig, manifest.read_bytes())
    except InvalidSignature:
        return "signature does not match manifest.json (manifest or signature changed)"
    if pub not in trusted:
        return (
            f"signed by an untrusted key {fingerprint(pub)} (not the station key in {key_dir()}; "
            "pass --trust FILE with the signer's public key)"
        )
    return None
