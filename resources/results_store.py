"""Results store: the sweep's tables in a real SQL database (SQLAlchemy Core).

SQLite file under the local Dagster home by default; PostgreSQL when ``CVN_DATABASE_URL`` is
set (``postgresql+psycopg2://...``). Rows are keyed by (sweep_id, crypto, fold, variant) and
written with replace semantics inside one transaction: re-materializing replaces the rows of
the keys it writes, it never duplicates them, and a failure leaves the previous rows intact.

Every row belongs to a registered sweep (foreign key to ``sweeps``, enforced on PostgreSQL and
on SQLite): ``sweeps`` records each sweep id with its identity (settings, definition, data,
code; :mod:`cvn_assets.ablation.identity`), its fingerprint and data source. Registering an existing
id with another identity raises :class:`SweepIdentityConflict` naming what changed.

:class:`ResultsDatabaseResource` is the base of every resource whose tables live in this
database (this store, :class:`~resources.config_store.ConfigStore`,
:class:`~resources.model_registry.ModelRegistry`, :class:`~resources.rollbacks.RollbackLog`,
:class:`~resources.alerts.AlertSink`): one URL resolution and one engine, upgraded to the
newest migration when first opened.
"""

import json
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd
import sqlalchemy as sa
from dagster import ConfigurableResource, InitResourceContext
from pydantic import PrivateAttr

from cvn_assets.ablation.identity import SweepIdentity, describe_diff, identity_diff
from resources.db import database_url, redact_url, shared_engine
from resources.migrations import upgrade_database

METADATA = sa.MetaData()


class SweepIdentityConflict(ValueError):
    """A sweep id is already registered with another identity; the message names the diff."""


class UnknownSweep(LookupError):
    """No sweep is registered under this id."""


sweeps_table = sa.Table(
    "sweeps",
    METADATA,
    sa.Column("sweep_id", sa.String(64), primary_key=True),
    sa.Column("fingerprint", sa.String(16), nullable=False),
    sa.Column("identity_json", sa.Text, nullable=False),
    sa.Column("data_source", sa.String(16), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)


def _sweep_fk() -> sa.ForeignKey:
    return sa.ForeignKey("sweeps.sweep_id", ondelete="CASCADE")


RESULT_KEY = ("sweep_id", "crypto", "fold", "variant")

#: metrics columns of finetune_results, in display order
RESULT_COLUMNS: tuple[tuple[str, Any], ...] = (
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
    ("trading_threshold", sa.Float),
    ("expectancy_trading", sa.Float),
    ("n_trades_trading", sa.Integer),
    ("best_iteration", sa.Integer),
    ("train_seconds", sa.Float),
)

finetune_results_table = sa.Table(
    "finetune_results",
    METADATA,
    sa.Column("sweep_id", sa.String(64), _sweep_fk(), primary_key=True),
    sa.Column("crypto", sa.String(32), primary_key=True),
    sa.Column("fold", sa.Integer, primary_key=True),
    sa.Column("variant", sa.String(64), primary_key=True),
    *(sa.Column(name, typ, nullable=True) for name, typ in RESULT_COLUMNS),
    sa.Column("written_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)

oos_returns_table = sa.Table(
    "oos_returns",
    METADATA,
    sa.Column("sweep_id", sa.String(64), _sweep_fk(), primary_key=True),
    sa.Column("crypto", sa.String(32), primary_key=True),
    sa.Column("fold", sa.Integer, primary_key=True),
    sa.Column("variant", sa.String(64), primary_key=True),
    sa.Column("period", sa.String(32), primary_key=True),
    sa.Column("net_return", sa.Float, nullable=False),
    sa.Column("n_trades", sa.Integer, nullable=False),
)

gate_verdicts_table = sa.Table(
    "gate_verdicts",
    METADATA,
    sa.Column("sweep_id", sa.String(64), _sweep_fk(), primary_key=True),
    sa.Column("variant", sa.String(64), primary_key=True),
    sa.Column("lock", sa.Boolean, nullable=True),
    sa.Column("verdict_json", sa.Text, nullable=False),
    sa.Column("written_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)


class ResultsDatabaseResource(ConfigurableResource):
    """A resource whose tables live in the results-store database.

    ``database_url``: the field, else ``$CVN_DATABASE_URL`` (resolved at use: a run config
    that sets no URL keeps the environment's), else SQLite under ``$DAGSTER_HOME``
    (:func:`resources.db.database_url`). The engine is the process's one for that URL
    (:func:`resources.db.shared_engine`), opened on first use and the schema upgraded to the
    newest migration then (:func:`resources.migrations.upgrade_database`).
    """

    database_url: str = ""

    _engine: sa.Engine | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._engine = None

    @property
    def url(self) -> str:
        return database_url(self.database_url)

    @property
    def url_redacted(self) -> str:
        return redact_url(self.url)

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            # one per URL per process, upgraded (Alembic: create, or upgrade in place, to
            # head) when first opened: not again at every sensor tick's resource init
            self._engine = shared_engine(self.url, upgrade_database)
        return self._engine


class ResultsStore(ResultsDatabaseResource):
    """SQL results store for ``finetune_results``, per-period OOS returns and gate verdicts."""

    # --- sweeps -----------------------------------------------------------------------
    def register_sweep(
        self, sweep_id: str, identity: SweepIdentity, *, replace: bool = False
    ) -> str:
        """Record ``sweep_id`` with its identity; returns ``"new"``, ``"same"`` or ``"replaced"``.

        An id already registered with another identity raises :class:`SweepIdentityConflict`
        naming every changed field, unless ``replace`` is true: then the sweep's rows
        (results, OOS returns, verdicts) are deleted and the new identity recorded, in one
        transaction.
        """
        doc = identity.as_dict()
        record = {
            "sweep_id": sweep_id,
            "fingerprint": identity.fingerprint,
            "identity_json": json.dumps(doc, sort_keys=True),
            "data_source": str(doc["data"].get("source", "?")),
        }
        t = sweeps_table
        for _attempt in range(2):
            old = self.get_sweep(sweep_id)
            if old is None:
                try:
                    with self.engine.begin() as conn:
                        conn.execute(t.insert(), [record])
                    return "new"
                except sa.exc.IntegrityError:  # registered concurrently: compare with it
                    continue
            if old["fingerprint"] == identity.fingerprint:
                return "same"
            diff = identity_diff(old["identity"], doc)
            if not replace:
                raise SweepIdentityConflict(
                    f"sweep id {sweep_id!r} is registered with identity {old['fingerprint']} and "
                    f"this run's identity is {identity.fingerprint}; what changed: "
                    f"{describe_diff(diff)}. Use another --sweep-id (or the sweep resource's "
                    f"sweep_id), or --replace-sweep to drop the old sweep's rows."
                )
            with self.engine.begin() as conn:
                for table in (finetune_results_table, oos_returns_table, gate_verdicts_table):
                    conn.execute(table.delete().where(table.c.sweep_id == sweep_id))
                conn.execute(t.update().where(t.c.sweep_id == sweep_id).values(**record))
            return "replaced"
        raise SweepIdentityConflict(f"sweep id {sweep_id!r}: concurrent registration")

    def get_sweep(self, sweep_id: str) -> dict[str, Any] | None:
        """``{"sweep_id", "fingerprint", "identity", "data_source", "created_at"}`` or None."""
        t = sweeps_table
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t).where(t.c.sweep_id == sweep_id)).mappings().first()
        if row is None:
            return None
        return {**dict(row), "identity": json.loads(row["identity_json"])}

    def list_sweeps(self) -> pd.DataFrame:
        """Every registered sweep with its fingerprint, data source and result row count."""
        t, r = sweeps_table, finetune_results_table
        n_rows = (
            sa.select(sa.func.count())
            .where(r.c.sweep_id == t.c.sweep_id)
            .scalar_subquery()
            .label("result_rows")
        )
        query = sa.select(
            t.c.sweep_id, t.c.fingerprint, t.c.data_source, t.c.created_at, n_rows
        ).order_by(t.c.created_at, t.c.sweep_id)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return pd.DataFrame(
            [dict(x) for x in rows],
            columns=["sweep_id", "fingerprint", "data_source", "created_at", "result_rows"],
        )

    def require_sweep(self, sweep_id: str) -> dict[str, Any]:
        found = self.get_sweep(sweep_id)
        if found is None:
            known = ", ".join(self.list_sweeps()["sweep_id"]) or "none"
            raise UnknownSweep(f"no sweep {sweep_id!r} in {self.url_redacted} (known: {known})")
        return found

    def _require_registered(self, table: sa.Table, sweep_id: str) -> None:
        if self.get_sweep(sweep_id) is None:
            raise UnknownSweep(
                f"{table.name}: sweep {sweep_id!r} is not registered in the results store; "
                "every row belongs to a registered sweep (ResultsStore.register_sweep)"
            )

    # --- finetune_results -------------------------------------------------------------
    def replace_results(self, sweep_id: str, rows: Sequence[dict[str, Any]]) -> int:
        """Upsert rows keyed by (sweep_id, crypto, fold, variant) in one transaction."""
        allowed = set(RESULT_KEY[1:]) | {name for name, _ in RESULT_COLUMNS}
        clean: list[dict[str, Any]] = []
        for i, row in enumerate(rows):
            missing = [k for k in RESULT_KEY[1:] if k not in row]
            if missing:
                raise ValueError(f"finetune_results row {i}: missing key column(s) {missing}")
            unknown = set(row) - allowed
            if unknown:
                raise ValueError(f"finetune_results row {i}: unknown column(s) {sorted(unknown)}")
            clean.append({**{k: _py(v) for k, v in row.items()}, "sweep_id": sweep_id})
        return self._replace_cells(finetune_results_table, sweep_id, clean)

    def load_results(self, sweep_id: str) -> pd.DataFrame:
        t = finetune_results_table
        return self._load_sweep(t, sweep_id, t.c.variant, t.c.crypto, t.c.fold)

    def _replace_cells(self, table: sa.Table, sweep_id: str, records: list[dict[str, Any]]) -> int:
        """Replace the rows of every cell in ``records`` in one transaction (never duplicate)."""
        self._require_registered(table, sweep_id)
        with self.engine.begin() as conn:
            _delete_cells(conn, table, sweep_id, records)
            if records:
                conn.execute(table.insert(), records)
        return len(records)

    def _load_sweep(self, table: sa.Table, sweep_id: str, *order_by: Any) -> pd.DataFrame:
        query = sa.select(table).where(table.c.sweep_id == sweep_id).order_by(*order_by)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return pd.DataFrame([dict(r) for r in rows], columns=[c.name for c in table.columns])

    # --- per-period OOS returns (for PBO) ---------------------------------------------
    def replace_oos_returns(self, sweep_id: str, frame: pd.DataFrame) -> int:
        t = oos_returns_table
        records = [
            {
                "sweep_id": sweep_id,
                "crypto": str(r.crypto),
                "fold": int(r.fold),
                "variant": str(r.variant),
                "period": str(r.period),
                "net_return": float(r.net_return),
                "n_trades": int(r.n_trades),
            }
            for r in frame.itertuples(index=False)
        ]
        return self._replace_cells(t, sweep_id, records)

    def load_oos_returns(self, sweep_id: str) -> pd.DataFrame:
        t = oos_returns_table
        return self._load_sweep(t, sweep_id, t.c.variant, t.c.crypto, t.c.fold, t.c.period)

    # --- gate verdicts ----------------------------------------------------------------
    def replace_verdicts(self, sweep_id: str, verdicts: Iterable[dict[str, Any]]) -> int:
        t = gate_verdicts_table
        records = [
            {
                "sweep_id": sweep_id,
                "variant": str(v["variant"]),
                "lock": None if v.get("lock") is None else bool(v["lock"]),
                "verdict_json": json.dumps({k: _py(x) for k, x in v.items()}, default=str),
            }
            for v in verdicts
        ]
        self._require_registered(t, sweep_id)
        with self.engine.begin() as conn:
            conn.execute(t.delete().where(t.c.sweep_id == sweep_id))
            if records:
                conn.execute(t.insert(), records)
        return len(records)

    def load_verdicts(self, sweep_id: str) -> pd.DataFrame:
        t = gate_verdicts_table
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t).where(t.c.sweep_id == sweep_id)).mappings().all()
        return pd.DataFrame([json.loads(r["verdict_json"]) for r in rows])


def _delete_cells(
    conn: sa.Connection, table: sa.Table, sweep_id: str, rows: Sequence[dict[str, Any]]
) -> None:
    """Delete the rows of every (crypto, fold, variant) cell present in ``rows``."""
    cells = {(str(r["crypto"]), int(r["fold"]), str(r["variant"])) for r in rows}
    for crypto, fold, variant in sorted(cells):
        conn.execute(
            table.delete().where(
                (table.c.sweep_id == sweep_id)
                & (table.c.crypto == crypto)
                & (table.c.fold == fold)
                & (table.c.variant == variant)
            )
        )


def _py(v: Any) -> Any:
    """numpy/pandas scalars -> plain Python (SQL drivers and JSON want builtins; NaN -> None)."""
    if v is None:
        return None
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        v = v.item()
    if isinstance(v, float) and v != v:
        return None
    return v
