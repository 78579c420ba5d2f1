"""Where each limit of a sequence comes from, so that a report states conformity to that specification.

ISO/IEC 17025 7.8.6.2 b) asks a statement of conformity to name the specification that was met.
A sequence declares it where the number is declared: a parameter's ``origin`` is ``regulation``
(its ``source`` names the document, the clause and a confidence tag), ``item`` (the item's or
manufacturer's specification) or ``lab`` (the laboratory's method). A measure limit that is one
parameter (``max: $cell_v_limit``) has that parameter's origin; any other limit (a number written
in the step, or an expression such as ``$t_max_op + 10 degC``) is the laboratory's, made of the
parameters it names, unless its measure declares ``origin:`` (and ``source:``) for the limits
written in it. A limit is never attributed to a regulation unless its parameter or its measure
says so.

The same functions serve ``bench validate`` (the rules and the listing) and the report, which
reads the sequence file of the run's record.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bench import stepkinds
from bench.provenance import CONFIDENCE_TAG
from bench.sequence import Sequence

UNDECLARED = "undeclared"
_PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_ONE_PARAM = re.compile(r"^\s*-?\s*\$([A-Za-z_][A-Za-z0-9_]*)\s*$")
Loc = list[str | int]


@dataclass(frozen=True)
class Limit:
    measure: str
    bound: str  # "min" or "max"
    text: str  # as written in the step
    origin: str  # "regulation", "item", "lab" or UNDECLARED
    reference: str  # regulation: its source; item: the specification named; lab: "" or what it is made of
    parameter: str | None = None  # the one parameter the limit is, if it is one
    parts: tuple[tuple[str, str], ...] = ()  # (parameter, origin) of a limit made of several values


def measure_specs(model: Sequence) -> Iterator[tuple[Loc, Any]]:
    """(location, spec) of every judged measurement of the sequence and its cleanup (a measure's, a search's)."""
    for phase in ("steps", "cleanup"):
        for i, step in enumerate(getattr(model, phase)):
            key = stepkinds.of_model(step).judged
            if key is not None:
                yield [phase, i, key], getattr(step, key)


def limits(model: Sequence) -> list[Limit]:
    """Every limit of every measure, with its origin."""
    out = []
    for _, spec in measure_specs(model):
        for bound in ("min", "max"):
            text = getattr(spec, bound, None)
            if text is not None:
                out.append(_limit(model, spec, bound, str(text)))
    return out


def limits_by_measure(model: Sequence) -> dict[str, list[Limit]]:
    out: dict[str, list[Limit]] = {}
    for lim in limits(model):
        out.setdefault(lim.measure, []).append(lim)
    return out


def _limit(model: Sequence, spec: Any, bound: str, text: str) -> Limit:
    measure = str(spec.name)
    one = _ONE_PARAM.match(text)
    if one and one.group(1) in model.parameters:
        name = one.group(1)
        p = model.parameters[name]
        origin = p.origin or UNDECLARED
        reference = p.source or (f"{name}: {p.doc}" if p.doc else name)
        return Limit(measure, bound, text, origin, reference, parameter=name)
    parts = tuple(
        (n, model.parameters[n].origin or UNDECLARED)
        for n in dict.fromkeys(_PARAM.findall(text))
        if n in model.parameters
    )
    # Parts are named, the limit is not theirs: "(regulation)" would read as the limit's attribution.
    made_of = " and ".join(f"{n} ({_PART_WORDS.get(o, _ORIGIN_WORDS[o])})" for n, o in parts)
    # A limit written in the step is the lab's unless the step says whose it is (measure's origin:).
    origin = getattr(spec, "origin", None) or "lab"
    reference = getattr(spec, "source", None) or (f"made of {made_of}" if made_of else "")
    return Limit(measure, bound, text, origin, reference, parts=parts)


_ORIGIN_WORDS = {
    "regulation": "regulation",
    "item": "item specification",
    "lab": "lab method",
    UNDECLARED: "origin not declared",
}


_PART_WORDS = {"regulation": "value from a regulation", "item": "value from the item specification"}


def origin_words(origin: str) -> str:
    return _ORIGIN_WORDS.get(origin, origin)


def problems(model: Sequence) -> list[tuple[Loc, str]]:
    """What ``bench validate`` refuses: a limit of unknown origin, a source without its confidence tag."""
    out: list[tuple[Loc, str]] = []
    used: dict[str, str] = {}
    for lim in limits(model):
        for name in [lim.parameter] if lim.parameter else [n for n, _ in lim.parts]:
            used.setdefault(name, lim.measure)
    for name, measure in used.items():
        if model.parameters[name].origin is None:
            out.append(
                (
                    ["parameters", name],
                    f"parameter '{name}' is a limit of measure '{measure}': declare its origin "
                    "(origin: regulation, item or lab)",
                )
            )
    b = model.basis
    if b.source and b.method != "lab" and not CONFIDENCE_TAG.search(b.source):
        out.append((["basis", "source"], "the basis source needs confidence tags [C], [C-analog], [S] or [R]"))
    for name, p in model.parameters.items():
        # An item's or the lab's own value cites no text whose reading could be uncertain.
        if p.source and p.origin not in ("item", "lab") and not CONFIDENCE_TAG.search(p.source):
            out.append(
                (
                    ["parameters", name, "source"],
                    f"the source of '{name}' needs a confidence tag [C], [C-analog], [S] or [R]",
                )
            )
    return out


def describe(model: Sequence) -> list[str]:
    """The lines ``bench validate`` shows: the basis with its tags, the deviations and each limit's origin."""
    b = model.basis
    method = {"physical": "physical test, performed at HIL level", "hil": "HIL method", "lab": "the lab's method"}
    lines = [f"basis: {b.standard}, clause {b.clause}" + (f" ({method[b.method]})" if b.method else "")]
    if b.source:
        lines.append(f"basis source: {b.source}")
    lines += [f"deviation: {d}" for d in model.deviations]
    for lim in limits(model):
        what = origin_words(lim.origin)
        lines.append(
            f"limit {lim.measure} {lim.bound} {lim.text.strip()}: {what}"
            + (f": {lim.reference}" if lim.reference else "")
        )
    return lines
