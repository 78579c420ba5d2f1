"""Answers to operator prompts: from a file (CI, virtual time) or from the person at the bench.

An answers file is YAML, keyed by step name::

    confirm enclosure closed: yes
    ambient temperature: 23.4 degC
    DUT serial number: 0000012345

Every answer is kept as it is written in the file: ``0000012345`` is the text ``0000012345``,
not the number 12345. Given the sequence's prompts (``checks``), the file is checked before
anything moves: a key that is no prompt step, or an answer its prompt cannot take (not yes/no,
not a number with the prompt's unit, text that does not match the prompt's pattern), is one
``error:`` line naming the file's line. At the bench, an answer the prompt cannot take is asked
again.

At the terminal, nobody can be asked in virtual time (the clock would jump past them), so a
prompt without an answer in the file fails with a line saying which key to add. An entry point
that asks a person by other means (the browser station, bench/ui/) passes an ``asker``: it gets a
:class:`PromptRequest` (what to ask and what the answer must be) and returns the answer; in
virtual time the clock follows the wall clock while the person is asked (bench/vtime.py, "paced").
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml import YAML

from bench.errors import LoadError
from bench.vtime import paced_if_virtual
from bench.yamlsource import load_yaml

YES = {"yes", "y", "ok", "confirm", "confirmed", "true", "done"}
NO = {"no", "n", "false", "refuse", "refused", "abort"}

# Why a prompt cannot take an answer, or None when it can.
AnswerCheck = Callable[[str], str | None]


@dataclass(frozen=True)
class PromptRequest:
    """What a prompt step asks, and what its answer must be (for an asker that shows a form)."""

    step: str
    text: str
    answer: str  # 'confirm', 'value' or 'text' (bench/stepkinds/prompt.py)
    unit: str = ""  # answer: value: the unit a bare number is in
    low: float | None = None  # answer: value: the passing range, in ``unit`` (the answer is judged, not refused)
    high: float | None = None
    pattern: str | None = None  # answer: text: the regular expression the whole answer must match
    picture: Path | None = None  # a picture from the sequence's folder to show with the question
    problem: str | None = None  # why the previous answer was not taken (None: first time asked)


# Asks a person (on the run's loop) and returns the answer and who gave it, e.g.
# ("4.2 V", "operator alice at the browser station").
Asker = Callable[[PromptRequest], Awaitable[tuple[str, str]]]


class Answers:
    def __init__(
        self,
        path: Path | None = None,
        interactive: bool = False,
        checks: Mapping[str, AnswerCheck] | None = None,
        asker: Asker | None = None,
    ) -> None:
        self.path = path
        self.interactive = interactive
        self.asker = asker
        self.given: dict[str, str] = {}
        # Set by the operator's view: it steps aside (no live panel, no single keys) while asked.
        self.hold: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext
        if path is not None:
            src = load_yaml(path, "answers")  # bounds, UTF-8, syntax, line numbers
            # The same text read with every scalar as text, exactly as written.
            written = YAML(typ="base").load(src.text)
            for key, (name, value) in zip(src.root, written.items(), strict=True):
                if isinstance(value, dict | list):
                    raise src.error([key], "an answer must be a single value")
                self.given[str(name)] = str(value).strip()
                if checks is not None:
                    problem = _refusal(str(name), self.given[str(name)], checks)
                    if problem is not None:
                        raise src.error([key], problem)

    async def ask(self, request: PromptRequest, check: AnswerCheck | None = None) -> tuple[str, str]:
        """The answer to ``request`` and where it came from; a person is asked until ``check`` takes it."""
        step, text = request.step, request.text
        if step in self.given:
            return self.given[step], f"answers file {self.path}"
        if self.asker is not None:
            with paced_if_virtual(asyncio.get_running_loop()):
                while True:
                    reply, source = await self.asker(request)
                    reply = reply.strip()
                    problem = check(reply) if check is not None else None
                    if problem is None:
                        return reply, source
                    request = dataclasses.replace(request, problem=problem)
        if not self.interactive:
            where = (
                f"add '{step}: ...' to {self.path}"
                if self.path
                else f"run with --answers FILE containing '{step}: ...'"
            )
            raise LoadError(f"prompt '{step}' needs an answer and nobody can be asked here: {where}")
        question = f"\n>>> {text}\n    answer: "
        while True:
            with self.hold():
                reply = (await read_line(question)).strip()
            problem = check(reply) if check is not None else None
            if problem is None:
                return reply, "operator at the bench"
            question = f"    not taken: {problem}; answer again: "


def _refusal(step: str, answer: str, checks: Mapping[str, AnswerCheck]) -> str | None:
    if step not in checks:
        names = ", ".join(f"'{n}'" for n in checks) or "none"
        return f"the sequence has no prompt step '{step}' (its prompt steps: {names})"
    problem = checks[step](answer)
    return None if problem is None else f"not an answer to prompt '{step}': {problem}"


async def read_line(question: str) -> str:
    """One line typed at the terminal, read on the event loop.

    Not ``input()`` in a thread: a prompt that times out would leave that thread blocked in
    ``input()``, and the process could not end until someone pressed Enter.
    """
    print(question, end="", flush=True)
    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()
    line = bytearray()
    done: asyncio.Future[str] = loop.create_future()

    def readable() -> None:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # a terminal that went away
            chunk = b""
        line.extend(chunk)
        if done.done():
            return
        if not chunk:
            done.set_exception(LoadError("the terminal was closed: nobody can answer the prompt"))
        elif b"\n" in line:
            done.set_result(line.split(b"\n", 1)[0].decode(errors="replace"))

    loop.add_reader(fd, readable)
    try:
        return await done
    finally:
        loop.remove_reader(fd)
