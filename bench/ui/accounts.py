"""Accounts of the browser station: who may sign in, with which role, and what each role may do.

The accounts file is YAML, ``{users: {NAME: {role: operator|engineer, password: HASH}}}``. A
password is never stored or logged, only its scrypt hash (``hashlib.scrypt``: memory-hard, in the
standard library) with a random salt and the cost parameters, so that a file written with other
parameters still verifies. ``bench ui user add`` writes the file (atomically, mode 0600).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from bench.errors import LoadError
from bench.station import LoadedStation
from bench.yamlsource import load_model

Role = Literal["operator", "engineer"]
ROLES: tuple[str, ...] = get_args(Role)
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
MIN_PASSWORD = 8

# scrypt cost: N=2^15, r=8, p=1 takes 32 MiB and about 0.1 s per sign-in here; a stored hash
# with larger parameters than MAX_* is refused unverified (a tampered file must not make a
# sign-in take the machine's memory).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
MAX_N, MAX_R, MAX_P = 2**20, 32, 16
SALT_BYTES, KEY_BYTES = 16, 32


@dataclass(frozen=True)
class Account:
    name: str
    role: Role
    password_hash: str


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    # scrypt needs 128 * r * n bytes (and a little more); hashlib refuses above maxmem.
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * r * n + 2**20, dklen=length)


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$SALT$HASH`` (salt and hash in base64) of ``password``, with a new random salt."""
    salt = secrets.token_bytes(SALT_BYTES)
    key = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, KEY_BYTES)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def _parsed(hashed: str) -> tuple[int, int, int, bytes, bytes] | None:
    parts = hashed.split("$")
    if len(parts) != 6 or parts[0] != "scrypt" or not all(x.isdigit() for x in parts[1:4]):
        return None
    n, r, p = (int(x) for x in parts[1:4])
    if n < 2 or n & (n - 1) or n > MAX_N or not 0 < r <= MAX_R or not 0 < p <= MAX_P:
        return None
    try:
        salt = base64.b64decode(parts[4], validate=True)
        key = base64.b64decode(parts[5], validate=True)
    except ValueError:
        return None
    if not salt or not 16 <= len(key) <= 64:
        return None
    return n, r, p, salt, key


def verify_password(password: str, hashed: str) -> bool:
    """Whether ``password`` is the one ``hashed`` was made from; False for a malformed hash."""
    parsed = _parsed(hashed)
    if parsed is None:
        return False
    n, r, p, salt, key = parsed
    return hmac.compare_digest(_scrypt(password, salt, n, r, p, len(key)), key)


class _UserEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role
    password: str = Field(description="scrypt hash written by `bench ui user add` (never the password)")


class _AccountsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    users: dict[str, _UserEntry] = {}


def load_accounts(path: Path) -> dict[str, Account]:
    """The accounts of ``path`` by name; a bad file is one LoadError line with the file, line and field."""
    src, model = load_model(path, "accounts", _AccountsFile)
    out: dict[str, Account] = {}
    for name, entry in model.users.items():
        if not re.match(NAME_PATTERN, name):
            raise src.error(["users", name], f"user name '{name}' must match {NAME_PATTERN}")
        if _parsed(entry.password) is None:
            raise src.error(
                ["users", name, "password"],
                "not a password hash written by `bench ui user add` (scrypt$N$r$p$salt$hash)",
            )
        out[name] = Account(name, entry.role, entry.password)
    return out


def _yaml_text(accounts: dict[str, Account]) -> str:
    lines = ["# Accounts of the browser station (bench ui user add); passwords are scrypt hashes.", "users:"]
    for name in sorted(accounts):
        a = accounts[name]
        lines.append(f"  '{a.name}': {{role: {a.role}, password: '{a.password_hash}'}}")  # quoted: '1234' stays text
    return "\n".join(lines) + "\n"


def save_account(path: Path, name: str, role: Role, password: str) -> None:
    """Add or replace the account ``name``; the file is written whole, atomically, readable by its owner only."""
    if not re.match(NAME_PATTERN, name):
        raise LoadError(f"user name '{name}': letters, digits and . _ @ - only, 1 to 64 characters")
    if role not in ROLES:
        raise LoadError(f"role '{role}': expected {' or '.join(ROLES)}")
    if len(password) < MIN_PASSWORD:
        raise LoadError(f"the password of '{name}' must have at least {MIN_PASSWORD} characters")
    accounts = load_accounts(path) if path.exists() else {}
    accounts[name] = Account(name, role, hash_password(password))
    text = _yaml_text(accounts).encode("utf-8")
    folder = path.resolve().parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)  # mode 0600
    except OSError as exc:
        raise LoadError(f"cannot write the accounts file {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise LoadError(f"cannot write the accounts file {path}: {exc.strerror or exc}") from None


def accounts_path(station: LoadedStation) -> Path | None:
    """The station's ``ui.accounts`` file (relative to the station file), or None when it names none."""
    chosen = station.model.ui.accounts
    return None if chosen is None else station.base_dir / chosen


ACTIONS = frozenset({"start", "stop", "change_parameters", "reset_interlock", "amend_report", "estop"})
# An operator runs library sequences with their defaults and stops the run it controls; an
# engineer also changes parameters, resets a latched interlock and amends reports. The e-stop is
# every signed-in user's, controller or watcher: a physical e-stop is within reach of all at the bench.
PERMISSIONS: dict[str, frozenset[str]] = {
    "operator": frozenset({"start", "stop", "estop"}),
    "engineer": ACTIONS,
}


def allowed(role: Role | None, action: str) -> bool:
    """Whether ``role`` (None: not signed in, a watcher) may do ``action``; ValueError for an unknown action."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action '{action}' (actions: {', '.join(sorted(ACTIONS))})")
    return role is not None and action in PERMISSIONS.get(role, frozenset())
