"""The bench's tests, one package: every module, conftest included, is imported as ``tests.<name>``."""
