"""The tables of the results database: the same models on SQLite and PostgreSQL (docs/results.md).

The tables are created and changed only by the versioned migrations (bench/results/migrations),
never by ``create_all``: a lab's database outlives any one version of the bench. A change here
needs a new migration in the same commit.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Date, DateTime, Dialect, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC instant on both engines: SQLite keeps no zone, so it is put back on read."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the results database stores UTC instants")
        return (
            value.astimezone(dt.UTC) if dialect.name == "postgresql" else value.astimezone(dt.UTC).replace(tzinfo=None)
        )

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


# JSON on SQLite (text), JSONB on PostgreSQL (indexable, compact).
Json = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    pass


class RunTable(Base):
    """One sealed run: what it ran, on what, on which item, when, and how it ended."""

    __tablename__ = "runs"

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    sequence_id: Mapped[str] = mapped_column(String(200))
    sequence_version: Mapped[str] = mapped_column(String(64))
    sequence_sha256: Mapped[str] = mapped_column(String(64))
    parameters: Mapped[dict[str, Any]] = mapped_column(Json)
    station_id: Mapped[str] = mapped_column(String(200))
    station_sha256: Mapped[str] = mapped_column(String(64))
    bench_id: Mapped[str] = mapped_column(String(200))
    operator: Mapped[str | None] = mapped_column(String(200))
    dut_serial: Mapped[str | None] = mapped_column(String(200))
    dut_part_number: Mapped[str | None] = mapped_column(String(200))
    dut_hw_version: Mapped[str | None] = mapped_column(String(200))
    dut_sw_version: Mapped[str | None] = mapped_column(String(200))
    started_utc: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    ended_utc: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    clock: Mapped[str] = mapped_column(String(16))
    sim_duration_s: Mapped[float] = mapped_column(Float)
    wall_duration_s: Mapped[float] = mapped_column(Float)
    verdict: Mapped[str] = mapped_column(String(16))
    exit_code: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    unsafe_end: Mapped[bool]
    signer: Mapped[str | None] = mapped_column(String(200))
    folder: Mapped[str] = mapped_column(Text)
    campaign_id: Mapped[str | None] = mapped_column(String(200))
    fault: Mapped[str | None] = mapped_column(String(200))
    indexed_utc: Mapped[dt.datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        Index("ix_runs_sequence_started", "sequence_id", "started_utc"),
        # A DUT's runs of one sequence in time order, with their verdicts: first-pass and final
        # yield answered from the index alone (migration 0002; it serves a DUT's history too).
        Index("ix_runs_unit", "dut_serial", "sequence_id", "started_utc", "run_id", "campaign_id", "verdict"),
        Index("ix_runs_started", "started_utc"),
        Index("ix_runs_campaign", "campaign_id"),
    )


def _run_fk() -> Mapped[str]:
    return mapped_column(String(64), ForeignKey("runs.run_id", ondelete="CASCADE"))


class MeasurementTable(Base):
    """A measured value with its unit, expanded uncertainty (U, k = 2), limits, rule and outcome."""

    __tablename__ = "measurements"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = _run_fk()
    name: Mapped[str] = mapped_column(String(200))
    step: Mapped[str] = mapped_column(Text)
    value: Mapped[float | None] = mapped_column(Float)
    unit: Mapped[str] = mapped_column(String(64))
    uncertainty: Mapped[float | None] = mapped_column(Float)
    low: Mapped[float | None] = mapped_column(Float)
    high: Mapped[float | None] = mapped_column(Float)
    decision: Mapped[str] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(16))
    t: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index("ix_measurements_name_run", "name", "run_id"),)


class StepTable(Base):
    """A step of the run with its outcome (seconds since the run's start)."""

    __tablename__ = "steps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = _run_fk()
    phase: Mapped[str] = mapped_column(String(16))  # "steps" or "cleanup": each counts from 0
    index: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    started: Mapped[float] = mapped_column(Float)
    ended: Mapped[float] = mapped_column(Float)
    message: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index("ix_steps_run", "run_id"),)


class EquipmentTable(Base):
    """An instrument a run used, with the calibration it had then (ISO/IEC 17025 7.10 reviews)."""

    __tablename__ = "equipment_used"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = _run_fk()
    asset_id: Mapped[str] = mapped_column(String(200))
    device: Mapped[str] = mapped_column(String(200))
    maker: Mapped[str] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(200))
    serial: Mapped[str] = mapped_column(String(200))
    certificate: Mapped[str] = mapped_column(String(200))
    calibrated: Mapped[dt.date | None] = mapped_column(Date)
    due: Mapped[dt.date | None] = mapped_column(Date)
    in_calibration: Mapped[bool]

    __table_args__ = (Index("ix_equipment_asset_run", "asset_id", "run_id"),)


class DtcTable(Base):
    """A DTC the run read from the item: ``at`` the run's start or end; ``text`` the status bits set."""

    __tablename__ = "dtcs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = _run_fk()
    device: Mapped[str] = mapped_column(String(200))
    at: Mapped[str] = mapped_column(String(16))
    code: Mapped[str] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index("ix_dtcs_run", "run_id"),)


TABLES = [t.__table__ for t in (RunTable, MeasurementTable, StepTable, EquipmentTable, DtcTable)]
