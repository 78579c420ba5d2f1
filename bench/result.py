"""The result of one run, as written to ``result.json``.

This is the versioned, documented shape every renderer reads (JUnit, HTML). Reports are
rendered from the record, never from live state.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# 1.1: measurements carry uncertainty (U, k = 2) and decision; runs carry deviations, decision
# rule, environment and the equipment used (all additive, defaults keep 1.0 files readable).
# 1.2: record_error and report_degraded (additive).
# 1.3: dtcs, the DUTs' DTCs read at the start and the end of the run (additive).
# 1.4: operator_entries, the text answers of prompts (identification, remarks) (additive).
# 1.5: operator, who ran the test (additive).
RESULT_SCHEMA_VERSION = "1.5"


class Verdict(StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    ERROR = "ERROR"
    ABORTED = "ABORTED"


class Outcome(StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    ERROR = "ERROR"
    ABORTED = "ABORTED"
    SKIPPED = "SKIPPED"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Measurement(_Model):
    name: str
    step: str
    value: float | None
    unit: str
    low: float | None = None
    high: float | None = None
    outcome: Outcome
    t: float = Field(description="seconds since run start (event-loop time) when the value was taken")
    how: str = Field(description="how the value was obtained, e.g. 'max of bms.cell_v_max since charge'")
    uncertainty: float | None = Field(None, description="expanded uncertainty U (k = 2), in the unit of the value")
    uncertainty_budget: list[str] = Field([], description="the standard-uncertainty components, for the report")
    decision: str = Field("", description="decision rule applied to the limits (ISO/IEC 17025 7.8.6)")

    @property
    def has_limits(self) -> bool:
        return self.low is not None or self.high is not None

    def outcome_text(self) -> str:
        """The outcome as shown: a value taken without limits is "recorded", since it has no verdict."""
        return "recorded" if not self.has_limits and self.outcome is Outcome.PASS else self.outcome.value


class StepResult(_Model):
    index: int
    name: str
    kind: str
    phase: str = Field(description="'steps' or 'cleanup'")
    line: int
    outcome: Outcome
    started: float
    ended: float
    message: str = ""


class Parameter(_Model):
    name: str
    value: str
    default: str
    overridden: bool
    doc: str = ""


class DeviceIdentity(_Model):
    name: str
    driver: str
    identity: dict[str, str] = {}


class SafeStateReadback(_Model):
    device: str
    safe: bool
    detail: str
    t: float


class DtcEntry(_Model):
    code: str = Field(description="SAE J2012 code and failure type byte, e.g. 'P0AA1-00'")
    number: int = Field(description="the 3-byte DTC number")
    status: int = Field(description="ISO 14229-1 status byte")
    flags: list[str] = Field([], description="the names of the status bits that are set")


class DtcRead(_Model):
    device: str
    at: str = Field(description="'start' (after connecting) or 'end' (after the safe state)")
    t: float = Field(description="seconds since run start when the read ended")
    dtcs: list[DtcEntry] = Field(default=[], description="DTCs with a status bit of bench.dtccodes.RECORD_MASK")
    error: str | None = Field(default=None, description="the read failed: why (it does not change the verdict)")


class OperatorEntry(_Model):
    """A text the operator entered at a prompt: recorded as it was written, never judged."""

    step: str = Field(description="the prompt step")
    prompt: str = Field(description="what the operator was asked")
    answer: str = Field(description="the answer, verbatim (a serial number keeps its leading zeros)")
    record: str = Field(description="'identification' (of the item tested) or 'remark'")
    source: str = Field(description="the answers file or the operator at the bench")
    t: float = Field(description="seconds since run start when the answer was taken")


class RunResult(_Model):
    schema_version: str = RESULT_SCHEMA_VERSION
    run_id: str
    verdict: Verdict
    reason: str
    sequence: dict[str, Any] = Field(description="id, title, version, basis, path, sha256")
    station: dict[str, Any] = Field(description="id, path, sha256, simulated, virtual_time")
    parameters: list[Parameter]
    faults: list[str]
    seed: int
    started_utc: str
    ended_utc: str
    sim_duration_s: float = Field(description="event-loop time from start to end of the run")
    wall_duration_s: float
    steps: list[StepResult]
    measurements: list[Measurement]
    marks: dict[str, float] = Field(description="named instants recorded by `as:`, seconds since run start")
    devices: list[DeviceIdentity]
    safe_state: list[SafeStateReadback]
    dtcs: list[DtcRead] = Field([], description="DTCs read at the start and the end of the run, per device")
    operator_entries: list[OperatorEntry] = Field(
        [], description="text answers of prompts: identification of the item and remarks, never measurements"
    )
    unsafe_end: bool = Field(False, description="a device's safe state could not be read back as safe")
    record_error: str | None = Field(
        default=None,
        description="the record could not be completely written (e.g. a full disk): what failed; verdict ERROR",
    )
    report_degraded: str | None = Field(
        default=None,
        description="the report could not be completely rendered: what failed; the record itself is complete",
    )
    code_version: str
    operator: str | None = Field(
        None,
        description="who ran the test: bench run --operator, the submitter of a lab job, else the login name",
    )
    decision_rule: str = Field("simple", description="'simple' or 'guard_band' (ILAC-G8:09/2019)")
    deviations: list[str] = Field([], description="deviations from the method: overrides, skipped steps, out-of-cal")
    environment: dict[str, str] = Field({}, description="ambient conditions during the test, with their source")
    equipment: list[dict[str, Any]] = Field([], description="instruments used, identity and calibration status")


def rounded(v: float) -> float:
    """``v`` to 9 significant digits for the record (None, booleans, NaN and infinities as they are)."""
    if v is None or isinstance(v, bool):
        return v
    r = float(f"{v:.9g}")
    return r if r - r == 0.0 else v  # NaN and the infinities (r - r is NaN) as they are
