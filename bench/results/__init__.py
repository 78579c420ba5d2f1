"""The results database: an index of sealed run folders, in SQLite by default or a lab's PostgreSQL.

The run folder stays the record; the database can be rebuilt from the folders (``bench db import``).
``schema`` holds the tables, ``rows`` what one run folder contributes, ``store`` the connection
and the idempotent write, ``outbox`` the queue of runs the database could not take (docs/results.md).
"""
