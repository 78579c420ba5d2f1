"""The kinds of event a run's record (``events.jsonl``) can hold: one enumeration for all of them.

The engine, the recorder and the report amendment write these; the console, the reports, the
verifier and the lab read them. docs/lifecycle.md ("Events") says when each one is written and
with which fields, and tests/test_event_kinds_documented.py keeps that table and this
enumeration the same. A ``StrEnum`` member is its own text (``EventKind.RUN_STARTED ==
"run_started"``, the same hash, written to JSON as the text), so records written before the
enumeration read the same.
"""

from __future__ import annotations

from enum import StrEnum


class EventKind(StrEnum):
    # Start
    RUN_STARTED = "run_started"
    SIMULATOR_STARTED = "simulator_started"
    DEVICE_CONNECTED = "device_connected"
    IDENTITY_MISMATCH = "identity_mismatch"
    DEVICE_FAULT = "device_fault"
    # The DUT's DTC memory, after connecting and after the safe state
    DTCS_READ = "dtcs_read"
    # Steps (in the steps and in the cleanup)
    STEP_STARTED = "step_started"
    SET = "set"
    CONDITION_MET = "condition_met"
    WAIT_TIMEOUT = "wait_timeout"
    MEASUREMENT = "measurement"
    SEARCH_PROBE = "search_probe"
    PROMPT_ANSWERED = "prompt_answered"
    STEP_ENDED = "step_ended"
    SNAPSHOT = "snapshot"
    # Monitors, supervision and the stop levels
    MONITOR_TRIPPED = "monitor_tripped"
    SUPERVISOR_TRIPPED = "supervisor_tripped"
    INTERLOCK_NOT_LATCHED = "interlock_not_latched"
    EMERGENCY_STOP = "emergency_stop"
    TERMINATE_REQUESTED = "terminate_requested"
    TERMINATED = "terminated"
    STOP_REQUESTED = "stop_requested"
    # The end
    CLEANUP_STARTED = "cleanup_started"
    SAFE_STATE = "safe_state"
    RECORD_WRITE_FAILED = "record_write_failed"
    RUN_ENDED = "run_ended"
    # The only event of an amended report's own record (bench/report/amend.py)
    REPORT_AMENDED = "report_amended"
