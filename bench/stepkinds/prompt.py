"""``prompt``: ask the operator to confirm, to enter a value that is judged like a measurement, or
to enter a text (a serial number, a remark) that is recorded as it is written and never judged.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import ConfigDict, Field, field_validator

from bench.compiler import Compiler
from bench.errors import BenchError, ExpressionError
from bench.events import EventKind
from bench.expr import Compiled, constant, expect_dim
from bench.prompts import NO, YES, AnswerCheck, Answers, PromptRequest
from bench.result import OperatorEntry, Outcome, rounded
from bench.stepkinds.base import (
    KindPlan,
    PlanStep,
    Scalar,
    StepFailed,
    StepKind,
    StepModel,
    StepSite,
    StrictModel,
    as_text,
)
from bench.stepkinds.measure import MeasurePlan, record_measurement
from bench.units import DIMENSIONLESS, Quantity, Unit, format_duration, parse_quantity, parse_unit

if TYPE_CHECKING:
    from bench.plan import Plan
    from bench.runcontext import RunContext


class PromptSpec(StrictModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"text": "Confirm the enclosure is closed", "when": "bms.contactors == OPEN", "timeout": "10 s"},
                {"text": "Ambient temperature at the bench", "answer": "value", "unit": "degC", "min": "15 degC"},
                {
                    "text": "DUT serial number",
                    "answer": "text",
                    "pattern": "^[0-9]{10}$",
                    "record": "identification",
                },
                {"text": "Remarks on the item as received", "answer": "text", "record": "remark"},
            ]
        },
    )

    text: str = Field(description="what the operator is asked")
    answer: Literal["confirm", "value", "text"] = Field(
        "confirm",
        description="what is asked for: 'confirm' (yes: PASS, no: FAIL), 'value' (a number with a unit, judged "
        "like a measurement) or 'text' (recorded verbatim as identification or remark, never judged)",
    )
    when: str | None = Field(None, description="ask only once this condition holds (waits for it, up to 'timeout')")
    timeout: str = Field("30 min", description="how long to wait for the 'when' condition and for the answer")
    unit: str | None = Field(None, description="answer: value: the unit of the value (a bare number is in it)")
    min: Scalar | None = Field(None, description="answer: value: the lowest value that passes (with its unit)")
    max: Scalar | None = Field(None, description="answer: value: the highest value that passes (with its unit)")
    pattern: str | None = Field(
        None,
        description="answer: text: a regular expression the whole answer must match (Python 're'); "
        "without it any non-empty text is taken",
    )
    record: Literal["identification", "remark"] | None = Field(
        None,
        description="answer: text (required): where the report states the answer: 'identification' (of the "
        "item tested) or 'remark'",
    )
    picture: str | None = Field(
        None,
        description="a picture shown with the question where a screen asks it (the browser station): a PNG, "
        "JPEG or SVG file in the sequence's folder, relative to the sequence file",
    )

    _text = field_validator("min", "max", "timeout", mode="before")(as_text)


class PromptStep(StepModel):
    prompt: PromptSpec = Field(
        description="ask the operator: a confirmation, a value judged like a measurement, or a text recorded verbatim"
    )


@dataclass
class PromptPlan(KindPlan):
    text: str
    gate: Compiled | None
    gate_text: str
    answer: str  # 'confirm', 'value' or 'text'
    unit: Unit
    low: float | None
    high: float | None
    timeout: float
    pattern: re.Pattern[str] | None = None
    record: str | None = None
    picture: Path | None = None
    picture_sha256: str | None = None  # recorded with the answer: which picture the operator saw

    def signals(self) -> set[str]:
        return set(self.gate.signals) if self.gate else set()

    def refusal(self, answer: str) -> str | None:
        """Why this prompt cannot take ``answer``, or None when it can (checked before a run, and at the bench)."""
        if self.answer == "confirm":
            return None if answer.lower() in YES | NO else f"'{answer}' is neither yes nor no"
        if self.answer == "value":
            try:
                self.quantity(answer)
            except ExpressionError as exc:
                return f"'{answer}': {exc}"
            return None
        if self.pattern is not None:
            if self.pattern.fullmatch(answer) is None:
                return f"'{answer}' does not match the pattern {self.pattern.pattern}"
            return None
        return "an empty answer (write the text, or 'none')" if not answer else None

    def quantity(self, answer: str) -> Quantity:
        """A value answer in the prompt's unit: a bare number is in that unit."""
        q = parse_quantity(answer)
        if q.dim != self.unit.dim and q.dim == DIMENSIONLESS and q.unit.text == "":
            q = Quantity(self.unit.to_base(q.base), self.unit.dim, self.unit)
        if q.dim != self.unit.dim:
            raise ExpressionError(f"not in {self.unit.text or 'plain numbers'}")
        return q


PICTURE_TYPES = (".png", ".jpg", ".jpeg", ".svg")
MAX_PICTURE_BYTES = 5 * 1024 * 1024  # a photo of a connector, not an archive


def _picture(c: Compiler, text: str, loc: list[str | int]) -> tuple[Path, str]:
    """The picture file, inside the sequence's folder, and its SHA-256; else one line naming the field."""
    folder = c.src.path.resolve().parent
    path = (folder / text).resolve()
    if not path.is_relative_to(folder):
        raise c.fail(loc, f"'{text}' is outside the sequence's folder {folder}")
    if path.suffix.lower() not in PICTURE_TYPES:
        raise c.fail(loc, f"'{text}' is not a picture ({', '.join(PICTURE_TYPES)})")
    try:
        data = path.read_bytes() if path.stat().st_size <= MAX_PICTURE_BYTES else None
    except OSError as exc:
        raise c.fail(loc, f"'{text}' cannot be read: {exc.strerror or exc}") from None
    if data is None:
        raise c.fail(loc, f"'{text}' is larger than {MAX_PICTURE_BYTES // (1024 * 1024)} MiB")
    return path, hashlib.sha256(data).hexdigest()


# The fields that belong to one kind of answer only.
_FIELD_NEEDS = {"unit": "value", "min": "value", "max": "value", "pattern": "text", "record": "text"}


def compile_prompt(c: Compiler, step: PromptStep, site: StepSite) -> PromptPlan:
    loc = site.at("prompt")
    p = step.prompt
    gate = c.condition(p.when, [*loc, "when"], site.marks) if p.when else None
    for name, needs in _FIELD_NEEDS.items():
        if getattr(p, name) is not None and p.answer != needs:
            raise c.fail([*loc, name], f"'{name}' needs 'answer: {needs}' (this prompt has 'answer: {p.answer}')")
    if p.answer == "text" and p.record is None:
        raise c.fail(
            [*loc, "record"],
            "a text answer needs 'record: identification' or 'record: remark' (where the report states it)",
        )
    pattern = None
    if p.pattern is not None:
        try:
            pattern = re.compile(p.pattern)
        except re.error as exc:
            raise c.fail([*loc, "pattern"], f"not a valid regular expression: {exc}") from None
    unit = Unit("", DIMENSIONLESS, 1.0)
    if p.unit is not None:
        try:
            unit = parse_unit(p.unit)
        except ExpressionError as exc:
            raise c.fail([*loc, "unit"], exc) from None
    limits: list[float | None] = []
    for bound in ("min", "max"):
        text = getattr(p, bound)
        if text is None:
            limits.append(None)
            continue
        try:
            q = constant(str(text), c.scope())
            expect_dim(q, unit.dim, f"the '{bound}' of the answer")
        except ExpressionError as exc:
            raise c.fail([*loc, bound], exc) from None
        limits.append(unit.from_base(q.base))
    timeout = c.duration(p.timeout, [*loc, "timeout"])
    picture, picture_sha256 = _picture(c, p.picture, [*loc, "picture"]) if p.picture else (None, None)
    return PromptPlan(
        p.text,
        gate,
        p.when or "",
        p.answer,
        unit,
        limits[0],
        limits[1],
        timeout,
        pattern,
        p.record,
        picture,
        picture_sha256,
    )


def answer_checks(plan: Plan) -> dict[str, AnswerCheck]:
    """What each prompt step of ``plan`` takes as an answer, keyed by step name (for an answers file)."""
    return {ps.name: ps.plan.refusal for ps in [*plan.steps, *plan.cleanup] if isinstance(ps.plan, PromptPlan)}


def describe(ps: PlanStep[PromptPlan]) -> str:
    gate = f" (once {ps.plan.gate_text})" if ps.plan.gate else ""
    return f"ask the operator: {ps.plan.text}{gate}"


async def run_prompt(ctx: RunContext, step: PlanStep[PromptPlan]) -> str | None:
    p = step.plan
    if p.gate is not None:
        try:
            await ctx.wait_for(p.gate, p.timeout)
        except TimeoutError:
            shown = ctx.shown(ctx.values(p.gate.signals))
            raise StepFailed(
                Outcome.FAIL,
                f"'{p.gate_text}' did not hold within {format_duration(p.timeout)}; not asked ({shown})",
            ) from None
    answers = ctx.opt.answers or Answers()
    request = PromptRequest(
        step.name,
        p.text,
        p.answer,
        p.unit.text,
        p.low,
        p.high,
        p.pattern.pattern if p.pattern is not None else None,
        p.picture,
    )
    try:
        async with asyncio.timeout(p.timeout):
            answer, source = await answers.ask(request, p.refusal)
    except TimeoutError:
        # Nobody answered: the test was not performed as specified, which says nothing of the item.
        raise StepFailed(Outcome.ERROR, f"no answer within {format_duration(p.timeout)}") from None
    except BenchError as exc:
        raise StepFailed(Outcome.ERROR, str(exc)) from None
    recorded: dict[str, str] = {"record": p.record} if p.record else {}
    if p.picture is not None and p.picture_sha256 is not None:
        recorded |= {"picture": p.picture.name, "picture_sha256": p.picture_sha256}
    ctx.event(EventKind.PROMPT_ANSWERED, step=step.name, prompt=p.text, answer=answer, source=source, **recorded)
    problem = p.refusal(answer)
    if problem is not None:  # an answers file that was not checked against the sequence
        raise StepFailed(Outcome.ERROR, f"answer {problem} ({source})")
    if p.answer == "confirm":
        if answer.lower() in YES:
            return f"confirmed ({source})"
        raise StepFailed(Outcome.FAIL, f"operator did not confirm: '{p.text}' ({source})")
    if p.answer == "text":
        assert p.record is not None  # compile_prompt requires it
        entry = OperatorEntry(
            step=step.name, prompt=p.text, answer=answer, record=p.record, source=source, t=rounded(ctx.rel(ctx.now()))
        )
        ctx.operator_entries.append(entry)
        return None  # a text is recorded, not judged: no verdict next to it
    m = MeasurePlan(
        step.name,
        None,
        None,
        f"answer of the operator ({source})",
        "value",
        None,
        None,
        p.low,
        p.high,
        p.unit,
        p.unit.factor,
    )
    value = p.unit.from_base(p.quantity(answer).base)
    return record_measurement(ctx, step, m, value, f"entered by the operator ({source})")


KIND = StepKind("prompt", PromptStep, compile_prompt, describe, run_prompt)
