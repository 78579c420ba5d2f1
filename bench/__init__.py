"""The bench engine: sequences, stations, signals, runs and records. No device specifics."""

from bench.heldback import hold_back

__version__ = "0.1.0"

# ``import can`` imports ``can.io.mf4``, python-can's MF4 reader and writer, which imports asammdf
# and with it numpy and pandas: about 0.8 s of CPU in every process that imports python-can. The
# bench never uses that back-end; it writes its MF4 files with asammdf directly
# (bench/record/mf4.py). Held back (python-can then records the back-end as missing) wherever
# python-can is first imported, so that a process that never touches CAN (``bench --help``, the lab
# commands) does not import python-can at all.
hold_back("can.io.mf4", {"asammdf": None})
