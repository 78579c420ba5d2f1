"""A file the user named that cannot be written or read is bad input: one line naming the path
and the system's reason, exit code 2, never ``internal error`` (which means a fault of ours)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import bench
from tests.rofs import read_only_folder


def test_an_output_in_a_missing_folder_is_one_error_line_and_exit_2(tmp_path: Path) -> None:
    target = tmp_path / "no-such-folder" / "schema.json"
    r = bench("schema", "-o", target)
    assert r.rc == 2, r.out + r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.err
    assert str(target) in lines[0] and "No such file or directory" in lines[0], r.err
    assert "internal error" not in r.err


def test_an_output_in_a_read_only_folder_is_one_error_line_and_exit_2(tmp_path: Path) -> None:
    with read_only_folder(tmp_path / "ro") as folder:
        r = bench("schema", "-o", folder / "schema.json")
    assert r.rc == 2, r.out + r.err
    line = r.err.strip()
    assert line.startswith("error: ") and "\n" not in line and str(folder / "schema.json") in line, r.err
    assert "Read-only file system" in line or "Permission denied" in line, r.err
