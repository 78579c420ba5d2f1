"""The JSON Schema that ``bench schema`` writes for editors agrees with the loader.

Every sequence file of the project that the loader accepts, the schema accepts (an editor shows
no false errors); the mistakes of tests/schema_bad/ are refused by both, and the schema's error
for a bad step names the step's field, not only "not valid under any of the given schemas".
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from jsonschema.exceptions import ValidationError, best_match
from pydantic import BaseModel
from pydantic import ValidationError as PydanticError
from ruamel.yaml import YAML

from bench import stepkinds
from bench.errors import LoadError
from bench.plan import load_sequence
from bench.schema import SequenceJsonSchema
from bench.sequence import Sequence
from bench.yamlsource import load_yaml, plain
from tests.conftest import bench

ROOT = Path(__file__).resolve().parent.parent
# Where the project keeps sequence files: shipped, test and example ones (stations, answers and
# other YAML files in these folders are refused by the loader and so left out below).
CORPUS = sorted(p for folder in ("sequences", "tests", "examples") for p in (ROOT / folder).rglob("*.y*ml"))
BAD = sorted((ROOT / "tests" / "schema_bad").glob("*.yaml"))
UNHELPFUL = "is not valid under any of the given schemas"


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("schema") / "sequence.schema.json"
    r = bench("schema", "-o", out)
    assert r.rc == 0, r.err
    loaded: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _errors(validator: jsonschema.protocols.Validator, path: Path) -> list[ValidationError]:
    return list(validator.iter_errors(plain(load_yaml(path, "sequence").root)))


def _where(error: ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path)


@functools.cache
def _accepted() -> dict[Path, dict[str, Any]]:
    """The files of the corpus the loader accepts, as the loader reads them."""
    found = {}
    for path in CORPUS:
        try:
            src, _ = load_sequence(path)
        except LoadError:
            continue
        found[path] = plain(src.root)
    return found


def test_the_schema_accepts_every_sequence_the_loader_accepts(validator: jsonschema.protocols.Validator) -> None:
    accepted = _accepted()
    shipped = [p for p in CORPUS if p.is_relative_to(ROOT / "sequences")]
    assert shipped and set(shipped) <= set(accepted), "a shipped sequence no longer loads"
    assert len(accepted) >= 60
    false_errors = [
        f"{path.relative_to(ROOT)}: {_where(e)}: {e.message}"
        for path, data in accepted.items()
        for e in validator.iter_errors(data)
    ]
    assert not false_errors, "\n".join(false_errors)


# Where the loader and the schema knowingly disagree, and why (field with list indices as [], value).
KNOWN: set[tuple[str, str]] = set()
REPLACEMENTS: tuple[object, ...] = (True, 12, 4.2, [1], {"x": 1}, None)
DROPPED = object()


def _nodes(node: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    yield path, node
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, value in items:
        yield from _nodes(value, (*path, key))


def _replaced(data: dict[str, Any], path: tuple[str | int, ...], value: object) -> dict[str, Any]:
    out = copy.deepcopy(data)
    node: Any = out
    for key in path[:-1]:
        node = node[key]
    if value is DROPPED:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


def _field(path: tuple[str | int, ...]) -> str:
    # The names of parameters and of set signals are the file's own: one field for all of them.
    parts = ["*" if i and path[i - 1] in ("parameters", "set") else str(p) for i, p in enumerate(path)]
    return ".".join("[]" if isinstance(p, int) else parts[i] for i, p in enumerate(path)).replace(".[]", "[]")


def test_the_loader_and_the_schema_agree_on_every_field_changed(validator: jsonschema.protocols.Validator) -> None:
    # Each field of every accepted file replaced by a value of every JSON type, or dropped, once per
    # field of the language: the loader's model and the schema must accept and refuse alike.
    seen: set[tuple[str, str, str]] = set()
    disagree: dict[tuple[str, str], str] = {}
    for path, full in _accepted().items():
        # One step at a time, in a sequence otherwise as written: small documents, every field reached.
        alone = [{**full, "steps": [step], "cleanup": []} for step in [*full["steps"], *full.get("cleanup", [])]]
        rest = {**full, "steps": [{"wait": "1 s"}], "cleanup": []}
        for data, only_steps in [(rest, False), *((d, True) for d in alone)]:
            for where, value in list(_nodes(data)):
                if not where or (only_steps and where[0] != "steps"):
                    continue
                field = _field(where)
                for new in (*REPLACEMENTS, *([DROPPED] if isinstance(where[-1], str) else [])):
                    key = (field, "dropped" if new is DROPPED else repr(new), type(value).__name__)
                    if key in seen:
                        continue
                    seen.add(key)
                    changed = _replaced(data, where, new)
                    try:
                        Sequence.model_validate(changed)
                        loader = True
                    except PydanticError:
                        loader = False
                    if loader != validator.is_valid(changed):
                        disagree[key[:2]] = (
                            f"{path.relative_to(ROOT)}: only the {'loader' if loader else 'schema'} accepts it"
                        )
    assert len(seen) >= 300
    new = "\n".join(f"{f} = {v}: {why}" for (f, v), why in disagree.items() if (f, v) not in KNOWN)
    assert not new, new
    assert set(disagree) >= KNOWN, f"no longer disagree (remove from KNOWN): {KNOWN - set(disagree)}"


def test_the_documented_short_forms_are_valid(validator: jsonschema.protocols.Validator) -> None:
    head = {"id": "X", "title": "t", "version": "1", "basis": {"standard": "s", "clause": "1"}, "requires": []}
    doc = {
        **head,
        "parameters": {"max_duration": "12 h", "cells": 192, "gain": 1.5, "soc": {"default": 65, "max": 90}},
        "steps": [{"wait": 2}, {"wait_until": "x == ON", "timeout": 10}],
    }
    assert [e.message for e in validator.iter_errors(doc)] == []


def test_a_true_false_field_takes_what_the_loader_takes() -> None:
    class Flag(BaseModel):
        on: bool

    check = jsonschema.Draft202012Validator(Flag.model_json_schema(schema_generator=SequenceJsonSchema))
    for value in [
        "yes",
        "No",
        "ON",
        "off",
        "t",
        "F",
        "y",
        "n",
        "1",
        "0",
        "TRUE",
        1,
        0,
        True,
        "maybe",
        "2",
        2,
        " yes",
        None,
    ]:
        try:
            Flag.model_validate({"on": value})
            loader = True
        except PydanticError:
            loader = False
        assert check.is_valid({"on": value}) == loader, value


def _expectation(path: Path) -> tuple[str, str, str]:
    text = path.read_text(encoding="utf-8")
    loader = re.search(r"^# loader: (.*)$", text, re.M)
    schema = re.search(r"^# schema: (.*?) \| (.*)$", text, re.M)
    assert loader and schema, f"{path.name} lacks its '# loader:' and '# schema: where | message' lines"
    return loader.group(1), schema.group(1).strip(), schema.group(2)


def test_there_are_enough_known_bad_files() -> None:
    assert len(BAD) >= 5


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_a_mistake_is_refused_by_the_loader_and_the_schema(
    path: Path, validator: jsonschema.protocols.Validator
) -> None:
    loader_message, where, message = _expectation(path)
    with pytest.raises(LoadError) as refused:
        load_sequence(path)
    assert loader_message in str(refused.value)
    errors = _errors(validator, path)
    assert errors, f"the schema accepts {path.name}"
    best = best_match(errors)
    assert (_where(best), UNHELPFUL not in best.message) == (where, True), best.message
    assert message in best.message


def test_a_bad_step_is_reported_against_its_own_kind(validator: jsonschema.protocols.Validator) -> None:
    # Each kind's subschema is selected by its key: a wrong field of any kind names that field.
    head = {"id": "X", "title": "t", "version": "1", "basis": {"standard": "s", "clause": "1"}, "requires": []}
    for kind in stepkinds.names():
        step = {kind: "x", "no_such_field": 1}
        errors = list(validator.iter_errors({**head, "steps": [step]}))
        assert any("'no_such_field' was unexpected" in e.message for e in errors), (kind, [e.message for e in errors])
        assert all(UNHELPFUL not in e.message for e in errors), (kind, [e.message for e in errors])


def _properties(node: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every property of every object of the schema, with where it is."""
    if isinstance(node, dict):
        for key, prop in node.get("properties", {}).items():
            yield f"{where}.{key}", prop
        for key, value in node.items():
            if key != "if":  # a condition of a rule, not a field
                yield from _properties(value, f"{where}.{key}" if key not in ("properties", "$defs") else where)
    elif isinstance(node, list):
        for item in node:
            yield from _properties(item, where)


def test_every_property_has_a_description(schema: dict[str, Any]) -> None:
    found = list(_properties(schema))
    assert len(found) >= 76
    missing = sorted({where for where, prop in found if not prop.get("description")})
    assert not missing, f"properties without a description (Field(description=...)): {missing}"


def _examples(schema: dict[str, Any], kind: str) -> list[Any]:
    # The examples of the step model, else those of its key's model (`measure: {...}`) as whole steps.
    branch = next(b for b in schema["properties"]["steps"]["items"]["allOf"] if b["if"].get("required") == [kind])
    model = schema["$defs"][branch["then"]["$ref"].rsplit("/", 1)[1]]
    if model.get("examples"):
        return list(model["examples"])
    key = model["properties"][kind]
    inner = schema["$defs"][key["$ref"].rsplit("/", 1)[1]] if "$ref" in key else key
    return [{kind: e} for e in key.get("examples", []) + inner.get("examples", [])]


def test_every_step_kind_has_examples_that_both_accept(
    schema: dict[str, Any], validator: jsonschema.protocols.Validator
) -> None:
    head = {"id": "X", "title": "t", "version": "1", "basis": {"standard": "s", "clause": "1"}, "requires": []}
    for kind in stepkinds.names():
        examples = _examples(schema, kind)
        assert examples, f"step kind {kind} has no example (json_schema_extra={{'examples': [...]}})"
        for example in examples:
            sequence = {**head, "steps": [example]}
            assert [e.message for e in validator.iter_errors(sequence)] == [], (kind, example)
            Sequence.model_validate(sequence)


def _doc_step_examples() -> list[tuple[int, list[Any]]]:
    """The YAML examples of docs/sequences.md that are lists of steps, with their line."""
    text = (ROOT / "docs" / "sequences.md").read_text(encoding="utf-8")
    found = []
    for block in re.finditer(r"^```yaml\n(.*?)^```", text, re.S | re.M):
        data = YAML(typ="safe").load(block.group(1))
        if isinstance(data, list):
            found.append((text.count("\n", 0, block.start()) + 2, data))
    return found


def test_the_step_examples_of_the_doc_are_accepted_by_both(validator: jsonschema.protocols.Validator) -> None:
    head = {"id": "X", "title": "t", "version": "1", "basis": {"standard": "s", "clause": "1"}, "requires": []}
    examples = _doc_step_examples()
    assert len(examples) >= len(stepkinds.names())
    wrong = []
    for line, steps in examples:
        sequence = {**head, "steps": steps}
        errors = [f"{_where(e)}: {e.message}" for e in validator.iter_errors(sequence)]
        try:
            Sequence.model_validate(sequence)
        except PydanticError as exc:
            errors.append(f"loader: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}")
        wrong += [f"docs/sequences.md:{line}: {e}" for e in errors]
    assert not wrong, "\n".join(wrong)
