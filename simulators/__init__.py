"""Simulated devices and plant models. They speak the devices' protocols and nothing else."""
