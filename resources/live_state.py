"""The live loop's stored state (migration ``0010_live_state``): where each crypto's journal
stands, so a live hour starts from there instead of replaying from the first champion.

``live_state`` (one row per crypto): ``last_hour`` (open time of the last journaled candle),
the position still open after it (``position``: the fields of
:class:`cvn_assets.guard.paper.Position` as JSON, None when flat), and the decision latency
measured per model version (``latency_ms``: ``{version: ms}``, measured once per version).
It is written by :func:`write_state_in` **inside** the transaction that journals the hours
(:func:`resources.journal.replace_hours` / ``replace_days`` ``on_write=``), so the journal and
the state never disagree after a crash.

``live_events``: what the live loop journals beside an hour's rows (``kind``, ``message``),
e.g. ``flags_unreadable``: the kill-switch flags could not be read, so no position was
opened in those hours (spec 6.4's fail-safe).

Times are aware UTC (:class:`resources.db.UTCDateTime`); a naive time is refused naming the
column.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa

from resources.db import UTCDateTime, as_utc, utc_param

__all__ = [
    "LIVE_METADATA",
    "LiveState",
    "live_events_table",
    "live_state_table",
    "read_events",
    "read_live_state",
    "record_event_in",
    "write_state_in",
]

LIVE_METADATA = sa.MetaData()

live_state_table = sa.Table(
    "live_state",
    LIVE_METADATA,
    sa.Column("crypto", sa.String(32), primary_key=True),
    sa.Column("last_hour", UTCDateTime("live_state.last_hour"), nullable=False),
    sa.Column("position_json", sa.Text, nullable=True),
    sa.Column("latency_json", sa.Text, nullable=False),
    sa.Column("updated_at", UTCDateTime("live_state.updated_at"), nullable=False),
    sa.Column("dagster_run_id", sa.String(64), nullable=True),
)

live_events_table = sa.Table(
    "live_events",
    LIVE_METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("crypto", sa.String(32), nullable=False),
    sa.Column("first_hour", UTCDateTime("live_events.first_hour"), nullable=False),
    sa.Column("last_hour", UTCDateTime("live_events.last_hour"), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("at", UTCDateTime("live_events.at"), nullable=False),
    sa.Column("dagster_run_id", sa.String(64), nullable=True),
    sa.Index("ix_live_events_crypto_hour", "crypto", "last_hour"),
)

_POSITION_TIMES = ("entry_time", "last_hour")


@dataclass(frozen=True)
class LiveState:
    """A crypto's stored live state: ``last_hour`` (aware UTC), ``position`` (the open
    position's fields, times as aware ``pandas.Timestamp``; None when flat), ``latency_ms``
    ``{model version: ms}``."""

    crypto: str
    last_hour: pd.Timestamp
    position: dict[str, Any] | None = None
    latency_ms: dict[int, float] = field(default_factory=dict)


def _position_json(position: dict[str, Any] | None) -> str | None:
    if position is None:
        return None
    out = dict(position)
    for k in _POSITION_TIMES:
        out[k] = utc_param(f"live_state.position.{k}", out[k]).isoformat()
    return json.dumps(out, sort_keys=True)


def _position_of(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    out = json.loads(text)
    for k in _POSITION_TIMES:
        out[k] = pd.Timestamp(out[k]).tz_convert("UTC")
    return out


def read_live_state(engine: sa.Engine, crypto: str) -> LiveState | None:
    """``crypto``'s stored state, None when its live loop never ran."""
    t = live_state_table
    with engine.connect() as conn:
        row = conn.execute(sa.select(t).where(t.c.crypto == crypto)).mappings().first()
    if row is None:
        return None
    return LiveState(
        crypto=crypto,
        last_hour=pd.Timestamp(as_utc(row["last_hour"])),
        position=_position_of(row["position_json"]),
        latency_ms={int(k): float(v) for k, v in json.loads(row["latency_json"]).items()},
    )


def write_state_in(
    conn: sa.Connection, state: LiveState, *, now: datetime, run_id: str | None
) -> None:
    """Replace ``state.crypto``'s row on ``conn`` (the journal's transaction)."""
    t = live_state_table
    values = {
        "crypto": state.crypto,
        "last_hour": utc_param("live_state.last_hour", state.last_hour),
        "position_json": _position_json(state.position),
        "latency_json": json.dumps({str(k): v for k, v in sorted(state.latency_ms.items())}),
        "updated_at": utc_param("live_state.updated_at", now),
        "dagster_run_id": run_id,
    }
    conn.execute(t.delete().where(t.c.crypto == state.crypto))
    conn.execute(t.insert().values(**values))


def record_event_in(
    conn: sa.Connection,
    crypto: str,
    first_hour: Any,
    last_hour: Any,
    kind: str,
    message: str,
    *,
    now: datetime,
    run_id: str | None,
) -> None:
    """Journal one event of the hours ``first_hour .. last_hour`` on ``conn``."""
    if not (isinstance(kind, str) and kind and len(kind) <= 32):
        raise ValueError(f"live_events.kind must be a short non-empty string, got {kind!r}")
    conn.execute(
        live_events_table.insert().values(
            crypto=crypto,
            first_hour=utc_param("live_events.first_hour", first_hour),
            last_hour=utc_param("live_events.last_hour", last_hour),
            kind=kind,
            message=message,
            at=utc_param("live_events.at", now),
            dagster_run_id=run_id,
        )
    )


def read_events(engine: sa.Engine, crypto: str | None = None) -> pd.DataFrame:
    """The journaled events (all cryptos, or one), oldest first."""
    t = live_events_table
    q = sa.select(t).order_by(t.c.id)
    if crypto is not None:
        q = q.where(t.c.crypto == crypto)
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(q).mappings()]
    frame = pd.DataFrame(rows, columns=[c.name for c in t.columns])
    for c in ("first_hour", "last_hour", "at"):
        frame[c] = pd.to_datetime(frame[c], utc=True)
    return frame
