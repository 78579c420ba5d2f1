"""The command line starts without the heavy libraries: they load only where they are used.

asammdf (with numpy and pandas), matplotlib, WeasyPrint and pyvisa cost seconds of start-up in
every `bench` process; a `bench --help`, a `bench validate` or a lab command uses none of them.
`bench --help` imports no python-can, no models and no parsers at all, and its rich help comes
without rich's Markdown and Traceback renderers (bench/heldback.py, benchmarks/startup.py).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

from tests.conftest import ROOT

HEAVY = ["asammdf", "numpy", "pandas", "matplotlib", "weasyprint", "pyvisa"]
# What `bench --help` needs none of: the CAN stack, the models and parsers behind the commands,
# the lab's event loop, and what typer's rich help would import for Markdown help and tracebacks.
NOT_FOR_HELP = [
    *HEAVY,
    "can",
    "cantools",
    "pydantic",
    "lark",
    "ruamel.yaml",
    "asyncio",
    "aiomqtt",
    "cryptography",
    "rich.markdown",
    "markdown_it",
    "rich.traceback",
    "pygments",
    "sqlalchemy",
    "alembic",
    "psycopg",
]
# python-can's interfaces a simulated run's station uses: the in-process link only. Every other
# back-end (socketcan, pcan, vector, kvaser, ...) is a module python-can imports on demand.
USED_CAN_INTERFACES = {"can.interfaces"}

VALIDATE = ["validate", "sequences/r100/overcharge.yaml", "--station", "stations/sim.yaml"]


def _loaded_after(code: str, names: list[str] | None = None) -> list[str]:
    names = HEAVY if names is None else names
    probe = f"{code}\nimport json, sys\nprint(json.dumps([m for m in {names!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    loaded: list[str] = json.loads(out.stdout.splitlines()[-1])
    return loaded


def _modules_after_command(args: list[str]) -> tuple[int, str, set[str]]:
    """Run `bench ARGS` in a fresh interpreter; its exit code, its output and every module it imported."""
    probe = (
        "import json, sys\n"
        f"sys.argv = ['bench', *{args!r}]\n"
        "from bench.cli import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        "sys.stdout.flush()\n"
        "sys.stderr.write('\\nMODULES ' + json.dumps([code, sorted(sys.modules)]) + '\\n')\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    last = [line for line in out.stderr.splitlines() if line.startswith("MODULES ")]
    assert last, out.stderr
    code, modules = json.loads(last[-1].removeprefix("MODULES "))
    return code, out.stdout, set(modules)


def test_the_command_line_imports_none_of_the_heavy_libraries() -> None:
    assert _loaded_after("import bench.cli") == []


def test_bench_help_imports_no_can_no_models_no_parsers() -> None:
    code, out, modules = _modules_after_command(["--help"])
    assert code == 0
    assert [m for m in NOT_FOR_HELP if m in modules] == []
    # Still typer's rich help (a panel headed Commands, not click's plain "Commands:"), every command listed.
    assert "Commands" in out and "Commands:" not in out
    for command in ("run", "validate", "verify", "campaign", "signals", "lab", "sim"):
        assert re.search(rf"^[│|\s]*{command}\s", out, re.MULTILINE), command


def test_bench_validate_loads_no_heavy_library_and_no_unused_can_backend() -> None:
    code, out, modules = _modules_after_command(VALIDATE)
    assert code == 0, out
    assert "sequences/r100/overcharge.yaml: ok (sequence)" in out
    assert [m for m in HEAVY if m in modules] == []
    assert {m for m in modules if m.startswith("can.interfaces")} <= USED_CAN_INTERFACES
    # python-can's MF4 module ran, without its back-end.
    assert "can.io.mf4" in modules and "asammdf" not in modules
    # What only a run needs: the run's context and record, and the UDS stack a DUT is identified with.
    assert sorted(RUN_ONLY & modules) == []


RUN_ONLY = {
    "bench.runcontext",
    "bench.runrecord",
    "bench.interlock",
    "bench.record",
    "drivers.uds",
    "isotp",
    "udsoncan",
}


def test_python_can_comes_without_its_mf4_backend_and_asammdf_still_imports() -> None:
    assert _loaded_after("import bench, can") == []
    # The bench's own MF4 conversion imports asammdf when it needs it.
    assert "asammdf" in _loaded_after("import bench, can\nfrom bench.record.mf4 import blf_to_mf4\nimport asammdf")


def test_the_mf4_backend_is_held_back_wherever_python_can_is_first_imported() -> None:
    # A driver or simulator module imports python-can before anything of the bench proper.
    for first in ("drivers.can_dbc", "simulators.plant", "simulators.serve"):
        assert _loaded_after(f"import {first}") == [], first


def test_the_rich_renderers_held_back_from_typers_help_load_when_used() -> None:
    code = (
        "import sys\n"
        "import bench.cli, typer.rich_utils as r\n"
        "assert 'rich.markdown' not in sys.modules and 'rich.traceback' not in sys.modules\n"
        "md = r.Markdown('*x*')\n"
        "import rich.markdown, rich.traceback\n"
        "assert isinstance(md, rich.markdown.Markdown) and isinstance(md, r.Markdown)\n"
        "assert r.Traceback.from_exception == rich.traceback.Traceback.from_exception\n"
    )
    assert "markdown_it" in _loaded_after(code, ["markdown_it"])
