"""Every test that docs/safety.md names as the proof of an exit path exists, so the table cannot
point at a test that was renamed or removed."""

from __future__ import annotations

import re

from tests.conftest import ROOT

SAFETY_DOC = ROOT / "docs" / "safety.md"


def test_every_test_named_in_the_exit_path_table_exists() -> None:
    named = set(re.findall(r"`(?:tests/)?(test_\w+\.py)(?:::(\w+))?", SAFETY_DOC.read_text(encoding="utf-8")))
    assert len(named) > 20
    missing = []
    for file, test in sorted(named):
        path = ROOT / "tests" / file
        if not path.is_file():
            missing.append(file)
        elif test and f"def {test}(" not in path.read_text(encoding="utf-8"):
            missing.append(f"{file}::{test}")
    assert not missing, missing
