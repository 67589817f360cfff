"""Sweeps: every result row belongs to a registered sweep.

Creates ``sweeps`` (unless the code of the session that introduced it already created it
with ``create_all``, which never added the foreign keys to tables that existed before),
registers a placeholder for every sweep id already used by a row of ``finetune_results``,
``oos_returns`` or ``gate_verdicts``, then adds their foreign keys
``sweep_id -> sweeps.sweep_id ON DELETE CASCADE`` (on SQLite by recreating the tables:
``batch_alter_table`` copies the rows).

Revision ID: 0002_sweeps
Revises: 0001_results_baseline
Create Date: 2025-01-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_sweeps"
down_revision: str | Sequence[str] | None = "0001_results_baseline"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHILD_TABLES = ("finetune_results", "oos_returns", "gate_verdicts")
PLACEHOLDER = {
    "fingerprint": "0000000000000000",
    "identity_json": '{"note": "registered before sweep identities existed"}',
    "data_source": "unknown",
}


def _fk_name(table: str) -> str:
    # PostgreSQL's own name for the unnamed key ``create_all`` made: one name everywhere
    return f"{table}_sweep_id_fkey"


def upgrade() -> None:
    bind = op.get_bind()
    insp = sa.inspect(bind)
    if not insp.has_table("sweeps"):
        op.create_table(
            "sweeps",
            sa.Column("sweep_id", sa.String(64), primary_key=True),
            sa.Column("fingerprint", sa.String(16), nullable=False),
            sa.Column("identity_json", sa.Text, nullable=False),
            sa.Column("data_source", sa.String(16), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        )
    sweeps = sa.table(
        "sweeps",
        sa.column("sweep_id", sa.String),
        sa.column("fingerprint", sa.String),
        sa.column("identity_json", sa.Text),
        sa.column("data_source", sa.String),
    )
    used: set[str] = set()
    for name in CHILD_TABLES:
        used.update(bind.execute(sa.text(f"SELECT DISTINCT sweep_id FROM {name}")).scalars())
    known = set(bind.execute(sa.select(sweeps.c.sweep_id)).scalars())
    missing = sorted(used - known)
    if missing:
        op.bulk_insert(sweeps, [{"sweep_id": s, **PLACEHOLDER} for s in missing])
    for name in CHILD_TABLES:
        if any(fk["referred_table"] == "sweeps" for fk in insp.get_foreign_keys(name)):
            continue
        with op.batch_alter_table(name) as batch:
            batch.create_foreign_key(
                _fk_name(name), "sweeps", ["sweep_id"], ["sweep_id"], ondelete="CASCADE"
            )


def downgrade() -> None:
    for name in CHILD_TABLES:
        with op.batch_alter_table(name) as batch:
            batch.drop_constraint(_fk_name(name), type_="foreignkey")
    op.drop_table("sweeps")
