"""Device drivers: one module per device kind, found by the engine through entry points."""

# Before any module here imports python-can: the bench holds its MF4 back-end (asammdf) back.
import bench  # noqa: F401
