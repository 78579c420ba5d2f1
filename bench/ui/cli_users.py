"""``bench ui user ...``: the accounts file of the browser station (bench/ui/accounts.py).

The password is asked twice without echo, or read as one line from standard input with
``--password-stdin`` (for provisioning scripts); it is never an argument, so it never shows in
the shell history or the process list, and it is never printed.
"""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Annotated, cast

import typer

from bench.errors import LoadError
from bench.ui.accounts import ROLES, Role, load_accounts, save_account

users_app = typer.Typer(no_args_is_help=True, help="Accounts of the browser station: add or change a user, list them.")

FileArg = Annotated[Path, typer.Argument(help="accounts file (the station's ui.accounts)")]


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    try:
        first = getpass.getpass("password: ")
        again = getpass.getpass("password again: ")
    except EOFError:
        raise LoadError("no password given (type it twice, or pipe it with --password-stdin)") from None
    if first != again:
        raise LoadError("the two passwords differ; nothing was written")
    return first


@users_app.command("add")
def add(
    file: FileArg,
    name: Annotated[str, typer.Argument(help="user name (letters, digits and . _ @ -)")],
    role: Annotated[str, typer.Option(help=f"what the user may do: {' or '.join(ROLES)}")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password as one line from standard input")
    ] = False,
) -> None:
    """Add a user, or give an existing one a new password and role."""
    if role not in ROLES:
        raise LoadError(f"--role {role}: expected {' or '.join(ROLES)}")
    existed = file.exists() and name in load_accounts(file)
    save_account(file, name, cast(Role, role), _password(password_stdin))
    typer.echo(f"{'changed' if existed else 'added'} {name} ({role}) in {file}")


@users_app.command("list")
def list_users(file: FileArg) -> None:
    """The users of an accounts file and their roles."""
    for name, account in sorted(load_accounts(file).items()):
        typer.echo(f"{name:24s} {account.role}")
