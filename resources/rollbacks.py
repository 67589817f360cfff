"""Rollback incidents and their operator confirmation (migration ``0008_rollbacks``).

The rollback job (:mod:`sensors.jobs`) records each incident here, **before** it acts, keyed
by ``incident_id`` (unique): a second run of the same incident finds the row and changes
nothing, which is what makes the job idempotent across retries and concurrent launches.

States (spec 6.4, "operator confirms within 15 min or revert is held"):

* ``pending``: an automatic rollback (``trigger="auto"``) is in force and waits for an
  operator's ``confirm_rollback`` run until ``confirm_by`` (triggered_at + 15 min);
* ``confirmed``: an operator confirmed it (``confirmed_by``, ``confirm_reason``,
  ``confirmed_at``); a manual rollback is confirmed by its own actor when it is recorded;
* ``held``: nobody confirmed by the deadline; the rollback stays in force (it is never undone
  silently) and the escalation alert was recorded for delivery in the same transaction
  (``escalated_at``; ``escalate_rollback_job``, requested by ``rollback_confirmation``). A
  late confirmation still moves ``held`` to ``confirmed``.

State changes are compare-and-set on the state (``UPDATE ... WHERE state = ?``), so two
sensors or operators racing change a row once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from resources.db import (
    UTCDateTime,
    as_utc,
    utc_now,
    utc_param,
    write_transaction,
)
from resources.results_store import ResultsDatabaseResource

__all__ = [
    "CONFIRM_WITHIN",
    "NoRollback",
    "RollbackLog",
    "rollbacks_table",
]

CONFIRM_WITHIN = timedelta(minutes=15)
#: called inside a state change's transaction with its connection and the row as changed
#: (the job records the alert that must go with it: see ``AlertSink.record_in``)
InTransaction = Callable[[sa.Connection, dict[str, Any]], Any]
WRITE_WAIT_MS = 30_000
_METADATA = sa.MetaData()

rollbacks_table = sa.Table(
    "rollbacks",
    _METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("incident_id", sa.String(160), nullable=False),
    sa.Column("trigger", sa.String(8), nullable=False),
    sa.Column("triggered_at", UTCDateTime("rollbacks.triggered_at"), nullable=False),
    sa.Column("dagster_run_id", sa.String(64), nullable=True),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("cryptos_json", sa.Text, nullable=False),
    sa.Column("flipped", sa.Boolean, nullable=False),
    sa.Column("state", sa.String(10), nullable=False),
    sa.Column("confirm_by", UTCDateTime("rollbacks.confirm_by"), nullable=True),
    sa.Column("confirmed_by", sa.String(200), nullable=True),
    sa.Column("confirm_reason", sa.Text, nullable=True),
    sa.Column("confirmed_at", UTCDateTime("rollbacks.confirmed_at"), nullable=True),
    sa.Column("escalated_at", UTCDateTime("rollbacks.escalated_at"), nullable=True),
    sa.UniqueConstraint("incident_id", name="uq_rollbacks_incident"),
    sa.CheckConstraint("trigger IN ('auto', 'manual')", name="ck_rollbacks_trigger"),
    sa.CheckConstraint("state IN ('pending', 'confirmed', 'held')", name="ck_rollbacks_state"),
)

_TIMES = ("triggered_at", "confirm_by", "confirmed_at", "escalated_at")


class NoRollback(LookupError):
    """No rollback matches (unknown incident id, or nothing pending/held to confirm)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "no rollback"


def _row(r: sa.RowMapping) -> dict[str, Any]:
    out = dict(r)
    for c in _TIMES:
        out[c] = None if out[c] is None else as_utc(out[c])
    out["cryptos"] = json.loads(out.pop("cryptos_json"))
    return out


class RollbackLog(ResultsDatabaseResource):
    """The ``rollbacks`` table in the results-store database (URL resolved like the results
    store's: the field, else ``$CVN_DATABASE_URL``, else SQLite under ``$DAGSTER_HOME``)."""

    def record(
        self,
        incident_id: str,
        *,
        trigger: str,
        actor: str,
        reason: str,
        cryptos: list[str],
        flipped: bool,
        dagster_run_id: str | None = None,
        at: datetime | None = None,
        confirm_within: timedelta = CONFIRM_WITHIN,
        on_record: InTransaction | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Record an incident; ``(row, created)``. An existing ``incident_id`` is returned
        unchanged with ``created=False``. ``trigger="auto"`` starts ``pending`` until
        ``at + confirm_within``; ``"manual"`` starts ``confirmed`` by ``actor``.
        ``on_record(conn, row)`` runs in the same transaction when the row is created (the
        rollback's alert is recorded with it, or neither is). ValueError names a bad trigger,
        an empty incident id, actor or reason."""
        if trigger not in ("auto", "manual"):
            raise ValueError(f"trigger must be 'auto' or 'manual', got {trigger!r}")
        for name, value in (("incident_id", incident_id), ("actor", actor), ("reason", reason)):
            if not str(value or "").strip():
                raise ValueError(f"rollback: {name} must not be empty, got {value!r}")
        when = utc_param("at", at) if at is not None else utc_now()
        t = rollbacks_table
        values: dict[str, Any] = {
            "incident_id": incident_id,
            "trigger": trigger,
            "triggered_at": when,
            "dagster_run_id": dagster_run_id,
            "actor": actor,
            "reason": reason,
            "cryptos_json": json.dumps(sorted(cryptos)),
            "flipped": bool(flipped),
        }
        if trigger == "auto":
            values.update(state="pending", confirm_by=when + confirm_within)
        else:
            values.update(
                state="confirmed", confirmed_by=actor, confirm_reason=reason, confirmed_at=when
            )
        with write_transaction(self.engine, busy_timeout_ms=WRITE_WAIT_MS) as conn:
            old = conn.execute(sa.select(t).where(t.c.incident_id == incident_id)).mappings()
            existing = old.first()
            if existing is not None:
                return _row(existing), False
            conn.execute(t.insert().values(**values))
            row = conn.execute(sa.select(t).where(t.c.incident_id == incident_id)).mappings()
            created = _row(row.one())
            if on_record is not None:
                on_record(conn, created)
            return created, True

    def get(self, incident_id: str) -> dict[str, Any]:
        t = rollbacks_table
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t).where(t.c.incident_id == incident_id)).mappings()
            found = row.first()
        if found is None:
            raise NoRollback(f"no rollback with incident id {incident_id!r}")
        return _row(found)

    def all(self) -> list[dict[str, Any]]:
        """Every rollback, oldest first."""
        t = rollbacks_table
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(sa.select(t).order_by(t.c.id)).mappings()]

    def confirm(
        self, incident_id: str | None, *, actor: str, reason: str, at: datetime | None = None
    ) -> dict[str, Any]:
        """An operator confirms a ``pending`` or ``held`` rollback (``incident_id``, or the
        latest such one when None). Confirming a confirmed one changes nothing. Raises
        :class:`NoRollback` naming what was looked for, ValueError for an empty actor or
        reason."""
        for name, value in (("actor", actor), ("reason", reason)):
            if not str(value or "").strip():
                raise ValueError(f"confirm_rollback: {name} must not be empty, got {value!r}")
        t = rollbacks_table
        when = utc_param("at", at) if at is not None else utc_now()
        with write_transaction(self.engine, busy_timeout_ms=WRITE_WAIT_MS) as conn:
            q = sa.select(t)
            if incident_id:
                q = q.where(t.c.incident_id == incident_id)
            else:
                q = q.where(t.c.state.in_(("pending", "held"))).order_by(t.c.id.desc()).limit(1)
            row = conn.execute(q).mappings().first()
            if row is None:
                raise NoRollback(
                    f"no rollback with incident id {incident_id!r}"
                    if incident_id
                    else "no pending or held rollback to confirm"
                )
            if row["state"] != "confirmed":
                conn.execute(
                    t.update()
                    .where((t.c.id == row["id"]) & (t.c.state == row["state"]))
                    .values(
                        state="confirmed",
                        confirmed_by=actor,
                        confirm_reason=reason,
                        confirmed_at=when,
                    )  # fmt: skip
                )
            return _row(conn.execute(sa.select(t).where(t.c.id == row["id"])).mappings().one())

    def overdue(self, now: datetime) -> list[dict[str, Any]]:
        """``pending`` rollbacks whose ``confirm_by`` is at or before ``now``."""
        t = rollbacks_table
        q = sa.select(t).where((t.c.state == "pending") & (t.c.confirm_by <= utc_param("now", now)))
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(q.order_by(t.c.id)).mappings()]

    def hold(
        self,
        incident_id: str,
        *,
        at: datetime | None = None,
        on_held: InTransaction | None = None,
    ) -> bool:
        """``pending`` -> ``held`` at ``at`` (``escalated_at``); False when the row was not
        pending (confirmed meanwhile, or already held by another evaluation).

        ``on_held(conn, row)`` runs in the same transaction whenever the row is ``held``
        after the update (held now or before): the escalation alert is recorded for delivery
        with the state change, or neither happens, so a failed page can never leave a held
        rollback that nobody was told about."""
        t = rollbacks_table
        when = utc_param("at", at) if at is not None else utc_now()
        with write_transaction(self.engine, busy_timeout_ms=WRITE_WAIT_MS) as conn:
            done = conn.execute(
                t.update()
                .where((t.c.incident_id == incident_id) & (t.c.state == "pending"))
                .values(state="held", escalated_at=when)
            )
            if on_held is not None:
                q = sa.select(t).where(t.c.incident_id == incident_id)
                found = conn.execute(q).mappings().first()
                if found is not None and found["state"] == "held":
                    on_held(conn, _row(found))
            return done.rowcount == 1
