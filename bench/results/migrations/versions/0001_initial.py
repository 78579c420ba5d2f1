"""The first tables: runs, measurements, steps, equipment_used, dtcs.

Written out here, not imported from schema.py: a migration is frozen once released, while the
models keep changing (each change with a migration of its own).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

NAME = sa.String(200)
HASH = sa.String(64)
OUTCOME = sa.String(16)


def _run_fk() -> sa.Column[str]:
    return sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.run_id", ondelete="CASCADE"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("manifest_sha256", HASH, nullable=False),
        sa.Column("sequence_id", NAME, nullable=False),
        sa.Column("sequence_version", sa.String(64), nullable=False),
        sa.Column("sequence_sha256", HASH, nullable=False),
        sa.Column("parameters", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("station_id", NAME, nullable=False),
        sa.Column("station_sha256", HASH, nullable=False),
        sa.Column("bench_id", NAME, nullable=False),
        sa.Column("operator", NAME, nullable=True),
        sa.Column("dut_serial", NAME, nullable=True),
        sa.Column("dut_part_number", NAME, nullable=True),
        sa.Column("dut_hw_version", NAME, nullable=True),
        sa.Column("dut_sw_version", NAME, nullable=True),
        sa.Column("started_utc", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_utc", sa.DateTime(timezone=True), nullable=False),
        sa.Column("clock", OUTCOME, nullable=False),
        sa.Column("sim_duration_s", sa.Float(), nullable=False),
        sa.Column("wall_duration_s", sa.Float(), nullable=False),
        sa.Column("verdict", OUTCOME, nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("unsafe_end", sa.Boolean(), nullable=False),
        sa.Column("signer", NAME, nullable=True),
        sa.Column("folder", sa.Text(), nullable=False),
        sa.Column("campaign_id", NAME, nullable=True),
        sa.Column("fault", NAME, nullable=True),
        sa.Column("indexed_utc", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_runs_sequence_started", "runs", ["sequence_id", "started_utc"])
    op.create_index("ix_runs_dut_serial", "runs", ["dut_serial"])
    op.create_index("ix_runs_started", "runs", ["started_utc"])
    op.create_index("ix_runs_campaign", "runs", ["campaign_id"])

    op.create_table(
        "measurements",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        _run_fk(),
        sa.Column("name", NAME, nullable=False),
        sa.Column("step", sa.Text(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("unit", sa.String(64), nullable=False),
        sa.Column("uncertainty", sa.Float(), nullable=True),
        sa.Column("low", sa.Float(), nullable=True),
        sa.Column("high", sa.Float(), nullable=True),
        sa.Column("decision", sa.Text(), nullable=False),
        sa.Column("outcome", OUTCOME, nullable=False),
        sa.Column("t", sa.Float(), nullable=False),
    )
    op.create_index("ix_measurements_name_run", "measurements", ["name", "run_id"])

    op.create_table(
        "steps",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        _run_fk(),
        sa.Column("phase", OUTCOME, nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("outcome", OUTCOME, nullable=False),
        sa.Column("started", sa.Float(), nullable=False),
        sa.Column("ended", sa.Float(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
    )
    op.create_index("ix_steps_run", "steps", ["run_id"])

    op.create_table(
        "equipment_used",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        _run_fk(),
        sa.Column("asset_id", NAME, nullable=False),
        sa.Column("device", NAME, nullable=False),
        sa.Column("maker", NAME, nullable=False),
        sa.Column("model", NAME, nullable=False),
        sa.Column("serial", NAME, nullable=False),
        sa.Column("certificate", NAME, nullable=False),
        sa.Column("calibrated", sa.Date(), nullable=True),
        sa.Column("due", sa.Date(), nullable=True),
        sa.Column("in_calibration", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_equipment_asset_run", "equipment_used", ["asset_id", "run_id"])

    op.create_table(
        "dtcs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        _run_fk(),
        sa.Column("device", NAME, nullable=False),
        sa.Column("at", OUTCOME, nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
    )
    op.create_index("ix_dtcs_run", "dtcs", ["run_id"])


def downgrade() -> None:
    for table in ("dtcs", "equipment_used", "steps", "measurements", "runs"):
        op.drop_table(table)
