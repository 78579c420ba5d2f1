"""Each step kind of the sequence language is one module, bench/stepkinds/<kind>.py, with a section
in docs/sequences.md and a paragraph in docs/lifecycle.md (stage 4)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from bench import stepkinds
from bench.sequence import Sequence

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
    # The schema selects a step's model by its key (bench/schema.py); the last branch refuses a step with none.
    branches = Sequence.model_json_schema(by_alias=True)["properties"]["steps"]["items"]["allOf"][:-1]
    selected = [(b["if"]["required"][0], b["then"]["$ref"].rsplit("/", 1)[1]) for b in branches]
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
