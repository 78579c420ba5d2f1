"""Start-up: `bench --help` and `bench validate` of one sequence, against `python -c pass`.

Each round runs the three commands one after the other (interleaved, so that a load change on a
shared machine hits all three alike); the figure is the median over the rounds, as wall time and
as the process's CPU time (user + system, from the kernel's accounting of the child): on a loaded
machine the CPU time is the cost of start-up, the wall time adds the wait for a core.

The commands run as installed code runs, with its bytecode compiled once: the children keep their
bytecode under a temporary PYTHONPYCACHEPREFIX (not in the checkout), written by a first round
that is not counted. Every run checks its exit code and its output (the help lists the commands,
validate says the sequence is ok).

    .venv/bin/python benchmarks/startup.py [--rounds 15] [--compare DIR] [--smoke] [--json FILE]

``--compare DIR`` runs the same two commands of another copy of the code (say ``git archive`` of
an older commit, extracted into DIR) in the same rounds, for a before/after; printed, not a row.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.table import Row, add_arguments, emit  # noqa: E402

SMOKE_ROUNDS = 1
VALIDATE = ["validate", "sequences/r100/overcharge.yaml", "--station", "stations/sim.yaml"]
GOALS = {"help": 0.3, "validate": 0.5}  # seconds


def _bench() -> list[str]:
    script = Path(sys.executable).parent / "bench"  # the console script a user runs
    return [str(script)] if script.exists() else [sys.executable, "-m", "bench.cli"]


def _help_ok(out: str) -> bool:
    return "Commands" in out and "validate" in out and "campaign" in out


def _validate_ok(out: str) -> bool:
    return "sequences/r100/overcharge.yaml: ok (sequence)" in out


COMMANDS: dict[str, tuple[list[str], Callable[[str], bool]]] = {
    "pass": ([sys.executable, "-c", "pass"], lambda out: out == ""),
    "help": ([*_bench(), "--help"], _help_ok),
    "validate": ([*_bench(), *VALIDATE], _validate_ok),
}


def _compare_commands(code: Path) -> None:
    """The same commands, of the code in ``code`` (first on sys.path, before the installed copy)."""
    main = f"import sys; sys.path.insert(0, {str(code.resolve())!r}); from bench.cli import main; sys.argv[0] = 'bench'; main()"
    for name in GOALS:
        argv, ok = COMMANDS[name]
        COMMANDS[f"{name} ({code})"] = ([sys.executable, "-c", main, *argv[len(_bench()) :]], ok)


def _run(name: str, env: dict[str, str]) -> tuple[float, float]:
    """One run of ``name``: its wall time and its CPU time (user + system), in seconds."""
    argv, ok = COMMANDS[name]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0 or not ok(proc.stdout):
        sys.exit(f"error: {' '.join(argv)} exited {proc.returncode}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--compare", type=Path, help="another copy of the code, measured in the same rounds")
    add_arguments(parser)
    args = parser.parse_args()
    if args.compare is not None:
        _compare_commands(args.compare)
    rounds = SMOKE_ROUNDS if args.smoke else args.rounds
    with tempfile.TemporaryDirectory(prefix="bench-startup-pyc-") as pyc:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = pyc
        env["COLUMNS"] = "100"
        walls: dict[str, list[float]] = {name: [] for name in COMMANDS}
        cpus: dict[str, list[float]] = {name: [] for name in COMMANDS}
        for name in COMMANDS:  # the uncounted round: compiles and caches the bytecode
            _run(name, env)
        for _ in range(rounds):
            for name in COMMANDS:
                wall, cpu = _run(name, env)
                walls[name].append(wall)
                cpus[name].append(cpu)
    for name in COMMANDS:
        if name not in GOALS and name != "pass":
            wall, cpu = statistics.median(walls[name]), statistics.median(cpus[name])
            print(f"{name}: median wall {wall:.3f} s, CPU {cpu:.3f} s over {rounds} rounds")
    rows = []
    for name, goal in GOALS.items():
        for what, samples in (("wall", walls), ("CPU", cpus)):
            ours, base = statistics.median(samples[name]), statistics.median(samples["pass"])
            spread = f"{min(samples[name]):.3f}-{max(samples[name]):.3f}"
            print(f"{name} {what}: median {ours:.3f} s over {rounds} rounds ({spread}); python -c pass {base:.3f} s")
            figure = f"`bench {'--help' if name == 'help' else 'validate'}` start-up, {what} time (median)"
            rows.append(
                Row(
                    "startup", figure, ours, base, "s", ours / base, "ours / python -c pass", f"< {goal} s", ours < goal
                )
            )
    emit(rows, args)


if __name__ == "__main__":
    main()
