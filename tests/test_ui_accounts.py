"""Accounts, roles and the audit log of the browser station (bench/ui/accounts.py, audit.py, cli_users.py)."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.errors import BenchError, LoadError
from bench.ui import accounts as acc
from bench.ui.accounts import ACTIONS, allowed, hash_password, load_accounts, save_account, verify_password
from bench.ui.audit import AuditLog, audit_path
from bench.ui.cli_users import users_app


def test_a_hash_verifies_its_password_only_and_never_contains_it() -> None:
    h = hash_password("correct horse")
    assert h.startswith("scrypt$") and "correct horse" not in h
    assert verify_password("correct horse", h)
    assert not verify_password("correct hors", h)
    assert not verify_password("Correct horse", h)
    # A new salt each time: the same password gives another hash, and both verify.
    h2 = hash_password("correct horse")
    assert h2 != h and verify_password("correct horse", h2)


def test_a_tampered_or_malformed_hash_verifies_nothing() -> None:
    h = hash_password("correct horse")
    parts = h.split("$")
    key = parts[5]
    flipped = ("A" if key[0] != "A" else "B") + key[1:]
    assert not verify_password("correct horse", "$".join([*parts[:5], flipped]))
    other_salt = hash_password("x" * 8).split("$")[4]
    assert not verify_password("correct horse", "$".join([*parts[:4], other_salt, parts[5]]))
    for bad in (
        "",
        "correct horse",
        "scrypt$",
        "md5$1$2$3$a$b",
        "scrypt$32768$8$1$!!$??",
        h + "$",
        h.replace("scrypt", "bcrypt"),
    ):
        assert not verify_password("correct horse", bad), bad
    # Cost parameters a tampered file could use to take the machine's memory are refused at once.
    t0 = time.monotonic()
    assert not verify_password("correct horse", "$".join(["scrypt", str(2**30), "8", "1", *parts[4:]]))
    assert not verify_password("correct horse", "$".join(["scrypt", "1000", "8", "1", *parts[4:]]))  # not a power of 2
    assert time.monotonic() - t0 < 0.5
    # A hash made with other (smaller) parameters still verifies: the file carries them.
    salt = os.urandom(16)
    small = acc._scrypt("pw-longer", salt, 2**10, 4, 2, 32)
    text = f"scrypt${2**10}$4$2${acc._b64(salt)}${acc._b64(small)}"
    assert verify_password("pw-longer", text) and not verify_password("pw-longer!", text)


def test_accounts_are_saved_atomically_readable_by_the_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "accounts.yaml"
    save_account(path, "alice", "operator", "alice-secret")
    save_account(path, "bob", "engineer", "bob-secret-1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    users = load_accounts(path)
    assert {n: a.role for n, a in users.items()} == {"alice": "operator", "bob": "engineer"}
    assert verify_password("alice-secret", users["alice"].password_hash)
    assert "alice-secret" not in path.read_text() and "bob-secret-1" not in path.read_text()
    # A changed password and role replace the old ones; the other account stays as it was.
    save_account(path, "alice", "engineer", "alice-new-secret")
    again = load_accounts(path)
    assert again["alice"].role == "engineer" and verify_password("alice-new-secret", again["alice"].password_hash)
    assert not verify_password("alice-secret", again["alice"].password_hash)
    assert again["bob"] == users["bob"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["accounts.yaml"]  # no temporary file left
    # Names YAML would read as numbers or booleans stay names.
    save_account(path, "1234", "operator", "numbers-only")
    save_account(path, "yes", "operator", "yes-yes-yes")
    assert {"1234", "yes"} <= set(load_accounts(path))


def test_a_failed_write_leaves_the_old_file_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "accounts.yaml"
    save_account(path, "alice", "operator", "alice-secret")
    before = path.read_bytes()

    def no_rename(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(acc.os, "replace", no_rename)
    with pytest.raises(LoadError, match=r"cannot write the accounts file .*No space left on device"):
        save_account(path, "bob", "engineer", "bob-secret-1")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["accounts.yaml"]


@pytest.mark.parametrize(
    ("name", "role", "password", "message"),
    [
        ("alice", "operator", "short", "at least 8 characters"),
        ("al ice", "operator", "long enough", "letters, digits"),
        ("", "operator", "long enough", "letters, digits"),
        ("alice", "admin", "long enough", "expected operator or engineer"),
    ],
)
def test_bad_accounts_are_refused_before_anything_is_written(
    tmp_path: Path, name: str, role: acc.Role, password: str, message: str
) -> None:
    path = tmp_path / "accounts.yaml"
    with pytest.raises(LoadError, match=message):
        save_account(path, name, role, password)
    assert not path.exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("users: [alice]\n", "users"),
        ("users:\n  alice: {role: admin, password: x}\n", "role"),
        ("users:\n  alice: {role: operator, password: 'alice-secret'}\n", "not a password hash"),
        ("users:\n  alice: {role: operator}\n", "password"),
        ("users:\n  alice: {role: operator, password: x, shell: /bin/sh}\n", "shell"),
        ("admins: {}\n", "admins"),
        ("users: {alice: {role: operator\n", "invalid YAML"),
        ("- alice\n", "must be a YAML mapping"),
    ],
)
def test_a_bad_accounts_file_is_one_line_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "accounts.yaml"
    path.write_text(text)
    with pytest.raises(LoadError) as info:
        load_accounts(path)
    line = str(info.value)
    assert "\n" not in line and "accounts.yaml" in line and message in line, line


def test_a_missing_accounts_file_is_one_line() -> None:
    with pytest.raises(LoadError, match="accounts file not found"):
        load_accounts(Path("/nonexistent/accounts.yaml"))


def test_roles_may_do_what_the_issue_says_and_nothing_more() -> None:
    table = {(role, action): allowed(role, action) for role in ("operator", "engineer", None) for action in ACTIONS}
    expected = {
        **{(None, a): False for a in ACTIONS},  # watching only; not even the e-stop without signing in
        **{("engineer", a): True for a in ACTIONS},
        **{("operator", a): a in {"start", "stop", "estop"} for a in ACTIONS},
    }
    assert table == expected
    with pytest.raises(ValueError, match="unknown action 'reset'"):
        allowed("engineer", "reset")


def test_the_audit_log_appends_json_lines_and_reads_back_the_last(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "st.ui-audit.jsonl")
    assert log.tail() == []
    for i in range(120):
        log.write("alice", "operator", "start", sequence="R100-9G-OVERCHARGE", n=i)
    log.write("bob", "engineer", "reset_interlock", reason="limit was a test setting")
    lines = (tmp_path / "st.ui-audit.jsonl").read_text().splitlines()
    assert len(lines) == 121
    first = json.loads(lines[0])
    assert first["user"] == "alice" and first["role"] == "operator" and first["action"] == "start" and first["n"] == 0
    assert first["t"].endswith("Z")
    tail = log.tail(3)
    assert [e.get("n") for e in tail] == [118, 119, None] and tail[-1]["reason"] == "limit was a test setting"
    assert len(log.tail(500)) == 121
    assert log.tail(0) == []
    # A damaged line (a crash mid-write on another system) is skipped, not fatal.
    with open(tmp_path / "st.ui-audit.jsonl", "ab") as f:
        f.write(b'{"t": "2026-\n')
    log.write("bob", "engineer", "stop")
    assert [e["action"] for e in log.tail(2)] == ["reset_interlock", "stop"]


def test_an_audit_log_that_cannot_be_written_refuses_in_one_line(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "missing-folder" / "a.jsonl")
    with pytest.raises(BenchError) as info:
        log.write("alice", "operator", "start")
    assert "\n" not in str(info.value) and "action 'start' not taken" in str(info.value)


def test_the_audit_log_lives_in_the_state_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_STATE_DIR", str(tmp_path / "state"))
    assert audit_path("bench-7") == tmp_path / "state" / "bench-7.ui-audit.jsonl"


def test_user_add_and_list_never_show_the_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "acc.yaml"
    runner = CliRunner()
    r = runner.invoke(
        users_app, ["add", str(path), "carol", "--role", "engineer", "--password-stdin"], "carol-secret\n"
    )
    assert r.exit_code == 0, r.output
    assert "added carol (engineer)" in r.output and "carol-secret" not in r.output
    assert verify_password("carol-secret", load_accounts(path)["carol"].password_hash)
    # Typed twice without echo; two different answers write nothing.
    answers = iter(["dave-secret-1", "dave-secret-2"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    r = runner.invoke(users_app, ["add", str(path), "dave", "--role", "operator"])
    assert isinstance(r.exception, LoadError) and "differ" in str(r.exception)
    assert "dave" not in load_accounts(path)
    answers = iter(["dave-secret-1", "dave-secret-1"])
    r = runner.invoke(users_app, ["add", str(path), "dave", "--role", "operator"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(users_app, ["list", str(path)])
    assert r.exit_code == 0 and [line.split() for line in r.output.splitlines()] == [
        ["carol", "engineer"],
        ["dave", "operator"],
    ]
    assert "scrypt" not in r.output
    r = runner.invoke(users_app, ["add", str(path), "erin", "--role", "admin", "--password-stdin"], "erin-secret\n")
    assert isinstance(r.exception, LoadError) and str(r.exception) == "--role admin: expected operator or engineer"
