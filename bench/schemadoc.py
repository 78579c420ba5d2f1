"""The field tables of docs/sequences.md, written from the sequence schema's descriptions.

The models' ``Field(description=...)`` are the one source of what a field means: ``bench schema``
gives them to editors, and this module writes them into the tables between
``<!-- fields: WHAT -->`` and ``<!-- end fields -->`` in docs/sequences.md, where WHAT is
``sequence``, ``basis``, ``parameter``, ``monitor``, ``step`` (what every step has) or a step
kind. ``python -m bench.schemadoc`` rewrites the tables in place; tests/test_step_registry.py
fails when a table is missing or differs from the models.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import stepkinds
from bench.schema import LAX_BOOL
from bench.stepkinds.base import StepModel

DOC = Path(__file__).resolve().parent.parent / "docs" / "sequences.md"
BLOCK = re.compile(r"(<!-- fields: (?P<what>[a-z_]+) -->\n)(?P<table>.*?)(<!-- end fields -->)", re.S)
COMMON = tuple(StepModel.model_fields)  # name, doc: in the 'step' table, not repeated for every kind
HEADER = "| field | value | default | what it is |\n|---|---|---|---|\n"


def _schema() -> dict[str, Any]:
    from bench.sequence import Sequence

    return Sequence.model_json_schema(by_alias=True)


def _def(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any] | None:
    ref = node.get("$ref")
    if ref is None:
        return None
    found: dict[str, Any] = schema["$defs"][ref.rsplit("/", 1)[1]]
    return found


def _value(schema: dict[str, Any], node: dict[str, Any]) -> str:
    """The kind of value a field takes, in words."""
    if "$ref" in node:
        return "mapping"
    if "allOf" in node:
        return "step"  # a mapping whose one kind key selects its fields (bench/schema.py)
    if "enum" in node and all(isinstance(v, str) for v in node["enum"]):
        return " or ".join(f"`{v}`" for v in node["enum"])
    if "anyOf" in node:
        members = [m for m in node["anyOf"] if m.get("type") != "null"]
        if members == LAX_BOOL["anyOf"]:
            return "true or false"
        words = [_value(schema, m) for m in members]
        return " or ".join(dict.fromkeys(words))
    kind = node.get("type")
    if kind == "array":
        return f"list of {_value(schema, node.get('items', {}))}"
    if kind == "object":
        return f"mapping of name to {_value(schema, node.get('additionalProperties', {}))}"
    return {"string": "text", "number": "number", "integer": "number", "boolean": "true or false"}.get(str(kind), "any")


def _default(owner: dict[str, Any], key: str, node: dict[str, Any]) -> str:
    if key in owner.get("required", []):
        return "required"
    if "default" not in node or node["default"] is None:
        return "optional"
    value = node["default"]
    return f"`{value}`" if isinstance(value, str) and value else f"`{json.dumps(value)}`"


def _rows(schema: dict[str, Any], owner: dict[str, Any], prefix: str, keep: Callable[[str], bool] = bool) -> list[str]:
    rows = []
    for key, node in owner.get("properties", {}).items():
        if not keep(key):
            continue
        text = " ".join(str(node.get("description", "")).split()).replace("|", "\\|")
        rows.append(f"| `{prefix}{key}` | {_value(schema, node)} | {_default(owner, key, node)} | {text} |\n")
        inner = _def(schema, node)
        if inner is not None and "properties" in inner:
            rows += _rows(schema, inner, f"{prefix}{key}.")
    return rows


def _kind_model(schema: dict[str, Any], kind: str) -> dict[str, Any]:
    for branch in schema["properties"]["steps"]["items"]["allOf"]:
        if branch["if"].get("required") == [kind]:
            found = _def(schema, branch["then"])
            assert found is not None
            return found
    raise KeyError(kind)


def tables() -> dict[str, str]:
    """Every table of the doc, by what it documents."""
    schema = _schema()
    defs = schema["$defs"]
    out = {
        "sequence": _rows(schema, schema, ""),
        "basis": _rows(schema, defs["Basis"], "basis."),
        "parameter": _rows(schema, defs["Parameter"], "parameters.NAME."),
        "monitor": _rows(schema, defs["Monitor"], "monitors[]."),
        "step": _rows(schema, _kind_model(schema, stepkinds.names()[0]), "", lambda k: k in COMMON),
    }
    for kind in stepkinds.names():
        out[kind] = _rows(schema, _kind_model(schema, kind), "", lambda k: k not in COMMON)
    return {what: HEADER + "".join(rows) for what, rows in out.items()}


def documented(text: str) -> dict[str, str]:
    """The tables a doc has now, by what they document."""
    return {m["what"]: m["table"] for m in BLOCK.finditer(text)}


def rewrite(text: str) -> str:
    """``text`` with each table replaced by the one written from the models (other text untouched)."""
    wanted = tables()
    return BLOCK.sub(lambda m: m[1] + wanted.get(m["what"], m["table"]) + m[4], text)


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DOC
    text = path.read_text(encoding="utf-8")
    new = rewrite(text)
    if new != text:
        path.write_text(new, encoding="utf-8")
    missing = sorted(set(tables()) - set(documented(new)))
    print(f"{path}: {'rewritten' if new != text else 'up to date'}" + (f"; no table for {missing}" if missing else ""))


if __name__ == "__main__":
    main()
