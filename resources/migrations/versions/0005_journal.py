"""Paper-trading journal: ``predictions`` and ``trades`` (:mod:`resources.journal`).

* ``predictions``: one row per (crypto, hour): model version (-> ``model_versions.id``), loss
  function, ``buy_proba`` in [0, 1], ``decision`` ``BUY`` | ``HOLD``, ``latency_ms`` (NULL when
  not measured).
* ``trades``: one row per closed trade, unique per (crypto, entry_time); entry/exit time and
  price, ``barrier`` ``tp`` | ``sl`` | ``time`` | ``halt``, gross and net return, model version
  (-> ``model_versions.id``), loss function; indexed by (crypto, exit_time) for the canary
  rule's window reads.

All times are UTC.

Revision ID: 0005_journal
Revises: 0004_trading_metrics
Create Date: 2025-01-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_journal"
down_revision: str | Sequence[str] | None = "0004_trading_metrics"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _version_fk(table: str) -> sa.ForeignKey:
    return sa.ForeignKey("model_versions.id", name=f"{table}_model_version_fkey")


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("crypto", sa.String(32), primary_key=True),
        sa.Column("hour", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("model_version", sa.Integer, _version_fk("predictions"), nullable=False),
        sa.Column("loss_function", sa.String(32), nullable=False),
        sa.Column("buy_proba", sa.Float, nullable=False),
        sa.Column("decision", sa.String(4), nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=True),
        sa.CheckConstraint("decision IN ('BUY', 'HOLD')", name="ck_predictions_decision"),
        sa.CheckConstraint("buy_proba >= 0 AND buy_proba <= 1", name="ck_predictions_buy_proba"),
    )
    op.create_table(
        "trades",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("crypto", sa.String(32), nullable=False),
        sa.Column("entry_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("entry_price", sa.Float, nullable=False),
        sa.Column("exit_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("exit_price", sa.Float, nullable=False),
        sa.Column("barrier", sa.String(8), nullable=False),
        sa.Column("gross_return", sa.Float, nullable=False),
        sa.Column("net_return", sa.Float, nullable=False),
        sa.Column("model_version", sa.Integer, _version_fk("trades"), nullable=False),
        sa.Column("loss_function", sa.String(32), nullable=False),
        sa.UniqueConstraint("crypto", "entry_time", name="uq_trades_entry"),
        sa.CheckConstraint("barrier IN ('tp', 'sl', 'time', 'halt')", name="ck_trades_barrier"),
        sa.CheckConstraint("exit_time >= entry_time", name="ck_trades_times"),
    )
    op.create_index("ix_trades_crypto_exit", "trades", ["crypto", "exit_time"])


def downgrade() -> None:
    op.drop_index("ix_trades_crypto_exit", table_name="trades")
    op.drop_table("trades")
    op.drop_table("predictions")
