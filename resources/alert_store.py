"""The ``alerts`` table of the results database (migration ``0009_alerts``): every alert of
the guard, recorded before any delivery, with its delivery state.

One row per alert, unique by ``(incident_id, name)`` (recording again returns the row: a
re-executed alert run does not duplicate). Delivery states (``delivery_state``):

* ``none``: no channel was configured when it was recorded (the JSON-lines file only);
* ``pending``: to be delivered to ``channel`` (``slack``); ``attempts`` made so far,
  ``last_status`` (HTTP status, NULL when there was no answer), ``last_error`` (one line, no
  secret), ``last_attempt_at`` and ``next_attempt_at`` (not before: backoff or the server's
  ``Retry-After``);
* ``delivered`` (``delivered_at``);
* ``failed``: delivery gave up (``failed_at``) after ``max_attempts`` or the deadline, or on a
  permanent error (revoked webhook): shown by the ``alert_delivery`` sensor and in the file.

``lease_until``: a deliverer claims a pending row (compare-and-set) before posting, so two
deliverers do not post it at once, and releases it when done; an expired lease (a crashed
deliverer) can be claimed again. ``file_synced``: the JSON-lines file shows the row's state
(the alert line, and its delivery or delivery-failed line); ``False`` until written.

Writes are short transactions (:func:`resources.db.write_transaction`); no network call is
made inside one. All times are aware UTC.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from resources.db import UTCDateTime, as_utc

__all__ = ["ALERTS_METADATA", "DELIVERY_STATES", "alerts_table", "find", "insert_alert", "row"]

ALERTS_METADATA = sa.MetaData()
DELIVERY_STATES = ("none", "pending", "delivered", "failed")

alerts_table = sa.Table(
    "alerts",
    ALERTS_METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("incident_id", sa.String(128), nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("severity", sa.String(8), nullable=False),
    sa.Column("cryptos_json", sa.Text, nullable=False),
    sa.Column("figures_json", sa.Text, nullable=False),
    sa.Column("runbook", sa.String(300), nullable=False),
    sa.Column("at", UTCDateTime("alerts.at"), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("recorded_at", UTCDateTime("alerts.recorded_at"), nullable=False),
    sa.Column("dagster_run_id", sa.String(64), nullable=True),
    sa.Column("channel", sa.String(16), nullable=True),
    sa.Column("delivery_state", sa.String(10), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("last_status", sa.Integer, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("last_attempt_at", UTCDateTime("alerts.last_attempt_at"), nullable=True),
    sa.Column("next_attempt_at", UTCDateTime("alerts.next_attempt_at"), nullable=True),
    sa.Column("delivered_at", UTCDateTime("alerts.delivered_at"), nullable=True),
    sa.Column("failed_at", UTCDateTime("alerts.failed_at"), nullable=True),
    sa.Column("lease_until", UTCDateTime("alerts.lease_until"), nullable=True),
    sa.Column("file_synced", sa.Boolean, nullable=False),
    sa.UniqueConstraint("incident_id", "name", name="uq_alerts_incident_name"),
    sa.CheckConstraint(
        "delivery_state IN ('none', 'pending', 'delivered', 'failed')",
        name="ck_alerts_delivery_state",
    ),
    sa.Index("ix_alerts_delivery", "delivery_state", "next_attempt_at"),
)

_TIMES = (
    "at",
    "recorded_at",
    "last_attempt_at",
    "next_attempt_at",
    "delivered_at",
    "failed_at",
    "lease_until",
)


def row(r: sa.RowMapping) -> dict[str, Any]:
    """A row as a dict: times aware UTC, ``cryptos`` (list) and ``figures`` (dict) decoded."""
    out = dict(r)
    for c in _TIMES:
        out[c] = None if out[c] is None else as_utc(out[c])
    out["cryptos"] = json.loads(out.pop("cryptos_json"))
    out["figures"] = json.loads(out.pop("figures_json"))
    return out


def find(conn: sa.Connection, incident_id: str, name: str) -> dict[str, Any] | None:
    t = alerts_table
    q = sa.select(t).where((t.c.incident_id == incident_id) & (t.c.name == name))
    got = conn.execute(q).mappings().first()
    return None if got is None else row(got)


def insert_alert(
    conn: sa.Connection,
    record: dict[str, Any],
    *,
    channel: str | None,
    now: datetime,
    dagster_run_id: str | None = None,
) -> tuple[dict[str, Any], bool]:
    """Record the alert of ``record`` (:meth:`resources.alerts.Alert.to_record`) in the
    caller's transaction; ``(row, created)``. An existing ``(incident_id, name)`` is returned
    unchanged (``created=False``), also when a concurrent writer inserted it first. With a
    ``channel`` the row starts ``pending`` (due at ``now``), else ``none``."""
    existing = find(conn, record["incident_id"], record["name"])
    if existing is not None:
        return existing, False
    values = {
        "incident_id": record["incident_id"],
        "name": record["name"],
        "severity": record["severity"],
        "cryptos_json": json.dumps(record["cryptos"]),
        "figures_json": json.dumps(record["figures"], sort_keys=True, allow_nan=False),
        "runbook": record["runbook"],
        "at": as_utc(datetime.fromisoformat(record["at"])),
        "message": record["message"],
        "recorded_at": as_utc(now),
        "dagster_run_id": dagster_run_id,
        "channel": channel,
        "delivery_state": "pending" if channel else "none",
        "attempts": 0,
        "next_attempt_at": as_utc(now) if channel else None,
        "file_synced": False,
    }
    created = True
    try:
        with conn.begin_nested():  # a concurrent insert of the same key fails this one only
            conn.execute(alerts_table.insert().values(**values))
    except sa.exc.IntegrityError:
        created = False
    got = find(conn, record["incident_id"], record["name"])
    assert got is not None
    return got, created
