"""Alembic migrations of the results database, run by bench/results/store.py at open."""
