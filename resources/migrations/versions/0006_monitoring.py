"""Monitoring metrics: ``monitoring_metrics`` (:mod:`resources.journal`).

One row per (crypto, UTC day): the flat row of :func:`cvn_assets.guard.monitoring.metrics_row`:
training failures per loss function (1 h, 24 h), the active loss (focal gamma, alpha),
buy_proba quantiles p05..p95 with their count and the PSI against the training deciles (and
its no-drift 95th percentile), net expectancy over 24 h and 48 h with trade counts, inference
latency p50/p99 with the sample count. NULL = not defined (nothing measured).

Revision ID: 0006_monitoring
Revises: 0005_journal
Create Date: 2025-01-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_monitoring"
down_revision: str | Sequence[str] | None = "0005_journal"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FAILURES = (
    "training_failed_binary_logistic_1h",
    "training_failed_binary_logistic_24h",
    "training_failed_focal_1h",
    "training_failed_focal_24h",
    "training_failed_other_1h",
    "training_failed_other_24h",
)


def upgrade() -> None:
    op.create_table(
        "monitoring_metrics",
        sa.Column("crypto", sa.String(32), primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("as_of_utc", sa.DateTime(timezone=True), nullable=False),
        *[sa.Column(c, sa.Integer, nullable=False) for c in _FAILURES],
        sa.Column("loss_function", sa.String(32), nullable=False),
        sa.Column("focal_loss_active", sa.Integer, nullable=False),
        sa.Column("focal_gamma", sa.Float, nullable=True),
        sa.Column("focal_alpha", sa.Float, nullable=True),
        *[
            sa.Column(f"buy_proba_{q}", sa.Float, nullable=True)
            for q in ("p05", "p25", "p50", "p75", "p95")
        ],
        sa.Column("buy_proba_n", sa.Integer, nullable=False),
        sa.Column("buy_proba_psi", sa.Float, nullable=True),
        sa.Column("buy_proba_psi_null_p95", sa.Float, nullable=True),
        sa.Column("buy_proba_psi_expected", sa.String(16), nullable=True),
        sa.Column("expectancy_net_24h", sa.Float, nullable=True),
        sa.Column("expectancy_trades_24h", sa.Integer, nullable=False),
        sa.Column("expectancy_net_48h", sa.Float, nullable=True),
        sa.Column("expectancy_trades_48h", sa.Integer, nullable=False),
        sa.Column("latency_p50_ms", sa.Float, nullable=True),
        sa.Column("latency_p99_ms", sa.Float, nullable=True),
        sa.Column("latency_n", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("monitoring_metrics")
