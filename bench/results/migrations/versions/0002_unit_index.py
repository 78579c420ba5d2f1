"""The index of a unit's runs: a DUT's runs of one sequence in time order, with their verdicts.

First-pass and final yield (bench/results/queries.py ``yield_``) look up, for each run, whether
an earlier run of the same DUT and sequence exists and which run is the last; this index answers
both from the index alone. It starts with dut_serial, so it replaces ix_runs_dut_serial.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

COLUMNS = ["dut_serial", "sequence_id", "started_utc", "run_id", "campaign_id", "verdict"]


def upgrade() -> None:
    op.create_index("ix_runs_unit", "runs", COLUMNS)
    op.drop_index("ix_runs_dut_serial", table_name="runs")


def downgrade() -> None:
    op.create_index("ix_runs_dut_serial", "runs", ["dut_serial"])
    op.drop_index("ix_runs_unit", table_name="runs")
