"""The expression grammar's LALR tables are cached between processes in the user's cache folder
(bench/expr.py): a command finds them there instead of building them, a cache file that is
damaged or from another grammar is built again, and a cache folder that cannot be made costs the
time only, never the command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

CACHE = Path("hil-bench") / "expression-grammar.lark"
PROBE = (
    "from bench.expr import parse\n"
    "for e in ('bms.max_cell_voltage > 4.2 V and not (supply.output == OFF)', 'abs(a.x - b.y) <= 5 mV or c.z'):\n"
    "    print(parse(e).pretty())\n"
)


def _run(cache_home: Path) -> str:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_home)}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    return out.stdout


def test_the_tables_are_kept_in_the_users_cache_folder_and_used_again(tmp_path: Path) -> None:
    first = _run(tmp_path)
    cache = tmp_path / CACHE
    assert cache.is_file() and cache.stat().st_size > 1000
    assert (tmp_path / "hil-bench").stat().st_mode & 0o077 == 0  # the user's own folder
    stamp = cache.stat().st_mtime_ns
    assert _run(tmp_path) == first
    assert cache.stat().st_mtime_ns == stamp  # read, not built and written again


def test_a_damaged_cache_file_is_built_again(tmp_path: Path) -> None:
    first = _run(tmp_path)
    cache = tmp_path / CACHE
    good = cache.read_bytes()
    key = good.split(b"\n", 1)[0]  # lark's hash of the grammar, its options and versions
    for damaged in (
        good[: len(good) // 2],  # a write cut short (a full disk, a killed process)
        b"0" * len(key) + b"\n" + good.split(b"\n", 1)[1],  # the tables of another grammar
    ):
        cache.write_bytes(damaged)
        assert _run(tmp_path) == first
        rebuilt = cache.read_bytes()
        assert rebuilt.split(b"\n", 1)[0] == key and len(rebuilt) > len(good) // 2
        stamp = cache.stat().st_mtime_ns
        assert _run(tmp_path) == first
        assert cache.stat().st_mtime_ns == stamp  # the rebuilt file is used as it is


def test_a_cache_folder_that_cannot_be_made_costs_only_time(tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    assert _run(blocked) == _run(tmp_path)


def test_a_cache_folder_others_may_write_to_is_not_used(tmp_path: Path) -> None:
    folder = tmp_path / "hil-bench"
    folder.mkdir()
    folder.chmod(0o777)  # made by someone else's tool: any local user could plant a file there
    first = _run(tmp_path)
    assert not (tmp_path / CACHE).exists()
    (tmp_path / CACHE).write_bytes(b"planted")
    assert _run(tmp_path) == first
    assert (tmp_path / CACHE).read_bytes() == b"planted"  # neither read nor replaced
