"""Paper-trading journal: ``predictions`` and ``trades`` (migration ``0005_journal``).

The rows are those of :mod:`cvn_assets.guard.paper` (``PREDICTION_COLUMNS``, ``TRADE_COLUMNS``):

* ``predictions``: one row per crypto and hour (primary key): the model version live at that
  hour (a ``model_versions`` id) and its loss function, ``buy_proba``, ``decision`` (``BUY`` |
  ``HOLD``: the model's signal) and the decision latency in ms (NULL when not measured).
* ``trades``: one row per closed trade, unique per (crypto, entry_time): entry and exit time
  and price, ``barrier`` (``tp`` | ``sl`` | ``time`` | ``halt``), gross and net return, the model
  version that decided the entry and its loss function.

A replay journals one day at a time, and replaying a day again must leave exactly its rows:
:func:`replace_day` deletes the day's rows of a crypto (``predictions`` by ``hour``, ``trades``
by ``exit_time``: a trade belongs to the day it exits, as in the replay) and inserts the new
ones in one transaction. :func:`read_trades` reads a crypto's trades whose ``exit_time`` is in
a window (what the canary rule of :func:`cvn_assets.guard.champion.canary_passed` reads).
:func:`replace_days` replaces several days of both tables in one transaction (what the
``paper_trades`` asset calls: a ``kill -9`` during a run leaves the journal as it was before).

The guard sensors' window reads (:mod:`sensors.evaluation`), on a connection the caller holds
for one evaluation: :func:`read_model_trades` (one model version's trades exiting in a
window, as a :class:`TradeWindow`) and :func:`read_model_predictions` (one model version's
prediction rows whose candle closed by the evaluation time).

Times: every time column is a :class:`resources.db.UTCDateTime` (bound converted to UTC, read
back aware UTC on SQLite and PostgreSQL alike); a time argument (``start``, ``end``) or a time
column of the rows given with no UTC offset is refused (ValueError naming it and the value)
before anything is read or written. A ``day`` is a UTC calendar date (``YYYY-MM-DD``, a
``date``, or a UTC midnight).

``monitoring_metrics`` (migration ``0006_monitoring``): one row per (crypto, day), the flat row
of :func:`cvn_assets.guard.monitoring.metrics_row` (``MONITORING_COLUMNS``); written by
:func:`replace_monitoring_row`, read by :func:`read_monitoring`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from resources.db import UTCDateTime, as_utc, utc_index, utc_param, write_transaction
from resources.model_registry import model_versions_table

__all__ = [
    "JOURNAL_METADATA",
    "MODEL_PREDICTION_COLUMNS",
    "N_TOP_FEATURES",
    "TradeWindow",
    "monitoring_metrics_table",
    "predictions_table",
    "read_model_predictions",
    "read_model_trades",
    "read_monitoring",
    "read_predictions",
    "read_trades",
    "last_journaled_hours",
    "replace_day",
    "replace_days",
    "replace_hours",
    "replace_monitoring_row",
    "trades_table",
]

WRITE_WAIT_MS = 30_000

JOURNAL_METADATA = sa.MetaData()
#: ``predictions.feature_1 .. feature_N``: the live model's top features by gain (0007); the
#: schema's copy of :data:`cvn_assets.guard.live_model.N_TOP_FEATURES` (the migration fixed it
#: at 5), not imported from there: cvn_assets.guard.live_model pulls XGBoost and SciPy (+1.9 s
#: measured for guard.paper on top of this module's import)
N_TOP_FEATURES = 5


def _version_fk(table: str) -> sa.ForeignKey:
    return sa.ForeignKey(model_versions_table.c.id, name=f"{table}_model_version_fkey")


predictions_table = sa.Table(
    "predictions",
    JOURNAL_METADATA,
    sa.Column("crypto", sa.String(32), primary_key=True),
    sa.Column("hour", UTCDateTime("predictions.hour"), primary_key=True),
    sa.Column("model_version", sa.Integer, _version_fk("predictions"), nullable=False),
    sa.Column("loss_function", sa.String(32), nullable=False),
    sa.Column("buy_proba", sa.Float, nullable=False),
    sa.Column("decision", sa.String(4), nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=True),
    *[sa.Column(f"feature_{i}", sa.Float, nullable=True) for i in range(1, N_TOP_FEATURES + 1)],
    sa.Column("label", sa.SmallInteger, nullable=True),
    sa.Column("label_known_at", UTCDateTime("predictions.label_known_at"), nullable=True),
    sa.Column(
        "candidate_version",
        sa.Integer,
        sa.ForeignKey(model_versions_table.c.id, name="predictions_candidate_version_fkey"),
        nullable=True,
    ),
    sa.Column("candidate_buy_proba", sa.Float, nullable=True),
    sa.Column("candidate_decision", sa.String(4), nullable=True),
    sa.CheckConstraint("decision IN ('BUY', 'HOLD')", name="ck_predictions_decision"),
    sa.CheckConstraint("buy_proba >= 0 AND buy_proba <= 1", name="ck_predictions_buy_proba"),
    sa.CheckConstraint("label IS NULL OR label IN (0, 1)", name="ck_predictions_label"),
    sa.CheckConstraint(
        "(label IS NULL AND label_known_at IS NULL) "
        "OR (label IS NOT NULL AND label_known_at IS NOT NULL)",
        name="ck_predictions_label_known",
    ),
    sa.CheckConstraint(
        "candidate_decision IS NULL OR candidate_decision IN ('BUY', 'HOLD')",
        name="ck_predictions_candidate_decision",
    ),
    sa.CheckConstraint(
        "candidate_buy_proba IS NULL OR (candidate_buy_proba >= 0 AND candidate_buy_proba <= 1)",
        name="ck_predictions_candidate_buy_proba",
    ),
    sa.CheckConstraint(
        "(candidate_version IS NULL AND candidate_buy_proba IS NULL "
        "AND candidate_decision IS NULL) OR (candidate_version IS NOT NULL "
        "AND candidate_buy_proba IS NOT NULL AND candidate_decision IS NOT NULL)",
        name="ck_predictions_candidate",
    ),
)

trades_table = sa.Table(
    "trades",
    JOURNAL_METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("crypto", sa.String(32), nullable=False),
    sa.Column("entry_time", UTCDateTime("trades.entry_time"), nullable=False),
    sa.Column("entry_price", sa.Float, nullable=False),
    sa.Column("exit_time", UTCDateTime("trades.exit_time"), nullable=False),
    sa.Column("exit_price", sa.Float, nullable=False),
    sa.Column("barrier", sa.String(8), nullable=False),
    sa.Column("gross_return", sa.Float, nullable=False),
    sa.Column("net_return", sa.Float, nullable=False),
    sa.Column("model_version", sa.Integer, _version_fk("trades"), nullable=False),
    sa.Column("loss_function", sa.String(32), nullable=False),
    sa.UniqueConstraint("crypto", "entry_time", name="uq_trades_entry"),
    sa.CheckConstraint("barrier IN ('tp', 'sl', 'time', 'halt')", name="ck_trades_barrier"),
    sa.CheckConstraint("exit_time >= entry_time", name="ck_trades_times"),
    sa.Index("ix_trades_crypto_exit", "crypto", "exit_time"),
)

_MONITORING_INT = (
    "training_failed_binary_logistic_1h",
    "training_failed_binary_logistic_24h",
    "training_failed_focal_1h",
    "training_failed_focal_24h",
    "training_failed_other_1h",
    "training_failed_other_24h",
)
monitoring_metrics_table = sa.Table(
    "monitoring_metrics",
    JOURNAL_METADATA,
    sa.Column("crypto", sa.String(32), primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("as_of_utc", UTCDateTime("monitoring_metrics.as_of_utc"), nullable=False),
    *[sa.Column(c, sa.Integer, nullable=False) for c in _MONITORING_INT],
    sa.Column("loss_function", sa.String(32), nullable=False),
    sa.Column("focal_loss_active", sa.Integer, nullable=False),
    sa.Column("focal_gamma", sa.Float, nullable=True),
    sa.Column("focal_alpha", sa.Float, nullable=True),
    *[sa.Column(f"buy_proba_{q}", sa.Float, nullable=True) for q in ("p05", "p25", "p50")],
    *[sa.Column(f"buy_proba_{q}", sa.Float, nullable=True) for q in ("p75", "p95")],
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

#: the column a day's rows are selected by, per table
_DAY_COLUMN = {"predictions": "hour", "trades": "exit_time"}
_TIME_COLUMNS = {
    "predictions": ("hour", "label_known_at"),
    "trades": ("entry_time", "exit_time"),
}
_NAT = np.iinfo(np.int64).min  # NaT as int64 nanoseconds
#: nullable integer columns, read as pandas' nullable dtypes (as the replay writes them)
_NULLABLE_INT = {"predictions": {"label": "Int8", "candidate_version": "Int64"}}


def _day_bounds(day: Any) -> tuple[datetime, datetime]:
    ts = pd.Timestamp(day)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    if ts != ts.normalize():
        raise ValueError(f"day {day!r} is not a UTC midnight")
    start = ts.to_pydatetime()
    return start, start + timedelta(days=1)


class _Batch:
    """Rows for one journal table, column-wise: ``values[name]`` is a list of Python values
    (NaN / NA -> None), ``times[name]`` the int64 UTC nanoseconds of each time column (NaT,
    allowed in a nullable one, stored as NULL). Nullable columns absent from the rows are
    NULL."""

    def __init__(self, table: sa.Table, crypto: str, rows: pd.DataFrame | list[dict[str, Any]]):
        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
        self.table = table
        self.names = [c.name for c in table.columns if c.name != "id"]
        self.n = 0 if frame is None else len(frame)
        self.values: dict[str, list[Any]] = {}
        self.times: dict[str, np.ndarray] = {}
        if self.n == 0:
            return
        missing = [c for c in self.names if c not in frame.columns and not table.c[c].nullable]
        if missing:
            raise ValueError(f"{table.name}: rows lack column(s) {missing}")
        if "crypto" in frame.columns:
            other = frame.loc[frame["crypto"] != crypto, "crypto"]
            if len(other):
                raise ValueError(f"{table.name}: a row of {other.iloc[0]!r} in {crypto!r}'s day")
        for c in self.names:
            if c == "crypto":
                self.values[c] = [crypto] * self.n
            elif c not in frame.columns:
                self.values[c] = [None] * self.n
            elif c in _TIME_COLUMNS[table.name]:
                t = utc_index(f"{table.name}.{c}", frame[c])
                if t.isna().any() and not table.c[c].nullable:
                    raise ValueError(
                        f"{table.name}: {c} is missing in row {int(t.isna().argmax())}"
                    )
                self.times[c] = pd.DatetimeIndex(t).as_unit("ns").asi8
            else:
                col = frame[c]
                if col.dtype.kind in "fcO" or col.hasnans:
                    self.values[c] = col.astype(object).where(col.notna(), None).tolist()
                else:
                    self.values[c] = col.tolist()

    def outside(self, column: str, bounds: list[tuple[datetime, datetime]]) -> str | None:
        """ISO time of the first ``column`` value outside every ``[lo, hi)`` bound, else None."""
        if self.n == 0:
            return None
        spans = sorted(bounds)
        lo = np.array([pd.Timestamp(a).value for a, _ in spans], dtype=np.int64)
        hi = np.array([pd.Timestamp(b).value for _, b in spans], dtype=np.int64)
        t = self.times[column]
        k = np.searchsorted(lo, t, side="right") - 1
        inside = (k >= 0) & (t < hi[np.clip(k, 0, None)])
        bad = np.flatnonzero(~inside)
        if not bad.size:
            return None
        return pd.Timestamp(int(t[bad[0]]), tz="UTC").isoformat()

    def insert(self, conn: sa.Connection) -> None:
        """Insert the rows. On SQLite, straight through the driver with the time columns in
        SQLAlchemy's own SQLite ``DateTime`` storage format (``YYYY-MM-DD HH:MM:SS.ffffff``,
        UTC), so reads through SQLAlchemy see exactly what a Core insert would have written
        (tested), at a fraction of the per-row cost; elsewhere a Core executemany (batched
        ``insertmanyvalues``) with aware UTC datetimes."""
        if self.n == 0:
            return
        if conn.dialect.name == "sqlite":
            cols = {**self.values, **{c: _sqlite_times(t) for c, t in self.times.items()}}
            names = ", ".join(self.names)
            marks = ", ".join("?" * len(self.names))
            rows = list(zip(*(cols[c] for c in self.names), strict=True))
            conn.exec_driver_sql(f"INSERT INTO {self.table.name} ({names}) VALUES ({marks})", rows)
            return
        cols = {**self.values, **{c: _aware_times(t) for c, t in self.times.items()}}
        records = [
            dict(zip(self.names, r, strict=True))
            for r in zip(*(cols[c] for c in self.names), strict=True)
        ]
        conn.execute(self.table.insert(), records)


def _sqlite_times(ns: np.ndarray) -> list[str | None]:
    """int64 UTC nanoseconds -> SQLAlchemy's SQLite DateTime text (microsecond precision);
    NaT -> None."""
    text = np.datetime_as_string(ns.view("datetime64[ns]"), unit="us")
    out: list[str | None] = np.char.replace(text, "T", " ").tolist()
    nat = ns == _NAT
    if nat.any():
        for i in np.flatnonzero(nat).tolist():
            out[i] = None
    return out


def _aware_times(ns: np.ndarray) -> list[datetime | None]:
    times = pd.to_datetime(ns, utc=True)
    out: list[datetime | None] = list(times.to_pydatetime())
    nat = ns == _NAT
    if nat.any():
        for i in np.flatnonzero(nat).tolist():
            out[i] = None
    return out


def replace_day(
    engine: sa.Engine,
    table: sa.Table,
    crypto: str,
    day: Any,
    rows: pd.DataFrame | list[dict[str, Any]],
) -> int:
    """Replace ``crypto``'s rows of the UTC ``day`` in ``table`` (``predictions_table`` by
    ``hour``, ``trades_table`` by ``exit_time``) with ``rows``, in one transaction; returns
    the number inserted. A row outside the day is refused (ValueError naming it)."""
    if table.name not in _DAY_COLUMN:
        raise ValueError(f"not a journal table: {table.name!r}")
    lo, hi = _day_bounds(day)
    col = table.c[_DAY_COLUMN[table.name]]
    batch = _Batch(table, crypto, rows)
    bad = batch.outside(col.name, [(lo, hi)])
    if bad is not None:
        raise ValueError(
            f"{table.name}: {col.name} {bad} is outside the day {lo.date().isoformat()}"
        )
    with write_transaction(engine, busy_timeout_ms=WRITE_WAIT_MS) as conn:
        conn.execute(table.delete().where((table.c.crypto == crypto) & (col >= lo) & (col < hi)))
        batch.insert(conn)
    return batch.n


def _read(engine: sa.Engine, table: sa.Table, crypto: str, start: Any, end: Any) -> pd.DataFrame:
    col = table.c[_DAY_COLUMN[table.name]]
    lo, hi = utc_param("start", start), utc_param("end", end)
    query = (
        sa.select(*[c for c in table.columns if c.name != "id"])
        .where((table.c.crypto == crypto) & (col >= lo) & (col <= hi))
        .order_by(col)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    cols = [c.name for c in table.columns if c.name != "id"]
    frame = pd.DataFrame([dict(r) for r in rows], columns=cols)
    for c in _TIME_COLUMNS[table.name]:
        frame[c] = pd.to_datetime(frame[c], utc=True)
    for c, dtype in _NULLABLE_INT.get(table.name, {}).items():
        frame[c] = frame[c].astype(dtype)
    return frame


def read_trades(engine: sa.Engine, crypto: str, start: Any, end: Any) -> pd.DataFrame:
    """``crypto``'s trades whose ``exit_time`` is in ``[start, end]`` (aware times or ISO text
    with an offset, converted to UTC; naive: ValueError naming ``start`` / ``end``), by exit
    time; columns as :data:`cvn_assets.guard.paper.TRADE_COLUMNS`, times aware UTC."""
    return _read(engine, trades_table, crypto, start, end)


def read_predictions(engine: sa.Engine, crypto: str, start: Any, end: Any) -> pd.DataFrame:
    """``crypto``'s predictions whose ``hour`` is in ``[start, end]`` (aware; naive refused, as
    :func:`read_trades`), by hour; columns as
    :data:`cvn_assets.guard.paper.PREDICTION_COLUMNS` (``hour``, ``label_known_at`` aware UTC,
    NaT when NULL; ``label`` Int8 and ``candidate_version`` Int64, NA when NULL)."""
    return _read(engine, predictions_table, crypto, start, end)


def last_journaled_hours(
    engine: sa.Engine, cryptos: list[str] | tuple[str, ...] | None = None
) -> dict[str, pd.Timestamp | None]:
    """The last journaled ``predictions.hour`` (candle open time, aware UTC) per crypto, None
    for a crypto with no row; ``cryptos`` None: every crypto in the journal. One indexed
    ``MAX`` per crypto (the primary key is ``(crypto, hour)``): its cost does not grow with
    the journal."""
    t = predictions_table
    with engine.connect() as conn:
        if cryptos is None:
            cryptos = sorted(r[0] for r in conn.execute(sa.select(t.c.crypto).distinct()))
        out: dict[str, pd.Timestamp | None] = {}
        for c in cryptos:
            last = conn.execute(
                sa.select(sa.func.max(t.c.hour, type_=t.c.hour.type)).where(t.c.crypto == c)
            ).scalar()
            out[c] = None if last is None else pd.Timestamp(as_utc(last))
    return out


# --- the guard sensors' window reads ------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TradeWindow:
    """One model version's trades in a window, oldest exit first: ``net_returns`` (float64,
    fractions, shape ``(n,)``) and ``exit_times`` (aware UTC, ``n`` of them)."""

    net_returns: np.ndarray
    exit_times: list[datetime]

    @property
    def n(self) -> int:
        return int(self.net_returns.size)


def read_model_trades(
    conn: sa.Connection, crypto: str, model_version: int, after: datetime, until: datetime
) -> TradeWindow:
    """``crypto``'s trades decided by ``model_version`` (a ``model_versions`` id) whose
    ``exit_time`` is in ``(after, until]`` (aware times; a naive one is refused by the column
    type, ValueError naming ``trades.exit_time``), oldest exit first."""
    t = trades_table
    q = (
        sa.select(t.c.net_return, t.c.exit_time)
        .where(
            (t.c.crypto == crypto)
            & (t.c.model_version == model_version)
            & (t.c.exit_time > after)
            & (t.c.exit_time <= until)
        )
        .order_by(t.c.exit_time)
    )
    rows = conn.execute(q).all()
    return TradeWindow(
        np.array([r[0] for r in rows], dtype=np.float64), [as_utc(r[1]) for r in rows]
    )


#: the columns of :func:`read_model_predictions`, in order
MODEL_PREDICTION_COLUMNS = (
    "hour",
    "buy_proba",
    *(f"feature_{i}" for i in range(1, N_TOP_FEATURES + 1)),
    "label",
    "label_known_at",
)


def read_model_predictions(
    conn: sa.Connection, crypto: str, model_version: int, start: datetime, as_of: datetime
) -> pd.DataFrame:
    """``crypto``'s prediction rows made by ``model_version`` whose ``hour`` is in
    ``[start, as_of - 1 h]`` (the hour's candle has closed by ``as_of``; aware times, a naive
    one refused by the column type, ValueError naming ``predictions.hour``), in the
    database's order (unsorted).

    Columns :data:`MODEL_PREDICTION_COLUMNS`: ``hour`` and ``label_known_at`` as UTC
    ``datetime64`` (NaT when NULL), ``buy_proba`` and ``feature_1..5`` floats (None/NaN when
    NULL), ``label`` 0/1 (None/NaN before it matured). The caller filters on
    ``label_known_at``: a label is known only from that time."""
    t = predictions_table
    cols = [t.c[name] for name in MODEL_PREDICTION_COLUMNS]
    q = sa.select(*cols).where(
        (t.c.crypto == crypto)
        & (t.c.model_version == model_version)
        & (t.c.hour >= start)
        & (t.c.hour <= as_of - timedelta(hours=1))  # the hour's candle has closed
    )
    rows = conn.execute(q).all()
    frame = pd.DataFrame(rows, columns=list(MODEL_PREDICTION_COLUMNS))
    for c in ("hour", "label_known_at"):
        frame[c] = pd.to_datetime(frame[c], utc=True)
    return frame


def replace_days(
    engine: sa.Engine,
    crypto: str,
    days: list[Any],
    predictions: pd.DataFrame,
    trades: pd.DataFrame,
    *,
    label_updates: pd.DataFrame | None = None,
    on_write: Callable[[sa.Connection], None] | None = None,
) -> tuple[int, int]:
    """Replace ``crypto``'s ``predictions`` (by ``hour``) and ``trades`` (by ``exit_time``) of
    every UTC day of ``days`` with the given rows, all in **one** transaction (a crash leaves
    the journal as it was). Rows outside the days are refused. Returns (predictions, trades)
    inserted.

    ``label_updates`` (columns ``hour``, ``label``, ``label_known_at``; hours outside
    ``days``): labels resolved since their rows were journaled (the last hours of an earlier
    day); written, in the same transaction, into the rows of those hours whose ``label`` is
    still NULL (a journaled label is never changed; a missing row is skipped).
    ``on_write(conn)``: more writes in the same transaction (the live state)."""
    return _replace(
        engine, crypto, [_day_bounds(d) for d in days], predictions, trades, label_updates,
        on_write, "days",
    )  # fmt: skip


def replace_hours(
    engine: sa.Engine,
    crypto: str,
    first_hour: Any,
    last_hour: Any,
    predictions: pd.DataFrame,
    trades: pd.DataFrame,
    *,
    label_updates: pd.DataFrame | None = None,
    on_write: Callable[[sa.Connection], None] | None = None,
) -> tuple[int, int]:
    """:func:`replace_days` for the hours ``first_hour .. last_hour`` (candle open times,
    inclusive): the live loop's write of the hours it journals, ``predictions`` by ``hour``
    and ``trades`` by ``exit_time`` in that range, label updates (hours before it) and
    ``on_write`` in one transaction."""
    lo = utc_param("first_hour", first_hour)
    hi = utc_param("last_hour", last_hour)
    if hi < lo:
        raise ValueError(f"last_hour {hi.isoformat()} is before first_hour {lo.isoformat()}")
    return _replace(
        engine, crypto, [(lo, hi + timedelta(hours=1))], predictions, trades, label_updates,
        on_write, "hours",
    )  # fmt: skip


def _replace(
    engine: sa.Engine,
    crypto: str,
    bounds: list[tuple[datetime, datetime]],
    predictions: pd.DataFrame,
    trades: pd.DataFrame,
    label_updates: pd.DataFrame | None,
    on_write: Callable[[sa.Connection], None] | None,
    what: str,
) -> tuple[int, int]:
    batches = []
    for table, rows in ((predictions_table, predictions), (trades_table, trades)):
        col = table.c[_DAY_COLUMN[table.name]]
        batch = _Batch(table, crypto, rows)
        bad = batch.outside(col.name, bounds)
        if bad is not None:
            raise ValueError(f"{table.name}: {col.name} {bad} is outside the {what} being replaced")
        batches.append((table, col, batch))
    spans: list[tuple[datetime, datetime]] = []  # contiguous days merged: one DELETE each
    for lo, hi in sorted(bounds):
        if spans and lo <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(hi, spans[-1][1]))
        else:
            spans.append((lo, hi))
    updates = _label_updates(crypto, label_updates, bounds)
    with write_transaction(engine, busy_timeout_ms=WRITE_WAIT_MS) as conn:
        for table, col, batch in batches:
            for lo, hi in spans:
                conn.execute(
                    table.delete().where((table.c.crypto == crypto) & (col >= lo) & (col < hi))
                )
            batch.insert(conn)
        if updates:
            t = predictions_table
            conn.execute(
                t.update()
                .where(
                    (t.c.crypto == sa.bindparam("b_crypto"))
                    & (t.c.hour == sa.bindparam("b_hour"))
                    & t.c.label.is_(None)
                )
                .values(label=sa.bindparam("b_label"), label_known_at=sa.bindparam("b_known")),
                updates,
            )
        if on_write is not None:
            on_write(conn)
    return batches[0][2].n, batches[1][2].n


def _label_updates(
    crypto: str, rows: pd.DataFrame | None, bounds: list[tuple[datetime, datetime]]
) -> list[dict[str, Any]]:
    """Parameter rows of the label UPDATE; refuses an hour inside the replaced days and a
    label that is not 0/1 with its time."""
    if rows is None or len(rows) == 0:
        return []
    missing = [c for c in ("hour", "label", "label_known_at") if c not in rows.columns]
    if missing:
        raise ValueError(f"label_updates lack column(s) {missing}")
    hours = utc_index("label_updates.hour", rows["hour"])
    known = utc_index("label_updates.label_known_at", rows["label_known_at"])
    labels = rows["label"].astype(object).tolist()
    out = []
    for h, lab, k in zip(hours, labels, known, strict=True):
        if any(lo <= h.to_pydatetime() < hi for lo, hi in bounds):
            raise ValueError(f"label_updates: hour {h.isoformat()} is in a day being replaced")
        if pd.isna(lab) or pd.isna(k) or int(lab) not in (0, 1):
            raise ValueError(f"label_updates: hour {h.isoformat()} has label {lab!r} at {k!r}")
        out.append(
            {
                "b_crypto": crypto,
                "b_hour": h.to_pydatetime(),
                "b_label": int(lab),
                "b_known": k.to_pydatetime(),
            }
        )
    return out


def replace_monitoring_row(engine: sa.Engine, row: dict[str, Any]) -> None:
    """Write one :func:`cvn_assets.guard.monitoring.metrics_row` dict as the (crypto, day) row of
    ``monitoring_metrics``, replacing an earlier one (one transaction)."""
    t = monitoring_metrics_table
    rec = {c.name: row[c.name] for c in t.columns}
    rec["day"] = pd.Timestamp(rec["day"]).date()
    rec["as_of_utc"] = utc_param("monitoring_metrics.as_of_utc", rec["as_of_utc"])
    with write_transaction(engine, busy_timeout_ms=WRITE_WAIT_MS) as conn:
        conn.execute(t.delete().where((t.c.crypto == rec["crypto"]) & (t.c.day == rec["day"])))
        conn.execute(t.insert().values(**rec))


def read_monitoring(engine: sa.Engine, crypto: str | None = None) -> pd.DataFrame:
    """``monitoring_metrics`` rows (of ``crypto``, or all), by crypto and day."""
    t = monitoring_metrics_table
    query = sa.select(t).order_by(t.c.crypto, t.c.day)
    if crypto is not None:
        query = query.where(t.c.crypto == crypto)
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    return pd.DataFrame([dict(r) for r in rows], columns=[c.name for c in t.columns])
