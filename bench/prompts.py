"""Answers to operator prompts: from a file (CI, virtual time) or from the person at the bench.

An answers file is YAML, keyed by step name::

    confirm enclosure closed: yes
    ambient temperature: 23.4 degC

In virtual time nobody can be asked (the clock would jump past them), so a prompt without an
answer in the file fails with a line saying which key to add.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench.errors import LoadError
from bench.yamlsource import load_yaml, plain

YES = {"yes", "y", "ok", "confirm", "confirmed", "true", "done"}
NO = {"no", "n", "false", "refuse", "refused", "abort"}


class Answers:
    def __init__(self, path: Path | None = None, interactive: bool = False) -> None:
        self.path = path
        self.interactive = interactive
        self.given: dict[str, str] = {}
        if path is not None:
            src = load_yaml(path, "answers")
            data = plain(src.root)
            for key, value in data.items():
                if isinstance(value, dict | list):
                    raise src.error([key], "an answer must be a single value")
                self.given[str(key)] = "yes" if value is True else "no" if value is False else str(value)

    async def ask(self, step: str, text: str) -> tuple[str, str]:
        """The answer to the prompt of ``step`` and where it came from."""
        if step in self.given:
            return self.given[step], f"answers file {self.path}"
        if not self.interactive:
            where = (
                f"add '{step}: ...' to {self.path}"
                if self.path
                else f"run with --answers FILE containing '{step}: ...'"
            )
            raise LoadError(f"prompt '{step}' needs an answer and nobody can be asked here: {where}")
        reply = await asyncio.to_thread(input, f"\n>>> {text}\n    answer: ")
        return reply.strip(), "operator at the bench"
