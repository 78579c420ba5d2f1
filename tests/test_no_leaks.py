"""The suite runs with resource leaks as errors (filterwarnings in pyproject.toml): a test that
leaves a socket or a pipe open fails, where it would otherwise pass with a warning nobody reads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

TESTS = """
import gc
import socket
import subprocess
import sys


def test_leaks_a_socket():
    s = socket.socket()
    del s
    gc.collect()


def test_leaks_a_pipe():
    proc = subprocess.Popen([sys.executable, "-c", "pass"], stdout=subprocess.PIPE)
    proc.wait()
    del proc
    gc.collect()


def test_closes_what_it_opens():
    with socket.socket():
        pass
    proc = subprocess.Popen([sys.executable, "-c", "pass"], stdout=subprocess.PIPE)
    proc.communicate()
"""


def test_a_leaked_socket_or_pipe_fails_the_run(tmp_path: Path) -> None:
    (tmp_path / "test_leaks.py").write_text(TESTS)
    proc = subprocess.run(
        [
            *[sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path)],
            *["-p", "no:cacheprovider", "-p", "no:randomly", "-q", str(tmp_path / "test_leaks.py")],
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "2 failed, 1 passed" in out, out
    assert "FAILED test_leaks.py::test_leaks_a_socket" in out and "FAILED test_leaks.py::test_leaks_a_pipe" in out, out
    assert "ResourceWarning: unclosed <socket.socket" in out and "ResourceWarning: unclosed file" in out, out
