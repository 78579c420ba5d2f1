"""A prompt answered by a person through an asker (the browser station's way), in virtual time.

The run goes through the one run path (``run_plan``) on stations/sim.yaml in virtual time. The
asker gets what the prompt asks and what its answer must be; an answer the prompt cannot take
comes back to it with the reason. While the person is asked, the virtual clock follows the wall
clock: a prompt answered after about half a second of real time is answered about half a second
of simulated time later, where an unpaced virtual clock would have run ahead by as much as the
prompt's timeout.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bench.errors import LoadError
from bench.plan import build_plan
from bench.prompts import PromptRequest
from bench.runner import run_plan
from tests.conftest import ROOT

SEQUENCE = """id: TEST-ASKER
title: prompts asked through an asker
version: 1.0.0
basis: {standard: test, clause: asker}
requires: [psu, bms]
steps:
  - name: ambient temperature
    prompt:
      text: Ambient temperature at the bench
      answer: value
      unit: degC
      min: 15 degC
      max: 30 degC
      timeout: 10 min
      PICTURE
  - name: confirm enclosure closed
    prompt:
      text: Confirm the enclosure is closed
      timeout: 10 min
cleanup:
  - set: {psu.output: OFF}
"""

# A 1x1 PNG: the smallest picture a prompt can show.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


def sequence(tmp_path: Path, picture: str | None = None) -> Path:
    path = tmp_path / "asker.yaml"
    path.write_text(SEQUENCE.replace("PICTURE", f"picture: {picture}" if picture else ""))
    return path


def events(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]


def test_an_answer_is_asked_again_with_the_reason_and_recorded_with_its_source(tmp_path: Path) -> None:
    (tmp_path / "connector.png").write_bytes(PNG)
    asked: list[PromptRequest] = []
    replies = iter(["21 A", "23.4", "yes"])

    async def asker(request: PromptRequest) -> tuple[str, str]:
        asked.append(request)
        return next(replies), "operator alice at the browser station"

    plan = build_plan(sequence(tmp_path, "connector.png"), ROOT / "stations" / "sim.yaml")
    result = run_plan(plan, tmp_path / "reports", asker=asker)

    assert result.verdict.value == "PASS", result.reason
    first, again, confirm = asked
    assert (first.step, first.answer, first.unit, first.low, first.high) == (
        "ambient temperature",
        "value",
        "degC",
        15.0,
        30.0,
    )
    assert first.picture == (tmp_path / "connector.png").resolve() and first.problem is None
    assert again.problem is not None and "degC" in again.problem, again.problem
    assert confirm.answer == "confirm" and confirm.picture is None
    run = tmp_path / "reports" / result.run_id
    answered = [e for e in events(run) if e["kind"] == "prompt_answered"]
    assert [e["answer"] for e in answered] == ["23.4", "yes"]
    assert {e["source"] for e in answered} == {"operator alice at the browser station"}
    assert answered[0]["picture"] == "connector.png" and len(answered[0]["picture_sha256"]) == 64
    measured = [m for m in result.measurements if m.name == "ambient temperature"]
    assert measured and measured[0].value == pytest.approx(23.4)


def test_the_virtual_clock_follows_the_wall_clock_while_a_person_is_asked(tmp_path: Path) -> None:
    answer_after_s = 0.6

    async def asker(request: PromptRequest) -> tuple[str, str]:
        # The answer comes from another thread, as a browser's does: nothing on this loop is ready
        # until then, which is when an unpaced virtual clock jumps ahead.
        given = threading.Event()
        threading.Timer(answer_after_s, given.set).start()
        await asyncio.get_running_loop().run_in_executor(None, given.wait)
        return ("23" if request.answer == "value" else "yes"), "operator"

    plan = build_plan(sequence(tmp_path), ROOT / "stations" / "sim.yaml")
    wall0 = time.monotonic()
    result = run_plan(plan, tmp_path / "reports", asker=asker)
    wall = time.monotonic() - wall0

    assert result.verdict.value == "PASS", result.reason
    evs = events(tmp_path / "reports" / result.run_id)
    started = {e["step"]: e["t"] for e in evs if e["kind"] == "step_started"}
    answered = {e["step"]: e["t"] for e in evs if e["kind"] == "prompt_answered"}
    for step in ("ambient temperature", "confirm enclosure closed"):
        simulated = answered[step] - started[step]
        assert answer_after_s * 0.9 <= simulated <= answer_after_s + 1.0, (step, simulated)
    assert wall >= 2 * answer_after_s


@pytest.mark.parametrize(
    ("picture", "made", "problem"),
    [
        ("../outside.png", "../outside.png", "outside the sequence's folder"),
        ("notes.txt", "notes.txt", "is not a picture"),
        ("missing.png", None, "cannot be read"),
    ],
)
def test_a_picture_outside_the_folder_not_a_picture_or_missing_is_one_line_at_load(
    tmp_path: Path, picture: str, made: str | None, problem: str
) -> None:
    folder = tmp_path / "seq"
    folder.mkdir()
    if made is not None:
        (folder / made).write_bytes(PNG)
    with pytest.raises(LoadError) as err:
        build_plan(sequence(folder, picture), ROOT / "stations" / "sim.yaml")
    message = str(err.value)
    assert problem in message and "picture" in message and "\n" not in message, message
