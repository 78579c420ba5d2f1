"""The browser operator station (``bench ui``, docs/ui.md): another entry point to the one run path.

The plain-Python side (accounts and roles, the audit log, the sequence library, the bench's status,
the lab's benches, the results history, ``bench ui user``) holds no test logic of its own: it asks
the engine's modules (plan building, the interlock, the station lock, the results queries, the lab
client) and gives their answers to the web app in shapes a page can show.
"""
