"""Errors that end a command with one clear line and a distinct exit code."""

from __future__ import annotations

from pathlib import Path


class BenchError(Exception):
    """An error meant for the user: printed as one line, never as a traceback."""

    exit_code = 3


class LoadError(BenchError):
    """Bad input found before anything moves: a sequence, station, DBC, parameter or option."""

    exit_code = 2

    def __init__(
        self, message: str, path: Path | str | None = None, line: int | None = None, field: str | None = None
    ) -> None:
        self.message = message
        self.path = Path(path) if path is not None else None
        self.line = line
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = f"{_display(self.path)}:{self.line if self.line is not None else 1}: "
        field = f"{self.field}: " if self.field else ""
        return f"{where}{field}{self.message}"


class ExpressionError(ValueError):
    """A condition or quantity that does not parse or does not type-check; the caller adds the place."""


class DeviceError(BenchError):
    """A device could not be reached or misbehaved; names the device."""

    def __init__(self, device: str, message: str) -> None:
        self.device = device
        self.message = message
        super().__init__(f"{device}: {message}")


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
