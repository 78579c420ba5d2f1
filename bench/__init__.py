"""The bench engine: sequences, stations, signals, runs and records. No device specifics."""

import sys

__version__ = "0.1.0"


def _import_can_without_asammdf() -> None:
    """Import python-can with its MF4 back-end switched off.

    ``import can`` imports asammdf, and with it numpy and pandas, for python-can's MF4 reader and
    writer: about 0.8 s of CPU in every process, a ``bench --help`` included. The bench never uses
    that back-end; it writes its MF4 files with asammdf directly (bench/record/mf4.py), which then
    imports normally, when a run's records are converted. Python's rule that a ``None`` in
    ``sys.modules`` fails the import makes python-can record the back-end as absent.
    """
    if "can" in sys.modules or "asammdf" in sys.modules:
        return
    sys.modules["asammdf"] = None  # type: ignore[assignment]
    try:
        import can  # noqa: F401
    finally:
        if sys.modules.get("asammdf", False) is None:
            del sys.modules["asammdf"]


_import_can_without_asammdf()
