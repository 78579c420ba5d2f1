"""What the ``bench`` commands share in reading their arguments: ``name=value`` pairs and the default station."""

from __future__ import annotations

from pathlib import Path

from bench.errors import LoadError

REPO_ROOT = Path(__file__).resolve().parent.parent


def default_station() -> Path:
    """``stations/sim.yaml`` of the working folder, else the one shipped with the bench."""
    local = Path("stations/sim.yaml")
    return local if local.exists() else REPO_ROOT / "stations" / "sim.yaml"


def parse_pairs(items: list[str] | None, option: str = "-p") -> dict[str, str]:
    """``["hold=60 s", "v=100 V"]`` -> ``{"hold": "60 s", "v": "100 V"}``; one line naming ``option`` if bad."""
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise LoadError(f"{option} {item}: expected name=value")
        out[name.strip()] = value.strip()
    return out
