"""Simulated devices and plant models. They speak the devices' protocols and nothing else."""

# Before any module here imports python-can: the bench holds its MF4 back-end (asammdf) back.
import bench  # noqa: F401
