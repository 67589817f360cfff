"""The live loop's state (:mod:`resources.live_state`).

``live_state``: one row per crypto, written in the transaction that journals its hours: the
last journaled hour (candle open time), the position still open after it (JSON, NULL when
flat), the decision latency measured per model version (JSON ``{version: ms}``, measured once
per version), when and by which run. The next live hour starts from it instead of
replaying from the first champion.

``live_events``: what the live loop journals beside the rows of an hour (``kind``, e.g.
``flags_unreadable``: the kill-switch flags could not be read, so no position was opened),
with the hour, the message, when and by which run. All times UTC.

Revision ID: 0010_live_state
Revises: 0009_alerts
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_live_state"
down_revision: str | Sequence[str] | None = "0009_alerts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "live_state",
        sa.Column("crypto", sa.String(32), primary_key=True),
        sa.Column("last_hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("position_json", sa.Text, nullable=True),
        sa.Column("latency_json", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("dagster_run_id", sa.String(64), nullable=True),
    )
    op.create_table(
        "live_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("crypto", sa.String(32), nullable=False),
        sa.Column("first_hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("dagster_run_id", sa.String(64), nullable=True),
    )
    op.create_index("ix_live_events_crypto_hour", "live_events", ["crypto", "last_hour"])


def downgrade() -> None:
    op.drop_index("ix_live_events_crypto_hour", table_name="live_events")
    op.drop_table("live_events")
    op.drop_table("live_state")
