"""Trading metrics of finetune_results: the trading threshold and what it earned.

``trading_threshold`` (BUY threshold maximising the mean net return per trade on the
calibration block; NULL = do not trade), ``expectancy_trading`` and ``n_trades_trading`` (on
the test block), added to ``RESULT_COLUMNS`` of :mod:`resources.results_store` by commit
60b341f. Nullable: rows written before have none. A column that already exists (a database
that ``create_all`` created from 60b341f, stamped ``0002_sweeps``) is left as it is.

Revision ID: 0004_trading_metrics
Revises: 0003_guard_state
Create Date: 2025-01-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_trading_metrics"
down_revision: str | Sequence[str] | None = "0003_guard_state"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    ("trading_threshold", sa.Float),
    ("expectancy_trading", sa.Float),
    ("n_trades_trading", sa.Integer),
)


def upgrade() -> None:
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("finetune_results")}
    for name, typ in COLUMNS:
        if name not in have:
            op.add_column("finetune_results", sa.Column(name, typ, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("finetune_results") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
