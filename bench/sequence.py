"""The sequence file format, validated by pydantic.

Values that carry units, conditions and signal names stay strings here; they are parsed and
type-checked against the station's signals by :mod:`bench.plan`. ``bench schema`` exports the
JSON Schema of these models for editors.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    GetCoreSchemaHandler,
    Tag,
    field_validator,
    model_validator,
)
from pydantic.json_schema import DEFAULT_REF_TEMPLATE, GenerateJsonSchema, JsonSchemaMode
from pydantic_core import CoreSchema

from bench import stepkinds
from bench.provenance import CONFIDENCE_TAG as CONFIDENCE_TAG
from bench.provenance import Origin, require_cited
from bench.schema import UNKNOWN_STEP, SequenceJsonSchema, cited
from bench.stepkinds.base import Scalar as Scalar
from bench.stepkinds.base import StepModel
from bench.stepkinds.base import as_text as _as_text


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# What the basis document prescribes, against what the bench does (docs/sequences.md, "Origins of
# limits and deviations"): a physical test performed at HIL level always departs from its method.
Method = Literal["physical", "hil", "lab"]


class Basis(_Model):
    """Where the test comes from: the document, its clause and how the bench performs its method."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "standard": "UN R100 Rev.3 (03 series), Part II",
                    "clause": "6.7, Annex 9G",
                    "source": "GB 38031-2025 8.2.14 [S]",
                    "method": "physical",
                }
            ]
        }
    )

    standard: str = Field(description="the document the test comes from, e.g. 'UN R100 Rev.3'")
    clause: str = Field(description="clause / annex, e.g. '6.7, Annex 9G'")
    source: str | None = Field(
        None, description="where the numbers come from, with confidence tags [C], [C-analog], [S] or [R]"
    )
    method: Method | None = Field(
        None,
        description=(
            "'physical': the document prescribes a test of the physical item, performed here at HIL level "
            "(the sequence declares its deviations); 'hil': the document's method is itself a HIL or "
            "fault-injection test (its simulated environment is declared as a deviation too); 'lab': the "
            "laboratory's own method"
        ),
    )


class Parameter(_Model):
    """A number of the sequence, with its unit; ``name: 50 A`` is short for ``name: {default: 50 A}``."""

    model_config = ConfigDict(
        json_schema_extra={
            **cited(),
            "examples": [
                {"default": "60 A", "min": "1 A", "doc": ">= C/3", "origin": "regulation", "source": "Annex 9G [S]"}
            ],
        }
    )

    default: str = Field(description="value with unit, e.g. '50 A'; `-p name=value` overrides it for one run")
    doc: str = Field("", description="what the value means and why it is what it is")
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
    min: str | None = Field(None, description="lowest value an override may take, in the same kind of unit")
    max: str | None = Field(None, description="highest value an override may take, in the same kind of unit")

    _text = field_validator("default", "min", "max", mode="before")(_as_text)

    @model_validator(mode="after")
    def _regulation_is_cited(self) -> Parameter:
        require_cited(self.origin, self.source)
        return self


class Monitor(_Model):
    """A condition watched on every new sample while the steps run; the first one true stops them."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "max operating temperature + 10 degC",
                    "when": "bms.cell_temp_max > $t_max_op + 10 degC",
                    "then": "abort",
                    "message": "end condition reached without the BMS interrupting the charge",
                }
            ]
        }
    )

    name: str | None = Field(None, description="the monitor's name in the console, the record and the report")
    when: str = Field(description="condition that must never become true while the steps run")
    then: Literal["abort", "fail"] = Field(
        "abort", description="the verdict when it trips: 'abort' (ABORTED) or 'fail' (FAIL); cleanup runs either way"
    )
    message: str | None = Field(None, description="recorded and reported when the monitor trips")


class _KindUnion:
    """The schema of a step: the union of the registered step kinds' models (bench/stepkinds/), told apart by their key."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        # Built when the model is, from the kinds registered then (a kind added later rebuilds it).
        members: list[Any] = [Annotated[k.model, Tag(k.name)] for k in stepkinds.all_kinds()]
        union: Any = members[0]
        for member in members[1:]:
            union = union | member
        one_of = ", ".join(stepkinds.names())
        return handler.generate_schema(
            Annotated[
                union,
                Discriminator(
                    _step_kind,
                    custom_error_type=UNKNOWN_STEP,
                    custom_error_message=f"a step needs exactly one of: {one_of}",
                ),
            ]
        )


Step = Annotated[StepModel, _KindUnion()]


def _step_kind(v: Any) -> str | None:
    if isinstance(v, StepModel):
        return stepkinds.of_model(v).name
    keys = v.keys() if isinstance(v, dict) else vars(v).keys() if hasattr(v, "__dict__") else []
    for kind in stepkinds.names():
        if kind in keys:
            return kind
    return None


# Ids of sequences and stations name files and folders (run records, interlock latches, station
# locks): no path separators, and no leading dot, so an id can never reach outside its folder.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class Sequence(_Model):
    """A test sequence (docs/sequences.md)."""

    model_config = ConfigDict(
        json_schema_extra={
            # A method performed at HIL level departs from its basis (_physical_method_deviates).
            "if": {
                "properties": {
                    "basis": {"properties": {"method": {"enum": ["physical", "hil"]}}, "required": ["method"]}
                },
                "required": ["basis"],
            },
            "then": {
                "required": ["deviations"],
                "properties": {
                    "deviations": {
                        "minItems": 1,
                        "description": "a method performed at HIL level departs from its basis",
                    }
                },
            },
        }
    )

    id: str = Field(
        pattern=ID_PATTERN,
        description="names the sequence's runs and records: letters, digits, _ . - (not first)",
        json_schema_extra={
            "patternErrorMessage": "an id is letters, digits, _ . and -, starting with a letter or digit"
        },
    )
    title: str = Field(description="what is tested, in words; shown by the console and the report")
    version: str = Field(description="version of this sequence file, recorded with every run")
    basis: Basis = Field(description="where the test comes from: standard, clause, source of the numbers, method")
    requires: list[str] = Field(description="device names the station must provide (and the only ones used)")
    parameters: dict[str, Parameter] = Field(
        {}, description="named values ($name) with units; `name: 50 A` is short for `name: {default: 50 A}`"
    )
    display: list[str] = Field([], description="key signals shown while the sequence runs")
    monitors: list[Monitor] = Field([], description="conditions watched while the steps run; the first true stops them")
    steps: list[Step] = Field(min_length=1, description="what the test does, in order; one key per step says its kind")
    cleanup: list[Step] = Field(
        [], description="steps that always run after the steps, whatever ended them (same kinds)"
    )
    record_interval: str = Field("60 s", description="how often the display signals are written to the record")
    decision_rule: Literal["simple", "guard_band"] | None = Field(None, description="overrides the station's rule")
    deviations: list[str] = Field(
        [],
        description="standing deviations of this sequence from the method of its basis (HIL instead of the "
        "physical test, ...); every report lists them (ISO/IEC 17025 7.8.2.1 n)",
    )

    @model_validator(mode="after")
    def _physical_method_deviates(self) -> Sequence:
        # Even a HIL method runs the item in a simulated environment, which its basis does not.
        if self.basis.method in ("physical", "hil") and not self.deviations:
            raise ValueError(
                f"basis.method '{self.basis.method}' is performed at HIL level, which departs from the method: "
                "declare the departures under 'deviations:'"
            )
        return self

    @field_validator("parameters", mode="before", json_schema_input_type=dict[str, Parameter | str | int | float])
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        # `name: 50 A` is short for `name: {default: 50 A}`.
        if isinstance(v, dict):
            return {k: ({"default": _as_text(x)} if not isinstance(x, dict) else x) for k, x in v.items()}
        return v

    @classmethod
    def model_json_schema(
        cls,
        by_alias: bool | None = None,
        ref_template: str = DEFAULT_REF_TEMPLATE,
        schema_generator: type[GenerateJsonSchema] = SequenceJsonSchema,
        mode: JsonSchemaMode = "validation",
        *,
        union_format: Literal["any_of", "primitive_type_array"] = "any_of",
    ) -> dict[str, Any]:
        """The schema of the language as the loader reads it (bench/schema.py), for editors."""
        return super().model_json_schema(by_alias, ref_template, schema_generator, mode, union_format=union_format)


def _rebuild() -> None:
    Sequence.model_rebuild(force=True)


stepkinds.on_change(_rebuild)
