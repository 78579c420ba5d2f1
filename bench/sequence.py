"""The sequence file format, validated by pydantic.

Values that carry units, conditions and signal names stay strings here; they are parsed and
type-checked against the station's signals by :mod:`bench.plan`. ``bench schema`` exports the
JSON Schema of these models for editors.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

Scalar = str | int | float
# The confidence tags of the research notes: confirmed in a primary text, in a harmonised sibling
# document, in a secondary source only (a wiki, slides, a summary), or recalled.
CONFIDENCE_TAG = re.compile(r"\[(?:C|C-analog|S|R)\]")


def _as_text(v: Any) -> Any:
    # YAML reads `12` or `4.2` as numbers; the quantity parser wants text.
    if isinstance(v, bool):
        raise ValueError("expected a quantity or an expression, not true/false")
    return str(v) if isinstance(v, int | float) else v


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# What the basis document prescribes, against what the bench does (docs/sequences.md, "Origins of
# limits and deviations"): a physical test performed at HIL level always departs from its method.
Method = Literal["physical", "hil", "lab"]


class Basis(_Model):
    standard: str = Field(description="e.g. 'UN R100 Rev.3'")
    clause: str = Field(description="clause / annex, e.g. '6.7, Annex 9G'")
    source: str | None = Field(
        None, description="where the numbers come from, with confidence tags [C], [C-analog], [S] or [R]"
    )
    method: Method | None = Field(
        None,
        description=(
            "'physical': the document prescribes a test of the physical item, performed here at HIL level "
            "(the sequence declares its deviations); 'hil': the document's method is itself a HIL or "
            "fault-injection test; 'lab': the laboratory's own method"
        ),
    )


# Who set a limit (ISO/IEC 17025 7.8.6.2 b): the report states conformity to that specification only.
Origin = Literal["regulation", "item", "lab"]


class Parameter(_Model):
    default: str = Field(description="value with unit, e.g. '50 A'")
    doc: str = ""
    source: str | None = Field(
        None,
        description="the document and clause the default comes from, with its confidence tag, e.g. "
        "'GB 38031-2025 8.2.14.4 [S]'",
    )
    origin: Origin | None = Field(
        None,
        description="who set this value: 'regulation' (source names document, clause and tag), 'item' "
        "(the item's or manufacturer's specification) or 'lab' (the laboratory's method)",
    )
    min: str | None = None
    max: str | None = None

    _text = field_validator("default", "min", "max", mode="before")(_as_text)

    @model_validator(mode="after")
    def _regulation_is_cited(self) -> Parameter:
        # A statement "conforms to <regulation clause>" needs the clause and how sure we are of it.
        if self.origin == "regulation" and not (self.source and CONFIDENCE_TAG.search(self.source)):
            raise ValueError(
                "a regulation limit needs a source: naming the document, the clause and a confidence tag "
                "[C], [C-analog], [S] or [R]"
            )
        return self


class Monitor(_Model):
    name: str | None = None
    when: str = Field(description="condition that must never become true while the steps run")
    then: Literal["abort", "fail"] = "abort"
    message: str | None = None


class _Step(_Model):
    name: str | None = Field(None, description="unique within the sequence; defaults to 'NN kind'")
    doc: str | None = None


class SetStep(_Step):
    set: dict[str, Scalar] = Field(description="signal -> value, e.g. {psu.output: ON, psu.voltage_set: 850 V}")
    as_: str | None = Field(None, alias="as", description="record the instant the values were applied as @name")

    @field_validator("set", mode="before")
    @classmethod
    def _values(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: _as_text(x) for k, x in v.items()}
        return v


class WaitStep(_Step):
    wait: str = Field(description="duration, e.g. '2 s' or '$soak'")

    _text = field_validator("wait", mode="before")(_as_text)


class WaitUntilStep(_Step):
    wait_until: str = Field(description="condition to wait for")
    timeout: str = Field(description="maximum time to wait")
    as_: str | None = Field(None, alias="as", description="record the instant the condition became true as @name")
    on_timeout: Literal["fail", "continue"] = "fail"

    _text = field_validator("timeout", mode="before")(_as_text)


class RampSpec(_Model):
    signals: list[str] = Field(min_length=1, description="signals that follow the ramp together")
    from_: Scalar | None = Field(
        None, alias="from", description="start value, e.g. '0 %vol' [default: the first signal's present value]"
    )
    to: Scalar = Field(description="end value")
    rate: Scalar = Field(description="change per unit of time, e.g. '0.1 %vol/s' or '2 degC/min'")
    interval: Scalar = Field("100 ms", description="time between two setpoints")

    _text = field_validator("from_", "to", "rate", "interval", mode="before")(_as_text)


class RampStep(_Step):
    ramp: RampSpec
    until: str | None = Field(None, description="stop the ramp as soon as this condition holds")
    as_: str | None = Field(None, alias="as", description="record the instant 'until' became true as @name")
    on_end: Literal["fail", "continue"] = Field(
        "fail", description="with 'until': what the end of the ramp without the condition means"
    )


class MeasureSpec(_Model):
    name: str
    signal: str | None = Field(None, description="signal to measure")
    expr: str | None = Field(None, description="or an expression, e.g. '@t_open - @t_trip'")
    stat: Literal["value", "min", "max", "mean", "max_moving_mean"] = "value"
    over: str | None = Field(None, description="length of the moving window of 'max_moving_mean', e.g. '3 s'")
    window: str | None = Field(None, description="collect for this long from now, then apply stat")
    since: str | None = Field(None, description="apply stat over the samples since this instant (@mark or step name)")
    min: Scalar | None = None
    max: Scalar | None = None
    unit: str | None = Field(None, description="unit to report the value in")
    uncertainty: Scalar | None = Field(None, description="expanded uncertainty U (k = 2) if known; else computed")

    _text = field_validator("window", "over", "min", "max", "uncertainty", mode="before")(_as_text)


class MeasureStep(_Step):
    measure: MeasureSpec


class CheckStep(_Step):
    check: str = Field(description="condition that must hold now")
    message: str | None = None


class PromptSpec(_Model):
    text: str = Field(description="what the operator is asked")
    when: str | None = Field(None, description="ask only once this condition holds (waits for it)")
    value: bool = Field(False, description="ask for a value instead of a confirmation")
    unit: str | None = Field(None, description="unit of the value")
    min: Scalar | None = None
    max: Scalar | None = None
    timeout: str = Field("30 min", description="how long to wait for the gate condition and the answer")

    _text = field_validator("min", "max", "timeout", mode="before")(_as_text)


class PromptStep(_Step):
    prompt: PromptSpec


class CheckDtcsSpec(_Model):
    device: str = Field(description="a device of 'requires' whose station entry has 'uds:'")
    stored: list[Scalar] = Field(description="DTCs that must be stored, e.g. [P0AA1-00]; [] = none may be stored")
    status: list[str] = Field(["confirmedDTC"], description="ISO 14229-1 status bits each expected DTC must have")
    allow: list[Scalar] = Field([], description="other DTCs that may be stored too")
    within: str | None = Field(None, description="re-read until it holds, at most this long")

    _text = field_validator("within", mode="before")(_as_text)


class CheckDtcsStep(_Step):
    check_dtcs: CheckDtcsSpec


class ClearDtcsStep(_Step):
    clear_dtcs: str | list[str] = Field(description="device (or devices) whose DTC memory is cleared")


def _step_kind(v: Any) -> str | None:
    keys = v.keys() if isinstance(v, dict) else vars(v).keys() if hasattr(v, "__dict__") else []
    for kind in STEP_KINDS:
        if kind in keys:
            return kind
    return None


Step = Annotated[
    Annotated[SetStep, Tag("set")]
    | Annotated[WaitStep, Tag("wait")]
    | Annotated[WaitUntilStep, Tag("wait_until")]
    | Annotated[MeasureStep, Tag("measure")]
    | Annotated[CheckStep, Tag("check")]
    | Annotated[PromptStep, Tag("prompt")]
    | Annotated[RampStep, Tag("ramp")]
    | Annotated[CheckDtcsStep, Tag("check_dtcs")]
    | Annotated[ClearDtcsStep, Tag("clear_dtcs")],
    Discriminator(
        _step_kind,
        custom_error_type="unknown_step",
        custom_error_message=(
            "a step needs exactly one of: set, wait, wait_until, measure, check, prompt, ramp, check_dtcs, clear_dtcs"
        ),
    ),
]
STEP_KINDS = ("set", "wait", "wait_until", "measure", "check", "prompt", "ramp", "check_dtcs", "clear_dtcs")
# Ids of sequences and stations name files and folders (run records, interlock latches, station
# locks): no path separators, and no leading dot, so an id can never reach outside its folder.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class Sequence(_Model):
    id: str = Field(pattern=ID_PATTERN)
    title: str
    version: str
    basis: Basis
    requires: list[str] = Field(description="device names the station must provide")
    parameters: dict[str, Parameter] = {}
    display: list[str] = Field([], description="key signals shown while the sequence runs")
    monitors: list[Monitor] = []
    steps: list[Step] = Field(min_length=1)
    cleanup: list[Step] = []
    record_interval: str = Field("60 s", description="how often the display signals are written to the record")
    decision_rule: Literal["simple", "guard_band"] | None = Field(None, description="overrides the station's rule")
    deviations: list[str] = Field(
        [],
        description="standing deviations of this sequence from the method of its basis (HIL instead of the "
        "physical test, ...); every report lists them (ISO/IEC 17025 7.8.2.1 n)",
    )

    @model_validator(mode="after")
    def _physical_method_deviates(self) -> Sequence:
        if self.basis.method == "physical" and not self.deviations:
            raise ValueError(
                "basis.method 'physical' is performed at HIL level, which departs from the method: "
                "declare the departures under 'deviations:'"
            )
        return self

    @field_validator("parameters", mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        # `name: 50 A` is short for `name: {default: 50 A}`.
        if isinstance(v, dict):
            return {k: ({"default": _as_text(x)} if not isinstance(x, dict) else x) for k, x in v.items()}
        return v


def step_kind(step: Any) -> str:
    for kind in STEP_KINDS:
        if isinstance(step, _KIND_CLASSES[kind]):
            return kind
    raise TypeError(step)


_KIND_CLASSES: dict[str, type[_Step]] = {
    "set": SetStep,
    "wait": WaitStep,
    "wait_until": WaitUntilStep,
    "measure": MeasureStep,
    "check": CheckStep,
    "prompt": PromptStep,
    "ramp": RampStep,
    "check_dtcs": CheckDtcsStep,
    "clear_dtcs": ClearDtcsStep,
}
