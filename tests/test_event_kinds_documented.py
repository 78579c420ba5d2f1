"""Every kind of event a run can write is one member of ``EventKind`` and one row of docs/lifecycle.md.

Three checks: the table under "Events" in docs/lifecycle.md names exactly the members of
``bench.events.EventKind`` (no kind undocumented, no documented kind that does not exist); no
code in ``bench/`` writes an event with a bare string as its kind; and every kind the code
writes is in that table.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from bench.events import EventKind

ROOT = Path(__file__).resolve().parent.parent
LIFECYCLE = ROOT / "docs" / "lifecycle.md"
# The calls that write one event: the engine's ``_event``/``event``, the recorder's ``event``,
# and ``EventLog.append`` on the run's (or an amendment's) log.
EMITTERS = {"event", "_event"}


def documented_kinds() -> list[str]:
    """The first column of the table in the section "## Events" of docs/lifecycle.md."""
    text = LIFECYCLE.read_text(encoding="utf-8")
    match = re.search(r"^## Events\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, "docs/lifecycle.md has no '## Events' section"
    return re.findall(r"^\| `([a-z_]+)` \|", match.group(1), re.M)


def _is_emit(call: ast.Call) -> bool:
    func = call.func
    if not isinstance(func, ast.Attribute) or not call.args:
        return False
    if func.attr in EMITTERS:
        return True
    # ``log.append(kind, t, ...)`` / ``self.log.append(...)``: the hash-chained event log.
    receiver = func.value
    name = receiver.attr if isinstance(receiver, ast.Attribute) else getattr(receiver, "id", "")
    return func.attr == "append" and name == "log"


def emitted() -> tuple[set[str], list[str]]:
    """The kinds the code in bench/ writes, and every place that writes one as a bare string."""
    kinds: set[str] = set()
    bare: list[str] = []
    for path in sorted((ROOT / "bench").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and _is_emit(node)):
                continue
            first = node.args[0]
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                bare.append(f"{where}: {first.value!r}")
            elif (
                isinstance(first, ast.Attribute) and isinstance(first.value, ast.Name) and first.value.id == "EventKind"
            ):
                kinds.add(EventKind[first.attr].value)
    return kinds, bare


def test_the_table_names_every_kind_and_no_other() -> None:
    table = documented_kinds()
    assert len(table) == len(set(table)), f"a kind is listed twice: {sorted(k for k in table if table.count(k) > 1)}"
    members = {k.value for k in EventKind}
    assert not members - set(table), f"kinds not documented in docs/lifecycle.md: {sorted(members - set(table))}"
    assert not set(table) - members, (
        f"docs/lifecycle.md documents kinds that do not exist: {sorted(set(table) - members)}"
    )


def test_no_event_is_written_with_a_bare_string() -> None:
    _, bare = emitted()
    assert not bare, "events written with a bare string as kind (use bench.events.EventKind):\n" + "\n".join(bare)


def test_every_kind_the_code_writes_is_documented() -> None:
    kinds, _ = emitted()
    # The scan must see the emitters at all: the run's first and last events at least.
    assert {EventKind.RUN_STARTED, EventKind.RUN_ENDED, EventKind.RECORD_WRITE_FAILED} <= kinds
    assert not kinds - set(documented_kinds())
