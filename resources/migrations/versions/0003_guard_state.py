"""Guard state: config store (kill switch) with its audit, model registry with aliases.

* ``ftf_config``: one row per factor flag (``flag``, ``value``, ``version``, ``updated_at``),
  changed only by compare-and-set on ``version`` (:mod:`resources.config_store`). Seeded with
  ``CVN_LOSS_FUNCTION='focal'`` and ``trading_halted='false'``, version 1, each with its
  ``config_audit`` row (old version 0, actor ``alembic:0003_guard_state``).
* ``config_audit``: one row per change; append-only (triggers refuse UPDATE and DELETE).
* ``model_versions``: every champion candidate (crypto, variant, loss, gamma, alpha,
  training window, sweep, artifact location, reference statistics); unique per
  (crypto, variant, sweep_id, train_end).
* ``model_aliases``: ``champion`` / ``previous`` per crypto -> a model version.
* ``model_alias_history``: one row per alias assignment, valid over ``[valid_from,
  valid_to)`` (``valid_to`` NULL while current; at most one open row per crypto and alias).
  Append-only: triggers refuse DELETE and every UPDATE except closing an open row.

All times are UTC. NB for a later migration: SQLite's ``batch_alter_table`` recreates a
table and drops its triggers; re-create them after altering ``config_audit`` or
``model_alias_history``.

Revision ID: 0003_guard_state
Revises: 0002_sweeps
Create Date: 2025-01-03
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0003_guard_state"
down_revision: str | Sequence[str] | None = "0002_sweeps"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEED = (("CVN_LOSS_FUNCTION", "focal"), ("trading_halted", "false"))
_CLOSE_ONLY = "model_alias_history is append-only: an UPDATE may only close an open row"

_PG_TRIGGERS = (
    """
    CREATE FUNCTION cvn_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP;
    END $$
    """,
    """
    CREATE TRIGGER config_audit_append_only BEFORE UPDATE OR DELETE ON config_audit
    FOR EACH ROW EXECUTE PROCEDURE cvn_append_only()
    """,
    f"""
    CREATE FUNCTION cvn_alias_history_close_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'DELETE' THEN
            RAISE EXCEPTION 'model_alias_history is append-only: DELETE refused';
        END IF;
        IF OLD.valid_to IS NOT NULL OR NEW.valid_to IS NULL
           OR (NEW.id, NEW.crypto, NEW.alias, NEW.version_id, NEW.previous_version_id,
               NEW.actor, NEW.reason, NEW.dagster_run_id, NEW.valid_from)
              IS DISTINCT FROM
              (OLD.id, OLD.crypto, OLD.alias, OLD.version_id, OLD.previous_version_id,
               OLD.actor, OLD.reason, OLD.dagster_run_id, OLD.valid_from)
        THEN
            RAISE EXCEPTION '{_CLOSE_ONLY}';
        END IF;
        RETURN NEW;
    END $$
    """,
    """
    CREATE TRIGGER model_alias_history_close_only BEFORE UPDATE OR DELETE
    ON model_alias_history FOR EACH ROW EXECUTE PROCEDURE cvn_alias_history_close_only()
    """,
)

_SQLITE_TRIGGERS = (
    """
    CREATE TRIGGER config_audit_no_update BEFORE UPDATE ON config_audit
    BEGIN SELECT RAISE(ABORT, 'config_audit is append-only: UPDATE refused'); END
    """,
    """
    CREATE TRIGGER config_audit_no_delete BEFORE DELETE ON config_audit
    BEGIN SELECT RAISE(ABORT, 'config_audit is append-only: DELETE refused'); END
    """,
    """
    CREATE TRIGGER model_alias_history_no_delete BEFORE DELETE ON model_alias_history
    BEGIN SELECT RAISE(ABORT, 'model_alias_history is append-only: DELETE refused'); END
    """,
    f"""
    CREATE TRIGGER model_alias_history_close_only BEFORE UPDATE ON model_alias_history
    WHEN OLD.valid_to IS NOT NULL OR NEW.valid_to IS NULL
        OR NEW.id IS NOT OLD.id OR NEW.crypto IS NOT OLD.crypto OR NEW.alias IS NOT OLD.alias
        OR NEW.version_id IS NOT OLD.version_id
        OR NEW.previous_version_id IS NOT OLD.previous_version_id
        OR NEW.actor IS NOT OLD.actor OR NEW.reason IS NOT OLD.reason
        OR NEW.dagster_run_id IS NOT OLD.dagster_run_id OR NEW.valid_from IS NOT OLD.valid_from
    BEGIN
        SELECT RAISE(ABORT, '{_CLOSE_ONLY}');
    END
    """,
)


def upgrade() -> None:
    ftf_config = op.create_table(
        "ftf_config",
        sa.Column("flag", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint("version >= 1", name="ck_ftf_config_version"),
    )
    config_audit = op.create_table(
        "config_audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("flag", sa.String(64), nullable=False),
        sa.Column("old_value", sa.Text, nullable=True),
        sa.Column("new_value", sa.Text, nullable=False),
        sa.Column("old_version", sa.Integer, nullable=False),
        sa.Column("new_version", sa.Integer, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("incident_id", sa.String(128), nullable=True),
        sa.Column("dagster_run_id", sa.String(64), nullable=True),
        sa.Column(
            "changed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_index("ix_config_audit_flag", "config_audit", ["flag", "id"])
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("crypto", sa.String(32), nullable=False),
        sa.Column("variant", sa.String(64), nullable=False),
        sa.Column("loss_function", sa.String(32), nullable=False),
        sa.Column("gamma", sa.Float, nullable=True),
        sa.Column("alpha", sa.Float, nullable=True),
        sa.Column("train_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("train_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "sweep_id",
            sa.String(64),
            sa.ForeignKey("sweeps.sweep_id", name="model_versions_sweep_id_fkey"),
            nullable=False,
        ),
        sa.Column("artifact_uri", sa.Text, nullable=False),
        sa.Column("reference_stats_json", sa.Text, nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.UniqueConstraint(
            "crypto", "variant", "sweep_id", "train_end", name="uq_model_versions_candidate"
        ),
    )
    op.create_table(
        "model_aliases",
        sa.Column("crypto", sa.String(32), primary_key=True),
        sa.Column("alias", sa.String(16), primary_key=True),
        sa.Column(
            "version_id",
            sa.Integer,
            sa.ForeignKey("model_versions.id", name="model_aliases_version_id_fkey"),
            nullable=False,
        ),
        sa.CheckConstraint("alias IN ('champion', 'previous')", name="ck_model_aliases_alias"),
    )
    op.create_table(
        "model_alias_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("crypto", sa.String(32), nullable=False),
        sa.Column("alias", sa.String(16), nullable=False),
        sa.Column(
            "version_id",
            sa.Integer,
            sa.ForeignKey("model_versions.id", name="model_alias_history_version_id_fkey"),
            nullable=False,
        ),
        sa.Column(
            "previous_version_id",
            sa.Integer,
            sa.ForeignKey("model_versions.id", name="model_alias_history_previous_version_id_fkey"),
            nullable=True,
        ),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("dagster_run_id", sa.String(64), nullable=True),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_to", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "valid_to IS NULL OR valid_to >= valid_from", name="ck_model_alias_history_interval"
        ),
    )
    op.create_index(
        "ix_model_alias_history_lookup", "model_alias_history", ["crypto", "alias", "valid_from"]
    )
    op.create_index(
        "uq_model_alias_history_open",
        "model_alias_history",
        ["crypto", "alias"],
        unique=True,
        postgresql_where=sa.text("valid_to IS NULL"),
        sqlite_where=sa.text("valid_to IS NULL"),
    )

    now = datetime.now(UTC)
    op.bulk_insert(
        ftf_config, [{"flag": f, "value": v, "version": 1, "updated_at": now} for f, v in SEED]
    )
    op.bulk_insert(
        config_audit,
        [
            {
                "flag": f,
                "old_value": None,
                "new_value": v,
                "old_version": 0,
                "new_version": 1,
                "actor": f"alembic:{revision}",
                "reason": "initial value",
                "changed_at": now,
            }
            for f, v in SEED
        ],
    )
    dialect = op.get_bind().dialect.name
    triggers = {"postgresql": _PG_TRIGGERS, "sqlite": _SQLITE_TRIGGERS}.get(dialect, ())
    for ddl in triggers:
        op.execute(ddl)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for name in ("model_alias_history", "model_aliases", "model_versions"):
        op.drop_table(name)
    op.drop_index("ix_config_audit_flag", table_name="config_audit")
    for name in ("config_audit", "ftf_config"):
        op.drop_table(name)
    if dialect == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS cvn_alias_history_close_only()")
        op.execute("DROP FUNCTION IF EXISTS cvn_append_only()")
