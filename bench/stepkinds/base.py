"""What every step kind is made of, and what the rest of the bench knows of a step.

A step kind (one module of this package) gives a :class:`StepKind`: the pydantic model of its
YAML key, a compile function from that model to its own plan (a :class:`KindPlan`), a one-line
description and an executor. :mod:`bench.sequence` builds the step union from the registered
kinds, :mod:`bench.plan` calls their compile, and the sequencer their executor.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from bench.compiler import Compiler
from bench.expr import Compiled
from bench.result import Outcome

if TYPE_CHECKING:
    from bench.runcontext import RunContext

Scalar = str | int | float


def as_text(v: Any) -> Any:
    # YAML reads `12` or `4.2` as numbers; the quantity parser wants text.
    if isinstance(v, bool):
        raise ValueError("expected a quantity or an expression, not true/false")
    return str(v) if isinstance(v, int | float) else v


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StepModel(StrictModel):
    """The fields every step has; a kind's model adds its own key (``set:``, ``wait:``, ...)."""

    name: str | None = Field(
        None, description="unique within the sequence; defaults to 'NN kind' ('cleanup NN kind' in cleanup)"
    )
    doc: str | None = Field(None, description="what the step is for, for people reading the file")


class KindPlan:
    """A kind's compiled step. The defaults fit a step that refers to no signal and commands nothing."""

    def signals(self) -> set[str]:
        """Every signal the step refers to (the run asks its devices for these)."""
        return set()

    def cleanup_needs(self) -> set[str]:
        """Devices that must be connected for the step to be tried in cleanup; empty: always tried."""
        return set()

    def time_limit(self) -> float:
        """The longest the step takes, known at load, for the operator's view; 0: not known."""
        return 0.0


M = TypeVar("M", bound=StepModel)
P = TypeVar("P", bound=KindPlan)


@dataclass
class PlanStep(Generic[P]):
    """One compiled step: what every step has, and its kind's own plan."""

    index: int
    name: str
    kind: str
    phase: str
    line: int
    text: str
    plan: P
    mark: str | None = None  # the instant this step records as @mark
    # The condition whose sample fixed @mark; None: the instant a command went out.
    mark_condition: Compiled | None = None


@dataclass
class StepSite:
    """Where a step is compiled: its place in the file and what the steps before it left."""

    loc: list[str | int]
    marks: frozenset[str]  # instants recorded by earlier steps
    step_names: set[str]  # names of the steps so far, this one's included
    history: set[str]  # signals whose samples the run keeps (for 'since')
    mark: str | None = None
    mark_condition: Compiled | None = None

    def at(self, *keys: str | int) -> list[str | int]:
        return [*self.loc, *keys]

    def record_mark(self, c: Compiler, name: str | None, condition: Compiled | None = None) -> None:
        """The step records the instant ``@name`` (``as:``); refused if it is not a name or already taken."""
        if not name:
            return
        if not name.isidentifier():
            raise c.fail(self.at("as"), f"'{name}' is not a valid name")
        if name in self.marks:
            raise c.fail(self.at("as"), f"instant '@{name}' is already recorded by an earlier step")
        self.mark, self.mark_condition = name, condition


class StepFailed(Exception):
    """A step that failed (FAIL) or could not be done (ERROR), with the message recorded for it."""

    def __init__(self, outcome: Outcome, message: str) -> None:
        self.outcome = outcome
        super().__init__(message)


@dataclass(frozen=True)
class StepKind(Generic[M, P]):
    """One kind of step: its YAML key, model, compile, description and executor.

    The executor runs one step and returns the message of a passed step (or None). It raises
    ``StepFailed`` for a step that failed or could not be done; a device that fails raises
    ``BenchError`` or ``OSError``. Where a step is recorded and what its outcome does to the
    run is the sequencer's job (bench/sequencer.py).
    """

    name: str  # the YAML key, e.g. 'wait'
    model: type[M]
    compile: Callable[[Compiler, M, StepSite], P]
    describe: Callable[[PlanStep[P]], str]  # one line for people, parameters resolved
    execute: Callable[[RunContext, PlanStep[P]], Awaitable[str | None]]
    # The name of a step without 'name:' ('NN kind' when None).
    default_name: Callable[[M, int], str] | None = None
    # A failed step of this kind lets the steps go on (so that every measurement is taken).
    goes_on_after_fail: bool = False
    # The key of the kind's mapping that is a judged measurement: its 'name', 'min', 'max', 'origin'
    # and 'source' are the measurement's and its limits' (bench/origins.py); None: the kind has none.
    judged: str | None = None
