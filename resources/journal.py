"""Paper-trading journal: ``predictions`` and ``trades`` (migration ``0005_journal``).

The rows are those of :mod:`cvn_assets.paper` (``PREDICTION_COLUMNS``, ``TRADE_COLUMNS``):

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
a window (what the canary rule of :func:`cvn_assets.champion.canary_passed` reads).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import sqlalchemy as sa

from resources.db import as_utc, write_transaction
from resources.model_registry import model_versions_table

__all__ = [
    "JOURNAL_METADATA",
    "predictions_table",
    "read_predictions",
    "read_trades",
    "replace_day",
    "trades_table",
]

WRITE_WAIT_MS = 30_000

JOURNAL_METADATA = sa.MetaData()


def _version_fk(table: str) -> sa.ForeignKey:
    return sa.ForeignKey(model_versions_table.c.id, name=f"{table}_model_version_fkey")


predictions_table = sa.Table(
    "predictions",
    JOURNAL_METADATA,
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

trades_table = sa.Table(
    "trades",
    JOURNAL_METADATA,
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
    sa.Index("ix_trades_crypto_exit", "crypto", "exit_time"),
)

#: the column a day's rows are selected by, per table
_DAY_COLUMN = {"predictions": "hour", "trades": "exit_time"}
_TIME_COLUMNS = {"predictions": ("hour",), "trades": ("entry_time", "exit_time")}


def _day_bounds(day: Any) -> tuple[datetime, datetime]:
    ts = pd.Timestamp(day)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    if ts != ts.normalize():
        raise ValueError(f"day {day!r} is not a UTC midnight")
    start = ts.to_pydatetime()
    return start, start + timedelta(days=1)


def _records(table: sa.Table, crypto: str, rows: pd.DataFrame | list[dict[str, Any]]) -> list:
    frame = pd.DataFrame(rows)
    cols = [c.name for c in table.columns if c.name != "id"]
    if frame.empty:
        return []
    missing = [c for c in cols if c not in frame.columns and not table.c[c].nullable]
    if missing:
        raise ValueError(f"{table.name}: rows lack column(s) {missing}")
    out = []
    for rec in frame.to_dict("records"):
        if rec.get("crypto", crypto) != crypto:
            raise ValueError(f"{table.name}: a row of {rec['crypto']!r} in {crypto!r}'s day")
        row = {c: rec.get(c) for c in cols}
        row["crypto"] = crypto
        for c in _TIME_COLUMNS[table.name]:
            row[c] = as_utc(pd.Timestamp(row[c]).to_pydatetime())
        for c, v in row.items():
            if isinstance(v, float) and v != v:  # NaN -> NULL (latency not measured)
                row[c] = None
            elif hasattr(v, "item"):
                row[c] = v.item()
        out.append(row)
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
    records = _records(table, crypto, rows)
    for r in records:
        when = r[col.name]
        if not lo <= when < hi:
            raise ValueError(
                f"{table.name}: {col.name} {when.isoformat()} is outside the day "
                f"{lo.date().isoformat()}"
            )
    with write_transaction(engine, busy_timeout_ms=WRITE_WAIT_MS) as conn:
        conn.execute(table.delete().where((table.c.crypto == crypto) & (col >= lo) & (col < hi)))
        if records:
            conn.execute(table.insert(), records)
    return len(records)


def _read(engine: sa.Engine, table: sa.Table, crypto: str, start: Any, end: Any) -> pd.DataFrame:
    col = table.c[_DAY_COLUMN[table.name]]
    lo = as_utc(pd.Timestamp(start).to_pydatetime())
    hi = as_utc(pd.Timestamp(end).to_pydatetime())
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
    return frame


def read_trades(engine: sa.Engine, crypto: str, start: Any, end: Any) -> pd.DataFrame:
    """``crypto``'s trades whose ``exit_time`` is in ``[start, end]`` (UTC; naive = UTC), by
    exit time; columns as :data:`cvn_assets.paper.TRADE_COLUMNS`, times aware UTC."""
    return _read(engine, trades_table, crypto, start, end)


def read_predictions(engine: sa.Engine, crypto: str, start: Any, end: Any) -> pd.DataFrame:
    """``crypto``'s predictions whose ``hour`` is in ``[start, end]``, by hour."""
    return _read(engine, predictions_table, crypto, start, end)
