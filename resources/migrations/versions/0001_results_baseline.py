"""Results baseline: the schema of the code before migrations (commit abe7750).

``finetune_results``, ``oos_returns`` and ``gate_verdicts`` exactly as ``METADATA.create_all``
made them then (no ``sweeps`` table, no foreign keys). A database created by that code is
stamped with this revision instead of running it.

Revision ID: 0001_results_baseline
Revises:
Create Date: 2025-01-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_results_baseline"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# frozen copy of RESULT_COLUMNS at abe7750 (the module's list may change; this may not)
RESULT_COLUMNS = (
    ("loss_function", sa.String(32)),
    ("gamma", sa.Float),
    ("alpha", sa.Float),
    ("primary_calibration", sa.String(16)),
    ("n_train", sa.Integer),
    ("n_early_stopping", sa.Integer),
    ("n_calibration", sa.Integer),
    ("n_test", sa.Integer),
    ("n_buy", sa.Integer),
    ("n_pred_buy", sa.Integer),
    ("threshold", sa.Float),
    ("f1_buy", sa.Float),
    ("precision_buy", sa.Float),
    ("recall_buy", sa.Float),
    ("log_loss", sa.Float),
    ("ece_hold_none", sa.Float),
    ("ece_hold_temperature", sa.Float),
    ("ece_hold_platt", sa.Float),
    ("ece_hold_isotonic", sa.Float),
    ("temperature", sa.Float),
    ("expectancy_net", sa.Float),
    ("n_trades", sa.Integer),
    ("best_iteration", sa.Integer),
    ("train_seconds", sa.Float),
)


def upgrade() -> None:
    op.create_table(
        "finetune_results",
        sa.Column("sweep_id", sa.String(64), primary_key=True),
        sa.Column("crypto", sa.String(32), primary_key=True),
        sa.Column("fold", sa.Integer, primary_key=True),
        sa.Column("variant", sa.String(64), primary_key=True),
        *(sa.Column(name, typ, nullable=True) for name, typ in RESULT_COLUMNS),
        sa.Column("written_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
    )
    op.create_table(
        "oos_returns",
        sa.Column("sweep_id", sa.String(64), primary_key=True),
        sa.Column("crypto", sa.String(32), primary_key=True),
        sa.Column("fold", sa.Integer, primary_key=True),
        sa.Column("variant", sa.String(64), primary_key=True),
        sa.Column("period", sa.String(32), primary_key=True),
        sa.Column("net_return", sa.Float, nullable=False),
        sa.Column("n_trades", sa.Integer, nullable=False),
    )
    op.create_table(
        "gate_verdicts",
        sa.Column("sweep_id", sa.String(64), primary_key=True),
        sa.Column("variant", sa.String(64), primary_key=True),
        sa.Column("lock", sa.Boolean, nullable=True),
        sa.Column("verdict_json", sa.Text, nullable=False),
        sa.Column("written_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
    )


def downgrade() -> None:
    for name in ("gate_verdicts", "oos_returns", "finetune_results"):
        op.drop_table(name)
