"""Run every benchmark and gather their rows into one table (`make bench`).

A benchmark is a script in this folder that reports through benchmarks/table.py (it imports
``benchmarks.table``, so it takes ``--smoke`` and ``--json FILE``); a new one joins the table
without an edit here. Each runs as its own process, one after the other (they measure, so they
must not share the machine with each other), with ``--json`` to a temporary file. A script that
fails, hangs past ``--timeout`` or reports malformed rows is a row of the table with its error,
and the exit code is 1 at the end: the table of the others is never lost.

The table (rows, the machine, the load before and after, the date and the commit) is written as
JSON to ``--out`` (by default benchmarks/results/latest.json after a full run, nowhere after a
smoke run or a subset) and printed as markdown; ``--readme`` also puts the markdown into the
"Last table" section of benchmarks/README.md, between its markers.

    .venv/bin/python benchmarks/run_all.py [--smoke] [--only NAME ...] [--out FILE] [--readme]
    .venv/bin/python benchmarks/run_all.py --from benchmarks/results/latest.json [--readme]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import fields
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.table import Row  # noqa: E402

FOLDER = ROOT / "benchmarks"
LATEST = FOLDER / "results" / "latest.json"
README = FOLDER / "README.md"
# Modules of this folder that are not benchmarks, even where they import the table.
HELPERS = {"table.py", "local_broker.py", "run_all.py"}
PROTOCOL = "benchmarks.table"
BEGIN = "<!-- last table: written by benchmarks/run_all.py --readme (make bench); do not edit by hand -->"
END = "<!-- end of the last table -->"
# A row's ratio is ours / baseline or baseline / ours of its own two figures, so that a reader
# can check it (a median of per-round ratios comes with the times of that median round).
RATIO_TOLERANCE = 0.01  # rounding
HEARTBEAT_S = 60.0


def discover(folder: Path = FOLDER) -> tuple[list[Path], list[Path]]:
    """(benchmarks on the table's protocol, other scripts of the folder), each sorted by name."""
    scripts = [p for p in sorted(folder.glob("*.py")) if p.name not in HELPERS and not p.name.startswith("_")]
    on = [p for p in scripts if PROTOCOL in p.read_text(encoding="utf-8")]
    return on, [p for p in scripts if p not in on]


def needs_mosquitto(script: Path) -> bool:
    """Whether the script starts a broker (benchmarks/local_broker.py is the one way it does)."""
    return "benchmarks.local_broker" in script.read_text(encoding="utf-8")


def row_problems(row: Any, benchmark: str, smoke: bool) -> list[str]:
    """What is wrong with one row of a script's JSON; empty when it is well-formed."""
    if not isinstance(row, dict):
        return [f"a row is not an object: {row!r}"]
    names = [f.name for f in fields(Row)]
    problems = [f"field {name!r} missing" for name in names if name not in row]
    problems += [f"unknown field {name!r}" for name in row if name not in (*names, "smoke")]
    if problems:
        return problems
    if row["benchmark"] != benchmark:
        problems.append(f"benchmark {row['benchmark']!r} is not the script's name {benchmark!r}")
    for name in ("figure", "unit", "ratio_means"):
        if not isinstance(row[name], str) or not row[name].strip():
            problems.append(f"{name} is empty")
    if not isinstance(row["goal"], str):
        problems.append("goal is not text")
    numbers = ("ours", "baseline", "ratio")
    for name in numbers:
        value = row[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            problems.append(f"{name} is not a finite number >= 0: {value!r}")
    if problems:
        return problems
    ours, baseline, ratio = (float(row[n]) for n in numbers)
    if baseline <= 0 or ours <= 0 or ratio <= 0:
        problems.append(f"ours, baseline and ratio must be > 0: {ours}, {baseline}, {ratio}")
    elif not any(abs(ratio - r) <= RATIO_TOLERANCE * r for r in (ours / baseline, baseline / ours)):
        problems.append(
            f"ratio {ratio:.4g} is neither ours / baseline ({ours / baseline:.4g}) nor baseline / ours "
            f"({baseline / ours:.4g}) within {RATIO_TOLERANCE:.0%}"
        )
    if row["met"] is not None and not isinstance(row["met"], bool):
        problems.append(f"met is not true, false or null: {row['met']!r}")
    if row["met"] is not None and not row["goal"]:
        problems.append("met without a goal")
    if row.get("smoke") is not smoke:
        problems.append(f"smoke is {row.get('smoke')!r}, the run was {'a smoke run' if smoke else 'a full run'}")
    if smoke and row["met"] is not None:
        problems.append("a smoke run's row says whether the goal is met")
    return problems


def _error_line(output: list[str], code: int | None) -> str:
    """The script's own `error: ...` line if it wrote one, else its last line."""
    lines = [line.strip() for line in output if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    last = errors[-1] if errors else (lines[-1] if lines else "no output")
    return f"exit {code}: {last}" if code is not None else last


def run_one(script: Path, smoke: bool, timeout: float, echo: bool = True) -> dict[str, Any]:
    """Run one benchmark with --json to a temporary file: its entry (rows, seconds, error)."""
    name = script.stem
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        out = Path(tmp) / "rows.json"
        argv = [sys.executable, str(script), "--json", str(out), *(["--smoke"] if smoke else [])]
        # Its own session: a script that hangs is stopped with every process it started.
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            # Station locks and interlock latches of its own: a run on the same station elsewhere
            # (a demo, the tests) neither refuses the benchmark nor is refused by it.
            env={**os.environ, "PYTHONUNBUFFERED": "1", "BENCH_STATE_DIR": str(Path(tmp) / "state")},
            start_new_session=True,
        )
        tail: deque[str] = deque(maxlen=40)
        reader = threading.Thread(target=_read, args=(proc, tail, echo), daemon=True)
        reader.start()
        t0 = time.monotonic()
        error = ""
        try:
            while True:
                try:
                    proc.wait(timeout=min(HEARTBEAT_S, max(0.1, t0 + timeout - time.monotonic())))
                    break
                except subprocess.TimeoutExpired:
                    elapsed = time.monotonic() - t0
                    if elapsed >= timeout:
                        error = f"timed out after {timeout:g} s"
                        _stop(proc)
                        break
                    _progress(f"  {script.name} still running, {elapsed:.0f} s")
        except KeyboardInterrupt:
            _stop(proc)
            raise
        seconds = time.monotonic() - t0
        reader.join(timeout=5)
        rows: list[Any] = []
        if out.exists():
            try:
                rows = json.loads(out.read_text())
            except json.JSONDecodeError as exc:
                error = error or f"its JSON does not parse: {exc}"
        if not isinstance(rows, list):
            error, rows = error or "its JSON is not a list of rows", []
        if not error and proc.returncode != 0:
            error = _error_line(list(tail), proc.returncode)
        if not error and not rows:
            error = "no rows"
        problems = [f"row {i + 1}: {p}" for i, row in enumerate(rows) for p in row_problems(row, name, smoke)]
        if problems:  # the rows are dropped, not tabled half-formed; the error says why
            error, rows = "; ".join([*([error] if error else []), *problems]), []
    return {
        "script": script.name,
        "exit_code": proc.returncode,
        "seconds": round(seconds, 2),
        "error": error,
        "rows": rows,
        "output_tail": list(tail)[-10:] if error else [],
    }


def _read(proc: subprocess.Popen[str], tail: deque[str], echo: bool) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        tail.append(line.rstrip("\n"))
        if echo:
            print("  | " + line, end="", flush=True)
    proc.stdout.close()


def _stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM to the script (the scripts clean up their children on it), then its whole session."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the session is gone already
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    memory_gb = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gb = round(int(line.split()[1]) / 1024**2, 1)
                break
    except OSError:
        pass  # not Linux: the fields platform gives
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": memory_gb,
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
    }


def commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()

    head = git("rev-parse", "--short", "HEAD")
    return f"{head} (uncommitted changes)" if head and git("status", "--porcelain", "--untracked-files=no") else head


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def run_all(
    scripts: list[Path], skipped: list[Path], smoke: bool, only: bool, timeout: float, echo: bool
) -> dict[str, Any]:
    table: dict[str, Any] = {
        "date": now(),
        "smoke": smoke,
        "subset": only,
        "commit": commit(),
        "machine": machine(),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }
    entries: list[dict[str, Any]] = []
    t0 = time.monotonic()
    for i, script in enumerate(scripts, 1):
        _progress(
            f"[{i}/{len(scripts)}] {script.name}{' --smoke' if smoke else ''} ({time.monotonic() - t0:.0f} s so far)"
        )
        started = time.monotonic()
        try:
            entry = run_one(script, smoke, timeout, echo)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the script is stopped; the table so far is kept
            seconds = round(time.monotonic() - started, 2)
            entries.append({"script": script.name, "exit_code": None, "seconds": seconds, "error": "interrupted"})
            entries[-1] |= {"rows": [], "output_tail": []}
            table["interrupted"] = [p.name for p in scripts[i:]]
            _progress(f"[{i}/{len(scripts)}] {script.name}: interrupted; not run: {', '.join(table['interrupted'])}")
            break
        state = f"FAILED: {entry['error']}" if entry["error"] else f"{len(entry['rows'])} rows"
        _progress(f"[{i}/{len(scripts)}] {script.name}: {entry['seconds']:.1f} s, {state}")
        entries.append(entry)
    table["finished"] = now()
    table["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    table["scripts"] = entries
    table["not_on_the_table"] = [p.name for p in skipped]
    table["rows"] = [
        row
        for e in entries
        for row in [*e["rows"], *([{"benchmark": Path(e["script"]).stem, "error": e["error"]}] if e["error"] else [])]
    ]
    return table


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(table: dict[str, Any]) -> str:
    m = table["machine"]
    start, end = table["load_average_start"], table["load_average_end"]
    lines = [
        f"{'Smoke run' if table['smoke'] else 'Full run'}{' of some benchmarks' if table.get('subset') else ''}"
        f" of {table['date']} (finished {table['finished']}),"
        f" commit {table['commit'] or 'unknown'}; {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB,"
        f" {m['kernel']}, {m['python']}; load average (1, 5, 15 min) {', '.join(map(str, start))} at the start,"
        f" {', '.join(map(str, end))} at the end.",
        "",
        "| benchmark | figure | ours | baseline | unit | ratio | ratio means | goal | met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table["rows"]:
        if "error" in row:
            lines.append(f"| {row['benchmark']} | **failed**: {_cell(row['error'])} | | | | | | | |")
            continue
        met = {True: "yes", False: "**no**", None: ""}[row["met"]]
        cells = [row["benchmark"], row["figure"], *(_number(row[k]) for k in ("ours", "baseline"))]
        cells += [row["unit"], _number(row["ratio"]), row["ratio_means"], row["goal"], met]
        lines.append("| " + " | ".join(_cell(str(c)) for c in cells) + " |")
    times = ", ".join(f"{Path(e['script']).stem} {e['seconds']:.0f} s" for e in table["scripts"])
    lines += ["", f"Time per script: {times}."]
    if table.get("interrupted"):
        lines += ["", f"Interrupted; not run: {', '.join(table['interrupted']) or 'none'}."]
    if table.get("not_on_the_table"):
        lines += ["", f"Not on the table (no `--json` yet): {', '.join(table['not_on_the_table'])}."]
    return "\n".join(lines) + "\n"


def write_readme(readme: Path, text: str) -> None:
    content = readme.read_text(encoding="utf-8")
    if content.count(BEGIN) != 1 or content.count(END) != 1 or content.index(BEGIN) > content.index(END):
        sys.exit(f"error: {readme} has no last-table section (one line {BEGIN!r}, then one line {END!r})")
    head, rest = content.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{text}{END}{tail}", encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="every script's short run (what `make test` runs)")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="only these scripts (name with or without .py)")
    ap.add_argument("--out", type=Path, help=f"write the JSON table here (default after a full run: {LATEST})")
    ap.add_argument("--readme", nargs="?", const=README, type=Path, help="put the table into the README's section")
    ap.add_argument("--from", dest="source", type=Path, help="print (and --readme) a table written before")
    ap.add_argument("--timeout", type=float, help="seconds per script (default 3600, smoke 300)")
    ap.add_argument("--quiet", action="store_true", help="do not echo the scripts' own output")
    ap.add_argument("--folder", type=Path, default=FOLDER, help=argparse.SUPPRESS)  # the tests' own scripts
    args = ap.parse_args()
    # SIGTERM (a CI timeout, the operator) stops the running script like Ctrl-C: it runs in its own
    # session, so without this it would outlive us.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if args.source is not None:
        try:
            table = json.loads(args.source.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            sys.exit(f"error: {args.source}: {exc}")
        if args.readme is not None and (table.get("smoke") or table.get("subset") or "interrupted" in table):
            sys.exit("error: --readme takes the table of a full run of every benchmark")
    else:
        scripts, skipped = discover(args.folder)
        if args.only:
            wanted = {name.removesuffix(".py") for name in args.only}
            unknown = wanted - {p.stem for p in scripts}
            if unknown:
                known = ", ".join(p.stem for p in scripts)
                sys.exit(f"error: no benchmark named {', '.join(sorted(unknown))} (known: {known})")
            scripts, skipped = [p for p in scripts if p.stem in wanted], []
        if args.readme is not None and (args.smoke or args.only):
            sys.exit("error: --readme takes the table of a full run of every benchmark")
        timeout = args.timeout or (300.0 if args.smoke else 3600.0)
        table = run_all(scripts, skipped, args.smoke, bool(args.only), timeout, echo=not args.quiet)
        out = args.out or (None if args.smoke or args.only else LATEST)
        if "interrupted" in table:  # printed below; the last full table stays where it is
            out = args.out
            if args.readme is not None or out is None:
                _progress("interrupted: the last table in benchmarks/results and the README is kept")
            args.readme = None
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(table, indent=1) + "\n")
            _progress(f"table written to {out}")
    text = markdown(table)
    print()
    print(text, end="")
    if args.readme is not None:
        write_readme(args.readme, text)
        _progress(f"last table written into {args.readme}")
    failed = [e["script"] for e in table["scripts"] if e["error"]]
    if failed:
        sys.exit(f"error: {len(failed)} benchmark(s) failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
