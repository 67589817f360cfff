"""Rollbacks of the production guard (:mod:`resources.rollbacks`).

``rollbacks``: one row per rollback incident (unique ``incident_id``): when and why it was
triggered (``trigger``: ``auto`` for the expectancy sensor's two consecutive P1 alerts,
``manual`` for an operator's run), the Dagster run, the cryptos whose champion was re-promoted
(JSON list), whether the kill switch flipped in this run, and the confirmation state:
``pending`` (an automatic rollback waits for an operator until ``confirm_by``), ``confirmed``
(``confirmed_by``, ``confirm_reason``, ``confirmed_at``), or ``held`` (no confirmation by the
deadline: the rollback stays in force and an escalation alert was sent). All times UTC.

Revision ID: 0008_rollbacks
Revises: 0007_drift_inputs
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_rollbacks"
down_revision: str | Sequence[str] | None = "0007_drift_inputs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rollbacks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("incident_id", sa.String(160), nullable=False),
        sa.Column("trigger", sa.String(8), nullable=False),
        sa.Column("triggered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("dagster_run_id", sa.String(64), nullable=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("cryptos_json", sa.Text, nullable=False),
        sa.Column("flipped", sa.Boolean, nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("confirm_by", sa.DateTime(timezone=True), nullable=True),
        sa.Column("confirmed_by", sa.String(200), nullable=True),
        sa.Column("confirm_reason", sa.Text, nullable=True),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("escalated_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("incident_id", name="uq_rollbacks_incident"),
        sa.CheckConstraint("trigger IN ('auto', 'manual')", name="ck_rollbacks_trigger"),
        sa.CheckConstraint("state IN ('pending', 'confirmed', 'held')", name="ck_rollbacks_state"),
    )


def downgrade() -> None:
    op.drop_table("rollbacks")
