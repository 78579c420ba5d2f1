"""The JSON Schema of the sequence format, as the loader reads it, for editors (``bench schema``).

pydantic's own schema describes the models' Python types; the loader accepts more and tells
steps apart differently, so an editor using that schema would mark good files as wrong and say
only "not valid under any of the given schemas" of a bad step. This generator follows the
loader instead:

* a field whose before-validator turns a number into text (:func:`bench.stepkinds.base.as_text`:
  ``wait: 2``, ``default: 17``) takes a number as well as text, as the loader does (and
  true/false where the validator takes those too);
* a ``true``/``false`` field takes the spellings pydantic accepts (``yes``, ``off``, ``1``);
* a step selects its kind's schema by its key (``if: {required: [measure]}, then: ...``), in the
  order of the language, so an error names the kind and the field; a step with none of the keys
  is refused naming the keys it may have.

The rules the models check in Python (a regulation origin needs a tagged source, a physical
method needs deviations) are written next to them as ``json_schema_extra``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from bench.provenance import CONFIDENCE_TAG
from bench.stepkinds.base import StepModel

DIALECT = "https://json-schema.org/draft/2020-12/schema"

# The error the loader gives a step without a known key (bench/sequence.py builds the union with it).
UNKNOWN_STEP = "unknown_step"

# What pydantic's lax mode reads as true or false (any case), besides true/false themselves.
_BOOL_WORDS = ("true", "false", "yes", "no", "on", "off", "t", "f", "y", "n", "1", "0")


def _any_case(word: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in word)


LAX_BOOL: JsonSchemaValue = {
    "anyOf": [
        {"type": "boolean"},
        {"type": "string", "pattern": "^(" + "|".join(_any_case(w) for w in _BOOL_WORDS) + ")$"},
        {"enum": [0, 1]},
    ]
}


def cited() -> JsonSchemaValue:
    """``origin: regulation`` needs a ``source:`` with a confidence tag (bench.provenance.require_cited)."""
    return {
        "if": {"properties": {"origin": {"const": "regulation"}}, "required": ["origin"]},
        "then": {
            "required": ["source"],
            "properties": {
                "source": {
                    "type": "string",
                    "pattern": CONFIDENCE_TAG.pattern,
                    # Shown by VS Code's YAML and JSON language servers instead of the bare pattern.
                    "patternErrorMessage": "a regulation's source needs a confidence tag [C], [C-analog], [S] or [R]",
                    "description": "a regulation's value needs its document, clause and tag [C], [C-analog], [S] or [R]",
                }
            },
        },
    }


def _reads_as_text(validator: Callable[[Any], Any], *samples: object) -> bool:
    try:
        return all(isinstance(validator(sample), str) for sample in samples)
    except (ValueError, TypeError, AssertionError):
        return False


def _admits_numbers(schema: JsonSchemaValue) -> bool:
    members = schema.get("anyOf", [schema])
    return any(m.get("type") in ("number", "integer") for m in members)


class SequenceJsonSchema(GenerateJsonSchema):
    """pydantic's schema generator, made to describe what the loader accepts (module docstring)."""

    def generate(self, schema: CoreSchema, mode: JsonSchemaMode = "validation") -> JsonSchemaValue:
        return {"$schema": DIALECT, **super().generate(schema, mode)}

    def function_before_schema(self, schema: core_schema.BeforeValidatorFunctionSchema) -> JsonSchemaValue:
        inner = super().function_before_schema(schema)
        if schema["function"]["type"] != "no-info":
            return inner
        # YAML reads `12`, `4.2` and `yes` as numbers and booleans; a validator that turns them into
        # text (as_text, which refuses true/false) makes the field take them: ask it which it takes.
        extra: list[JsonSchemaValue] = []
        if not _admits_numbers(inner) and _reads_as_text(schema["function"]["function"], 12, 4.2):
            extra.append({"type": "number"})
        if _reads_as_text(schema["function"]["function"], True, False):
            extra.append({"type": "boolean"})
        if not extra:
            return inner
        if "anyOf" in inner:
            return {**inner, "anyOf": [*inner["anyOf"], *extra]}
        return {"anyOf": [inner, *extra]}

    def bool_schema(self, schema: core_schema.BoolSchema) -> JsonSchemaValue:
        return dict(LAX_BOOL)

    def tagged_union_schema(self, schema: core_schema.TaggedUnionSchema) -> JsonSchemaValue:
        if schema.get("custom_error_type") != UNKNOWN_STEP:
            return super().tagged_union_schema(schema)
        keys = [str(k) for k in schema["choices"]]
        # First key in the language's order wins, as in the loader; a second kind key is then an
        # unknown key of the first kind's model.
        branches: list[JsonSchemaValue] = []
        for i, key in enumerate(keys):
            selected: JsonSchemaValue = {"type": "object", "required": [key]}
            if i:
                selected["not"] = {"anyOf": [{"required": [k]} for k in keys[:i]]}
            branches.append({"if": selected, "then": self.generate_inner(schema["choices"][key])})
        unknown = f"a step needs exactly one of: {', '.join(keys)}"
        common = list(StepModel.model_fields)  # name, doc
        branches += [
            # A step without a kind key: name the key that is not one (a misspelt `mesure:`).
            {
                "if": {"type": "object", "not": {"anyOf": [{"required": [k]} for k in keys]}},
                "then": {"propertyNames": {"enum": [*keys, *common]}},
            },
            # A step with nothing but a name and a doc.
            {
                "if": {"type": "object", "propertyNames": {"enum": common}},
                "then": {"anyOf": [{"required": [k]} for k in keys], "errorMessage": unknown},
            },
        ]
        return {"type": "object", "description": f"one step: {unknown}", "allOf": branches}
