"""Drift inputs and shadow mode in the journal; the ``candidate`` alias (:mod:`resources.journal`,
:mod:`resources.model_registry`).

``predictions`` gains nullable columns, so existing rows upgrade in place (NULL = not known):

* ``feature_1`` .. ``feature_5`` (FLOAT): the values, at that hour, of the live model's top-5
  features by gain, in the order of its ``reference_stats["top_features"]`` (what the data
  drift PSI is computed on); NULL past the number of top features the model records.
* ``label`` (SMALLINT, 0/1) and ``label_known_at`` (timestamp, UTC): the hour's triple-barrier
  label as :func:`cvn_assets.market.labels.triple_barrier_labels` defines it for a long entered at
  the candle's close, and the close of the candle in which it resolved (that candle's open
  time + 1 h); both NULL while unresolved (checked: both or neither).
* ``candidate_version`` (-> ``model_versions.id``), ``candidate_buy_proba`` (FLOAT in [0, 1]),
  ``candidate_decision`` (``BUY`` | ``HOLD``): shadow mode, the ``candidate`` alias's model
  live at that hour; all three NULL when no candidate is shadowed (checked: all or none).

``model_aliases``: the check ``ck_model_aliases_alias`` becomes ``alias IN ('champion',
'previous', 'candidate')`` (``model_alias_history.alias`` has no check). On SQLite both tables
are recreated by ``batch_alter_table`` (neither has triggers; rows are copied).

Revision ID: 0007_drift_inputs
Revises: 0006_monitoring
Create Date: 2025-01-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_drift_inputs"
down_revision: str | Sequence[str] | None = "0006_monitoring"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

N_FEATURES = 5
ALIASES_OLD = "alias IN ('champion', 'previous')"
ALIASES_NEW = "alias IN ('champion', 'previous', 'candidate')"
_CHECKS = (
    ("ck_predictions_label", "label IS NULL OR label IN (0, 1)"),
    (
        "ck_predictions_label_known",
        "(label IS NULL AND label_known_at IS NULL) "
        "OR (label IS NOT NULL AND label_known_at IS NOT NULL)",
    ),
    (
        "ck_predictions_candidate_decision",
        "candidate_decision IS NULL OR candidate_decision IN ('BUY', 'HOLD')",
    ),
    (
        "ck_predictions_candidate_buy_proba",
        "candidate_buy_proba IS NULL OR (candidate_buy_proba >= 0 AND candidate_buy_proba <= 1)",
    ),
    (
        "ck_predictions_candidate",
        "(candidate_version IS NULL AND candidate_buy_proba IS NULL "
        "AND candidate_decision IS NULL) OR (candidate_version IS NOT NULL "
        "AND candidate_buy_proba IS NOT NULL AND candidate_decision IS NOT NULL)",
    ),
)
_NEW_COLUMNS = (
    *(f"feature_{i}" for i in range(1, N_FEATURES + 1)),
    "label",
    "label_known_at",
    "candidate_version",
    "candidate_buy_proba",
    "candidate_decision",
)


def _aliases_table(check: str) -> sa.Table:
    """``model_aliases`` as 0003 made it, with the alias check ``check`` (SQLite's batch mode
    copies the table from this description: it does not reflect CHECK constraints)."""
    return sa.Table(
        "model_aliases",
        sa.MetaData(),
        sa.Column("crypto", sa.String(32), primary_key=True),
        sa.Column("alias", sa.String(16), primary_key=True),
        sa.Column(
            "version_id",
            sa.Integer,
            sa.ForeignKey("model_versions.id", name="model_aliases_version_id_fkey"),
            nullable=False,
        ),
        sa.CheckConstraint(check, name="ck_model_aliases_alias"),
    )


def _set_alias_check(check: str) -> None:
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table(
            "model_aliases", copy_from=_aliases_table(check), recreate="always"
        ):
            pass
    else:
        op.drop_constraint("ck_model_aliases_alias", "model_aliases", type_="check")
        op.create_check_constraint("ck_model_aliases_alias", "model_aliases", check)


def upgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        for i in range(1, N_FEATURES + 1):
            batch.add_column(sa.Column(f"feature_{i}", sa.Float, nullable=True))
        batch.add_column(sa.Column("label", sa.SmallInteger, nullable=True))
        batch.add_column(sa.Column("label_known_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("candidate_version", sa.Integer, nullable=True))
        batch.add_column(sa.Column("candidate_buy_proba", sa.Float, nullable=True))
        batch.add_column(sa.Column("candidate_decision", sa.String(4), nullable=True))
        batch.create_foreign_key(
            "predictions_candidate_version_fkey",
            "model_versions",
            ["candidate_version"],
            ["id"],
        )
        for name, sql in _CHECKS:
            batch.create_check_constraint(name, sql)
    _set_alias_check(ALIASES_NEW)


def downgrade() -> None:
    op.execute("DELETE FROM model_aliases WHERE alias = 'candidate'")
    _set_alias_check(ALIASES_OLD)
    with op.batch_alter_table("predictions") as batch:
        for name, _ in _CHECKS:
            batch.drop_constraint(name, type_="check")
        batch.drop_constraint("predictions_candidate_version_fkey", type_="foreignkey")
        for name in reversed(_NEW_COLUMNS):
            batch.drop_column(name)
