"""The simulated ECUs' DBC files: parsed once per process, checked for the frames an ECU sends.

A fault-matrix worker builds the same simulated rig for every cell, and cantools takes about
0.07 s per parse. The key is the file's whole contents, so an edited file is parsed again. An
ECU only reads the database (encode, decode, look-ups), so the runs of one process may share it.
A file that cannot be loaded raises and is not remembered.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cantools
from cantools.database.can import Database

_PARSED: dict[tuple[str, bytes], Database] = {}
_PARSED_MAX = 16


def load_ecu_dbc(path: str, owner: str, needed: Iterable[str]) -> Database:
    """The database at ``path`` with every message in ``needed``, or ValueError naming ``owner``."""
    try:
        raw = Path(path).read_bytes()
        key = (Path(path).suffix.lower(), raw)
        db: object = _PARSED.get(key) or cantools.database.load_file(path)
    except Exception as exc:  # cantools raises several unrelated types for bad files
        raise ValueError(f"{owner} config: cannot load dbc {path!r}: {exc}") from exc
    if not isinstance(db, Database):
        raise ValueError(f"{owner} config: {path!r} is not a CAN database")
    names = {m.name for m in db.messages}
    for name in needed:
        if name not in names:
            raise ValueError(f"{owner} config: dbc {path!r} has no message {name}")
    if key not in _PARSED:
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[key] = db
    return db
