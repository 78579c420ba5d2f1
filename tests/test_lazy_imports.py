"""The command line starts without the heavy libraries: they load only where they are used.

asammdf (with numpy and pandas), matplotlib, WeasyPrint and pyvisa cost seconds of start-up in
every `bench` process; a `bench --help`, a `bench validate` or a lab command uses none of them.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

HEAVY = ["asammdf", "numpy", "pandas", "matplotlib", "weasyprint", "pyvisa"]


def _loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    loaded: list[str] = json.loads(out.stdout.splitlines()[-1])
    return loaded


def test_the_command_line_imports_none_of_the_heavy_libraries() -> None:
    assert _loaded_after("import bench.cli") == []


def test_python_can_comes_without_its_mf4_backend_and_asammdf_still_imports() -> None:
    assert _loaded_after("import bench, can") == []
    # The bench's own MF4 conversion imports asammdf when it needs it.
    assert "asammdf" in _loaded_after("import bench, can\nfrom bench.record.mf4 import blf_to_mf4\nimport asammdf")
