"""The statement of conformity (ISO/IEC 17025 7.8.6) and the deviations (7.8.2.1 n) of a report.

7.8.6.2 b) asks the statement to name the specification that was met. Each limit of a sequence
names its origin (:mod:`bench.origins`): a limit is stated to conform to a regulation only when
its parameter says it is the regulation's; an item limit conforms to the item specification, a
lab limit meets the lab's method limit. The origins and the standing deviations come from the
sequence file kept in the run's record (``inputs/``), so a report rendered later says the same.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from pathlib import Path
from typing import Any

from bench.events import EventKind
from bench.origins import UNDECLARED, Limit, limits_by_measure
from bench.report.htmltext import e as _e
from bench.report.htmltext import num as _num
from bench.result import Measurement, Outcome
from bench.sequence import Sequence

UNKNOWN = "unknown"  # the record's sequence file could not be read


def record_sequence(run_dir: Path, events: list[dict[str, Any]]) -> Sequence | None:
    """The sequence as run, from the record's inputs/; None when it cannot be read."""
    from bench.yamlsource import load_yaml, plain

    started = next((e for e in events if e.get("kind") == EventKind.RUN_STARTED), {})
    rel = (started.get("inputs") or {}).get("sequence")
    if not rel or not (run_dir / rel).is_file():
        return None
    try:
        return Sequence.model_validate(plain(load_yaml(run_dir / rel, "sequence").root))
    except Exception:  # a report is still rendered; its statements then attribute no limit
        return None


def _bound_limit(limits: list[Limit] | None, m: Measurement, bound: str) -> Limit:
    for lim in limits or []:
        if lim.bound == bound:
            return lim
    origin = UNKNOWN if limits is None else UNDECLARED
    return Limit(m.name, bound, "", origin, "")


def _met(m: Measurement, bound: str) -> bool | None:
    """Whether the value meets this bound: True, False, or None when the measurement was not judged."""
    if m.outcome == Outcome.PASS:
        return True
    if m.outcome != Outcome.FAIL or m.value is None:
        return None
    # Under a guard band a value within U of a limit is not accepted (ILAC-G8 4.2.2).
    w = (m.uncertainty or 0.0) if "guard" in m.decision else 0.0
    if bound == "min":
        return m.low is None or m.value >= m.low + w
    return m.high is None or m.value <= m.high - w


def _specification(lim: Limit, met: bool | None, seq_id: str) -> str:
    """What the value conforms to (or not): only the specification the limit's origin names."""
    ref = f" ({_e(lim.reference)})" if lim.reference else ""
    if lim.origin == "regulation":
        spec = f"the limit of {_e(lim.reference)} (regulation)"
        verbs = ("conforms to", "does not conform to")
    elif lim.origin == "item":
        spec = f"the item specification{ref}"
        verbs = ("conforms to", "does not conform to")
    elif lim.origin == "lab":
        spec = f"the lab's method limit{ref}"
        verbs = ("meets", "does not meet")
    elif lim.origin == UNDECLARED:
        spec = f"the limit of sequence {_e(seq_id)} (its origin is not declared: attributed to no specification)"
        verbs = ("meets", "does not meet")
    else:
        spec = f"the limit of sequence {_e(seq_id)} (its origin could not be read from the record: attributed to no specification)"
        verbs = ("meets", "does not meet")
    if met is None:
        return f"was not judged against {spec}"
    return f"{verbs[0] if met else verbs[1]} {spec}"


def statements_html(measurements: Seq[Measurement], model: Sequence | None, rule: str, seq_id: str) -> str:
    """One statement per limit of each measurement, naming the specification of that limit's origin."""
    if not measurements:
        return '<p><span class="na">not applicable: no measurement with limits was taken</span></p>'
    by_measure = limits_by_measure(model) if model is not None else None
    items = []
    for m in measurements:
        u = f" &plusmn; {_num(m.uncertainty)}" if m.uncertainty is not None else ""
        value = f"{_e(m.name)} = {_num(m.value)}{u} {_e(m.unit)}"
        bounds = [(b, v) for b, v in (("min", m.low), ("max", m.high)) if v is not None]
        if not bounds:
            items.append(f'<li data-origin="none">{value}: recorded without a limit, no statement of conformity.</li>')
            continue
        limits = by_measure.get(m.name, []) if by_measure is not None else None
        for bound, v in bounds:
            lim = _bound_limit(limits, m, bound)
            sign = "&ge;" if bound == "min" else "&le;"
            items.append(
                f'<li data-origin="{_e(lim.origin)}">{value} {_specification(lim, _met(m, bound), seq_id)}: '
                f"limit {sign} {_num(v)} {_e(m.unit)}; rule applied: {_e(m.decision or rule)}.</li>"
            )
    return '<ul class="conformity">' + "".join(items) + "</ul>"


def deviations_html(model: Sequence | None, run_deviations: Seq[str]) -> str:
    """The sequence's standing deviations from its method, then those of this run; never 'none' for either
    when there are some, and never 'none' for the sequence when its file could not be read."""
    out = []
    if model is None:
        out.append(
            "<p>Standing deviations of the sequence: could not be read from the record (the sequence file of "
            "the run is missing or does not load); the method may depart from its basis.</p>"
        )
    elif model.deviations:
        b = model.basis
        out.append(f"<p>Standing deviations of the sequence from the method of {_e(b.standard)}, {_e(b.clause)}:</p>")
        out.append('<ul class="deviations">' + "".join(f"<li>{_e(d)}</li>" for d in model.deviations) + "</ul>")
    else:
        # A physical or HIL method always declares some (the sequence does not load otherwise).
        why = {"lab": "it is the laboratory's own method"}.get(
            model.basis.method or "", "its basis does not state what its method prescribes"
        )
        out.append(f"<p>Standing deviations of the sequence: none declared ({_e(why)}).</p>")
    if run_deviations:
        out.append("<p>Deviations of this run:</p>")
        out.append('<ul class="deviations">' + "".join(f"<li>{_e(d)}</li>" for d in run_deviations) + "</ul>")
    else:
        out.append("<p>Deviations of this run: none (no overridden parameter, skipped step or operator override).</p>")
    return "".join(out)


def basis_html(basis: dict[str, Any]) -> str:
    """The basis of the method with its source and confidence tags, as the record's result names it."""
    text = f"{basis.get('standard', '')}, clause {basis.get('clause', '')}"
    method = {
        "physical": "a physical test of the item, performed here at HIL level",
        "hil": "a HIL or fault-injection test",
        "lab": "the laboratory's own method",
    }.get(basis.get("method") or "")
    out = _e(text) + (f"; method: {_e(method)}" if method else "")
    if basis.get("source"):
        out += f'<br><span class="muted">source: {_e(basis["source"])}</span>'
    return out
