"""Each step kind of the sequence language is one module, bench/stepkinds/<kind>.py, with a section
in docs/sequences.md and a paragraph in docs/lifecycle.md (stage 4)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from pydantic import BaseModel

from bench import schemadoc, stepkinds
from bench.sequence import Sequence
from bench.stepkinds.base import StepModel

ROOT = Path(__file__).resolve().parent.parent
LIFECYCLE = ROOT / "docs" / "lifecycle.md"
SEQUENCES = ROOT / "docs" / "sequences.md"


def test_every_step_kind_is_one_module_of_the_package() -> None:
    modules = {p.stem for p in (ROOT / "bench" / "stepkinds").glob("*.py")} - {"__init__", "base"}
    assert set(stepkinds.names()) == modules
    assert set(stepkinds.BUILT_IN) <= modules
    for name in stepkinds.names():
        assert importlib.import_module(f"bench.stepkinds.{name}").KIND is stepkinds.get(name)


def test_the_sequence_language_has_exactly_the_registered_kinds() -> None:
    assert stepkinds.names()[: len(stepkinds.BUILT_IN)] == stepkinds.BUILT_IN
    # The schema selects a step's model by its key (bench/schema.py); the other branches refuse a step with none.
    branches = Sequence.model_json_schema(by_alias=True)["properties"]["steps"]["items"]["allOf"]
    selected = [(b["if"]["required"][0], b["then"]["$ref"].rsplit("/", 1)[1]) for b in branches if "$ref" in b["then"]]
    assert selected == [(k.name, k.model.__name__) for k in stepkinds.all_kinds()]


def test_every_step_kind_is_described_in_the_lifecycle() -> None:
    text = LIFECYCLE.read_text(encoding="utf-8")
    stage = re.search(r"^## 4\. Steps and monitors\n(.*?)(?=^## )", text, re.S | re.M)
    assert stage, "docs/lifecycle.md has no '## 4. Steps and monitors'"
    described = set(re.findall(r"^\s*\* `([a-z_]+)` ", stage.group(1), re.M))
    missing = sorted(set(stepkinds.names()) - described)
    assert not missing, f"step kinds not described in stage 4: {missing}"


def test_every_step_kind_has_its_section_in_the_sequence_language() -> None:
    text = SEQUENCES.read_text(encoding="utf-8")
    steps = re.search(r"^## Steps\n(.*?)(?=^## )", text, re.S | re.M)
    assert steps, "docs/sequences.md has no '## Steps'"
    headed = {word for heading in re.findall(r"^### (.+)$", steps.group(1), re.M) for word in heading.split()}
    missing = sorted(set(stepkinds.names()) - headed)
    assert not missing, f"step kinds without a '### kind' section under '## Steps': {missing}"


def _section(text: str, kind: str) -> str:
    steps = re.search(r"^## Steps\n(.*?)(?=^## )", text, re.S | re.M)
    assert steps
    for heading, body in re.findall(r"^### ([^\n]+)\n(.*?)(?=^### |\Z)", steps.group(1), re.S | re.M):
        if kind in heading.split():
            return str(body)
    raise AssertionError(f"no section for {kind}")


def test_every_step_kind_has_an_example_in_its_section() -> None:
    text = SEQUENCES.read_text(encoding="utf-8")
    for kind in stepkinds.names():
        examples = re.findall(r"^```yaml\n(.*?)^```", _section(text, kind), re.S | re.M)
        used = [e for e in examples if re.search(rf"(^|[\s{{-]){kind}:", e, re.M)]
        assert used, f"the section of {kind} in docs/sequences.md has no ```yaml example with '{kind}:'"


def test_the_field_tables_of_the_sequence_language_are_the_models() -> None:
    # The tables are written from the models' descriptions; a field added without its row fails here.
    documented = schemadoc.documented(SEQUENCES.read_text(encoding="utf-8"))
    wanted = schemadoc.tables()
    missing = sorted(set(wanted) - set(documented))
    assert not missing, f"docs/sequences.md lacks '<!-- fields: X -->' tables for {missing}"
    stale = sorted(what for what in wanted if documented[what] != wanted[what])
    assert not stale, f"field tables {stale} of docs/sequences.md differ from the models: run python -m bench.schemadoc"


def _fields(model: type[BaseModel], prefix: str = "") -> set[str]:
    names = set()
    for name, info in model.model_fields.items():
        key = f"{prefix}{info.alias or name}"
        names.add(key)
        inner = info.annotation
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            names |= _fields(inner, f"{key}.")
    return names


def test_every_field_of_every_step_kind_has_its_row() -> None:
    text = SEQUENCES.read_text(encoding="utf-8")
    tables = schemadoc.documented(text)
    rows = {what: set(re.findall(r"^\| `([^`]+)` \|", table, re.M)) for what, table in tables.items()}
    common = set(StepModel.model_fields)
    assert rows.get("step") == common
    for kind in stepkinds.all_kinds():
        missing = sorted(_fields(kind.model) - common - rows.get(kind.name, set()))
        assert not missing, f"fields of {kind.name} without a row in docs/sequences.md: {missing}"


def test_a_field_table_says_what_a_field_takes() -> None:
    tables = schemadoc.tables()
    assert "| `wait` | text or number | required | duration, e.g." in tables["wait"]
    assert "| `then` | `abort` or `fail` | `abort` |" in tables["monitor"].replace("monitors[].", "")
    assert '| `check_dtcs.status` | list of text | `["confirmedDTC"]` |' in tables["check_dtcs"]
    assert "| `clear_dtcs` | text or list of text | required |" in tables["clear_dtcs"]
    assert "| `steps` | list of step | required |" in tables["sequence"]
