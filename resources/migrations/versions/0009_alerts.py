"""Alerts of the production guard (:mod:`resources.alert_store`).

``alerts``: one row per alert (unique ``(incident_id, name)``), recorded before any delivery:
the alert itself (severity, cryptos and figures as JSON, runbook, time, message), when it was
recorded and by which run, and its delivery: ``channel`` (``slack``, NULL for none),
``delivery_state`` (``none``, ``pending``, ``delivered``, ``failed``), ``attempts``,
``last_status``, ``last_error``, ``last_attempt_at``, ``next_attempt_at``, ``delivered_at``,
``failed_at``, the deliverer's claim ``lease_until`` and ``file_synced`` (the JSON-lines
file shows the row). All times UTC.

Revision ID: 0009_alerts
Revises: 0008_rollbacks
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_alerts"
down_revision: str | Sequence[str] | None = "0008_rollbacks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("incident_id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(8), nullable=False),
        sa.Column("cryptos_json", sa.Text, nullable=False),
        sa.Column("figures_json", sa.Text, nullable=False),
        sa.Column("runbook", sa.String(300), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("dagster_run_id", sa.String(64), nullable=True),
        sa.Column("channel", sa.String(16), nullable=True),
        sa.Column("delivery_state", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_status", sa.Integer, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("file_synced", sa.Boolean, nullable=False),
        sa.UniqueConstraint("incident_id", "name", name="uq_alerts_incident_name"),
        sa.CheckConstraint(
            "delivery_state IN ('none', 'pending', 'delivered', 'failed')",
            name="ck_alerts_delivery_state",
        ),
    )
    op.create_index("ix_alerts_delivery", "alerts", ["delivery_state", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_alerts_delivery", table_name="alerts")
    op.drop_table("alerts")
