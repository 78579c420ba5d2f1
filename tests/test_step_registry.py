"""Each step kind of the sequence language has one executor (bench/steps.py) and a paragraph in
docs/lifecycle.md (stage 4), and no executor is registered for a kind the language lacks."""

from __future__ import annotations

import re
from pathlib import Path

from bench.sequence import STEP_KINDS
from bench.steps import EXECUTORS

LIFECYCLE = Path(__file__).resolve().parent.parent / "docs" / "lifecycle.md"


def test_every_step_kind_has_one_executor() -> None:
    assert set(EXECUTORS) == set(STEP_KINDS)


def test_every_step_kind_is_described_in_the_lifecycle() -> None:
    text = LIFECYCLE.read_text(encoding="utf-8")
    stage = re.search(r"^## 4\. Steps and monitors\n(.*?)(?=^## )", text, re.S | re.M)
    assert stage, "docs/lifecycle.md has no '## 4. Steps and monitors'"
    described = set(re.findall(r"^\s*\* `([a-z_]+)` ", stage.group(1), re.M))
    assert set(STEP_KINDS) <= described, f"step kinds not described in stage 4: {sorted(set(STEP_KINDS) - described)}"
