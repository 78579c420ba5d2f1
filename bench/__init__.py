"""The bench engine: sequences, stations, signals, runs and records. No device specifics."""

__version__ = "0.1.0"
