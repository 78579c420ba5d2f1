"""docs/own-device.md, followed literally: the same files, the same commands, the same output.

The page marks its code blocks with HTML comments (invisible when rendered); each applies to the
fenced block that follows it:

* ``<!-- doc: file NAME -->``: write the block to NAME;
* ``<!-- doc: expect-file NAME -->``: NAME must hold exactly the block;
* ``<!-- doc: edit NAME -->``: in NAME, replace the section that starts with the block's first
  line (that line, the lines indented deeper below it and the comment lines just above it), as
  the page asks the reader to;
* ``<!-- doc: run -->``: each ``$ command`` runs and must exit 0 and print exactly the lines
  below it, where a line ``...`` stands for any number of lines;
* ``<!-- doc: background TEXT -->``: ``$ command`` starts and keeps running until the end of the
  page; it is ready when it prints TEXT.

Commands run in an empty folder with the project's virtualenv first on PATH, as the page says.
The only change: the served port (29536 on the page) becomes a free port in the files before a
background command starts, so that the test runs beside a server already on 29536.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.served import free_ports

DOC = ROOT / "docs" / "own-device.md"
PORT_ON_PAGE = "29536"
MARK = re.compile(r"^<!-- doc: (file|expect-file|edit|run|background)\s*(.*?)\s*-->$")


@dataclass
class Block:
    action: str
    arg: str
    text: str
    line: int


def blocks(path: Path = DOC) -> list[Block]:
    lines = path.read_text().splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = MARK.match(lines[i])
        if not m:
            i += 1
            continue
        start = i + 1
        while not lines[start].startswith("```"):
            assert not lines[start].strip() or lines[start].startswith("<!--"), (
                f"{path}:{start + 1}: text before the block"
            )
            start += 1
        end = start + 1
        while lines[end] != "```":
            end += 1
        out.append(Block(m.group(1), m.group(2), "\n".join(lines[start + 1 : end]) + "\n", start + 1))
        i = end + 1
    return out


def commands(block: Block) -> list[tuple[str, list[str]]]:
    """Each ``$ command`` of a console block with the output lines below it."""
    out: list[tuple[str, list[str]]] = []
    for line in block.text.splitlines():
        if line.startswith("$ "):
            out.append((line[2:], []))
        else:
            assert out, f"{DOC.name}:{block.line}: output before any command"
            out[-1][1].append(line)
    return out


def matches(expected: list[str], got: list[str]) -> bool:
    """``got`` line for line, a line ``...`` standing for any number of lines."""
    if not expected:
        return not got
    if expected[0] == "...":
        return any(matches(expected[1:], got[i:]) for i in range(len(got) + 1))
    return bool(got) and got[0].rstrip() == expected[0].rstrip() and matches(expected[1:], got[1:])


def edit(text: str, replacement: str) -> str:
    """Replace the section that starts with ``replacement``'s first line, the comments just above it included."""
    lines = text.splitlines(keepends=True)
    head = replacement.splitlines()[0]
    hits = [i for i, line in enumerate(lines) if line.rstrip("\n") == head]
    assert len(hits) == 1, f"'{head}' is not once in the file"
    start = end = hits[0]
    indent = len(head) - len(head.lstrip())
    while start > 0 and lines[start - 1].startswith(" " * indent + "#"):
        start -= 1
    end += 1
    while end < len(lines) and lines[end].strip() and len(lines[end]) - len(lines[end].lstrip()) > indent:
        end += 1
    return "".join(lines[:start]) + replacement + "".join(lines[end:])


class Background:
    """A command of the page left running, ready once it prints a text; stopped with SIGINT."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str], ready: str) -> None:
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        self.output: list[str] = []
        seen = threading.Event()

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line)
                if ready in line:
                    seen.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        if not seen.wait(30):
            self.stop()
            raise AssertionError(f"{' '.join(argv)} did not print '{ready}' within 30 s:\n{''.join(self.output)}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)  # at the end of the output once the process is gone
        if self.proc.stdout is not None:
            self.proc.stdout.close()  # the pipe is closed here, not by the garbage collector


@pytest.fixture
def page_env(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str], list[Background]]]:
    env = dict(os.environ, PATH=f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", COLUMNS="200")
    running: list[Background] = []
    yield tmp_path, env, running
    for bg in reversed(running):  # the client first, then the server it is connected to
        bg.stop()


def _argv(command: str, env: dict[str, str]) -> list[str]:
    argv = shlex.split(command)
    exe = shutil.which(argv[0], path=env["PATH"])
    assert exe is not None, f"{argv[0]} is not on PATH"
    return [exe, *argv[1:]]


def test_the_page_marks_every_step() -> None:
    kinds = [b.action for b in blocks()]
    assert kinds.count("run") >= 4 and kinds.count("background") == 2
    assert {"file", "expect-file", "edit"} <= set(kinds)


def test_own_device_page_followed_literally(page_env: tuple[Path, dict[str, str], list[Background]]) -> None:
    cwd, env, running = page_env
    (port,) = free_ports(1)
    for block in blocks():
        where = f"{DOC.name}:{block.line}"
        if block.action == "file":
            (cwd / block.arg).write_text(block.text)
        elif block.action == "expect-file":
            assert (cwd / block.arg).read_text() == block.text, f"{where}: {block.arg} differs from the page"
        elif block.action == "edit":
            path = cwd / block.arg
            path.write_text(edit(path.read_text(), block.text))
        elif block.action == "run":
            for command, expected in commands(block):
                r = subprocess.run(
                    _argv(command, env), cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
                )
                assert r.returncode == 0, f"{where}: {command}: exit {r.returncode}\n{r.stdout}{r.stderr}"
                got = (r.stdout + r.stderr).splitlines()
                assert matches(expected, got), f"{where}: {command} printed:\n" + "\n".join(got)
        else:
            for path in [*cwd.glob("*.yaml"), *cwd.glob("*.py")]:
                path.write_text(path.read_text().replace(PORT_ON_PAGE, str(port)))
            ((command, _),) = commands(block)
            running.append(Background(_argv(command, env), cwd, env, block.arg))
    # What "Next" says of a missing message: with the BMS stopped, the run names what it misses.
    running.pop().stop()
    r = subprocess.run(
        _argv("bench run first.yaml --station station.yaml -q", env),
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 3, r.stdout + r.stderr
    missing = "dut: no frames of BMS_Cells (0x101, every 1 s), BMS_Status (0x100, every 100 ms) within 2.5 s"
    assert missing in r.stdout and missing in DOC.read_text()


def test_edit_replaces_the_section_and_its_comment() -> None:
    text = "a:\n  x: 1\n  # about b\n  b:\n    c: 1\n    d: 2\n\nz: 1\n"
    assert edit(text, "  b:\n    e: 3\n") == "a:\n  x: 1\n  b:\n    e: 3\n\nz: 1\n"
