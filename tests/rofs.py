"""A folder nothing can be written to, as a read-only file system gives it (EROFS).

As root, permissions do not stop writes, so a small tmpfs is mounted and remounted read-only;
without root, the folder's write permission is removed (EACCES). Either way the bench sees an
OSError on its first write there, as it would on a read-only or failed disk.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

ROOT_USER = os.geteuid() == 0


@contextlib.contextmanager
def writable_mount(path: Path, size: str = "4m") -> Iterator[Path]:
    """A folder that ``make_read_only`` can later turn read-only while files in it stay open."""
    path.mkdir(parents=True, exist_ok=True)
    if ROOT_USER:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        if ROOT_USER:
            subprocess.run(["umount", "-l", str(path)], check=False)
        else:
            path.chmod(0o755)


def make_read_only(path: Path) -> None:
    if ROOT_USER:
        subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
    else:
        path.chmod(0o555)


@contextlib.contextmanager
def read_only_folder(path: Path) -> Iterator[Path]:
    with writable_mount(path) as folder:
        make_read_only(folder)
        yield folder


def make_writable(path: Path) -> None:
    """Undo ``make_read_only``: the folder takes writes again (a disk that came back)."""
    if ROOT_USER:
        subprocess.run(["mount", "-o", "remount,rw", str(path)], check=True)
    else:
        path.chmod(0o755)
