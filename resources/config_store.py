"""Config store: the factor flags of the production guard (kill switch), with their audit.

``ftf_config`` holds one row per flag: its value (text) and a version number. A change is a
compare-and-set: the caller says which version it read, and the change is applied only if the
flag is still at that version (``UPDATE ... WHERE flag = ? AND version = ?``); otherwise
:class:`ConfigConflict` names the flag, the version the caller expected and the current one.
The update and its ``config_audit`` row (actor, reason, incident id, Dagster run id, old and
new value and version, UTC time) are one transaction, so the audit holds exactly the changes
that happened. ``config_audit`` is append-only (database triggers refuse UPDATE and DELETE).

Flags and their values:

* ``CVN_LOSS_FUNCTION``: ``focal`` or ``binary:logistic`` (the guardrails' loss validator,
  :func:`cvn_assets.ablation.guardrails.validate_focal_config`).
* ``trading_halted``: ``true`` or ``false``.

Both are seeded (version 1) by migration ``0003_guard_state``. A flag without a row can be
created with ``expected_version=0``.

**When a change takes effect**: ``changed_at`` of its audit row, the wall clock by default,
or the ``at=`` the caller gives (a drill's simulated clock, an operator recording when a halt
really started): never in the future, never before the flag's previous change, so the audit
ordered by ``id`` is also ordered in time. :meth:`ConfigStore.history` returns it as the
flag's step function over time (:class:`cvn_assets.guard.flags.FlagHistory`), which is how the paper
trading replay reads ``trading_halted`` at every hour: the value that held then, not the
value at run time. Times are aware UTC at the database boundary
(:class:`resources.db.UTCDateTime`; a naive ``at`` is refused).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from cvn_assets.ablation.guardrails import (
    ALPHA_RANGE,
    FOCAL,
    GAMMA_RANGE,
    GuardrailError,
    validate_focal_config,
)
from cvn_assets.guard.flags import FlagHistory, flag_history
from resources.db import (
    UTCDateTime,
    as_utc,
    utc_now,
    utc_param,
    write_transaction,
)
from resources.results_store import ResultsDatabaseResource

__all__ = [
    "HALT_FLAG",
    "LOSS_FLAG",
    "FLAGS",
    "FLAG_DEFAULTS",
    "ConfigConflict",
    "ConfigStore",
    "UnknownFlag",
    "config_audit_table",
    "ftf_config_table",
    "validate_flag_value",
]

#: the kill switches (spec 6.4): the one home of their names
LOSS_FLAG = "CVN_LOSS_FUNCTION"  # factor level: the loss the next training uses
HALT_FLAG = "trading_halted"  # system wide: no new position while "true"

#: how long a SQLite writer waits for another one's transaction (PostgreSQL: row locks wait)
WRITE_WAIT_MS = 30_000

CONFIG_METADATA = sa.MetaData()

ftf_config_table = sa.Table(
    "ftf_config",
    CONFIG_METADATA,
    sa.Column("flag", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column(
        "updated_at",
        UTCDateTime("ftf_config.updated_at"),
        nullable=False,
        server_default=sa.func.now(),
    ),
    sa.CheckConstraint("version >= 1", name="ck_ftf_config_version"),
)

config_audit_table = sa.Table(
    "config_audit",
    CONFIG_METADATA,
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
        "changed_at",
        UTCDateTime("config_audit.changed_at"),
        nullable=False,
        server_default=sa.func.now(),
    ),
    sa.Index("ix_config_audit_flag", "flag", "id"),
)


class ConfigConflict(RuntimeError):
    """A compare-and-set found the flag at another version than the caller read."""

    def __init__(
        self, flag: str, expected_version: int, current_version: int | None, current_value: Any
    ) -> None:
        self.flag = flag
        self.expected_version = expected_version
        self.current_version = current_version
        self.current_value = current_value
        now = (
            "the flag is not set"
            if current_version is None
            else f"the current version is {current_version} (value {current_value!r})"
        )
        super().__init__(
            f"config flag {flag!r}: compare-and-set expected version {expected_version} but "
            f"{now}; another change came first: re-read the flag and decide again"
        )

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across processes
        return (
            type(self),
            (self.flag, self.expected_version, self.current_version, self.current_value),
        )


class UnknownFlag(KeyError):
    """No such flag (not a known flag, or not set in the database)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _loss_function(flag: str, value: str) -> None:
    # The kill switch flips only the loss; gamma/alpha belong to the variant. Neutral values
    # inside the guardrail ranges keep the check to the loss function itself.
    try:
        validate_focal_config(value, GAMMA_RANGE[0], ALPHA_RANGE[0])
    except GuardrailError as err:
        raise ValueError(f"{flag}={value!r} rejected: {err.requirement}") from err


def _boolean_text(flag: str, value: str) -> None:
    if value not in ("true", "false"):
        raise ValueError(f"{flag}={value!r} rejected: must be 'true' or 'false'")


#: every flag the store accepts, with its validator (raises ValueError naming flag and value)
FLAGS: dict[str, Callable[[str, str], None]] = {
    LOSS_FLAG: _loss_function,
    HALT_FLAG: _boolean_text,
}
#: a flag's value when its audit has no row at all (the migration's seeds)
FLAG_DEFAULTS = {LOSS_FLAG: FOCAL, HALT_FLAG: "false"}


def validate_flag_value(flag: str, value: object) -> str:
    """``value`` if it is valid for ``flag``; ValueError naming both otherwise."""
    if flag not in FLAGS:
        raise ValueError(f"unknown config flag {flag!r} (known: {', '.join(sorted(FLAGS))})")
    if not isinstance(value, str):
        raise ValueError(f"{flag}={value!r} rejected: the value must be a string")
    FLAGS[flag](flag, value)
    return value


class ConfigStore(ResultsDatabaseResource):
    """The ``ftf_config`` flags and their ``config_audit`` in the results-store database.

    ``database_url`` resolves like the results store's (the field, else
    ``$CVN_DATABASE_URL``, else SQLite under ``$DAGSTER_HOME``).
    """

    def get(self, flag: str) -> tuple[str, int]:
        """``(value, version)`` of ``flag``; :class:`UnknownFlag` when it has no row."""
        t = ftf_config_table
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t.c.value, t.c.version).where(t.c.flag == flag)).first()
        if row is None:
            raise UnknownFlag(f"config flag {flag!r} is not set in {self.url_redacted}")
        return str(row.value), int(row.version)

    def all(self) -> dict[str, tuple[str, int]]:
        """Every flag: ``{flag: (value, version)}``."""
        t = ftf_config_table
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.c.flag, t.c.value, t.c.version).order_by(t.c.flag))
            return {r.flag: (str(r.value), int(r.version)) for r in rows}

    def compare_and_set(
        self,
        flag: str,
        expected_version: int,
        new_value: str,
        *,
        actor: str,
        reason: str,
        incident_id: str | None = None,
        dagster_run_id: str | None = None,
        at: datetime | None = None,
    ) -> int:
        """Set ``flag`` to ``new_value`` if it is still at ``expected_version``; returns the
        new version (``expected_version + 1``).

        Raises ValueError (naming flag and value) for an invalid value, an empty actor or
        reason, and :class:`ConfigConflict` when the flag is no longer at
        ``expected_version``. The change and its audit row are one transaction.
        ``expected_version=0`` creates a flag that has no row yet.

        ``at``: when the change takes effect (its ``changed_at``), default now; aware (a naive
        one: ValueError); not in the future (1 s of clock skew allowed); not before the
        flag's previous change other than its first (seed) row (ValueError naming both) --
        the seed row is the flag's initial value, which holds from the beginning of time.
        """
        _check_change(flag, expected_version, new_value, actor, reason)
        new_version = expected_version + 1
        now = _effective_time(flag, at)
        with write_transaction(self.engine, busy_timeout_ms=WRITE_WAIT_MS) as conn:
            t = ftf_config_table
            current = conn.execute(
                sa.select(t.c.value, t.c.version, t.c.updated_at).where(t.c.flag == flag)
            ).first()
            if (current.version if current is not None else 0) != expected_version:
                raise _conflict(flag, expected_version, current)
            _check_order(flag, now, current)
            if current is None:
                _create_flag(conn, flag, new_value, now)
            else:
                _update_flag(conn, flag, expected_version, new_value, now)
            conn.execute(
                config_audit_table.insert().values(
                    flag=flag,
                    old_value=None if current is None else current.value,
                    new_value=new_value,
                    old_version=expected_version,
                    new_version=new_version,
                    actor=actor,
                    reason=reason,
                    incident_id=incident_id,
                    dagster_run_id=dagster_run_id,
                    changed_at=now,
                )
            )
        return new_version

    def audit(self, flag: str | None = None) -> list[dict[str, Any]]:
        """The audit rows (of ``flag``, or of every flag), oldest first; times in UTC."""
        a = config_audit_table
        query = sa.select(a).order_by(a.c.id)
        if flag is not None:
            query = query.where(a.c.flag == flag)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [{**dict(r), "changed_at": as_utc(r["changed_at"])} for r in rows]

    def history(self, flag: str) -> FlagHistory:
        """``flag``'s value over time from its audit (:func:`cvn_assets.guard.flags.flag_history`:
        the value at any instant, or at an hour's decision); ValueError for an unknown
        flag."""
        if flag not in FLAGS:
            raise ValueError(f"unknown config flag {flag!r} (known: {', '.join(sorted(FLAGS))})")
        return flag_history(flag, self.audit(flag), default=FLAG_DEFAULTS[flag])


def _check_change(
    flag: str, expected_version: int, new_value: str, actor: str, reason: str
) -> None:
    """Refuse, before any work, an invalid value, a bad ``expected_version`` (not an int
    >= 0) and an empty actor or reason (ValueError naming the flag)."""
    validate_flag_value(flag, new_value)
    if (
        isinstance(expected_version, bool)
        or not isinstance(expected_version, int)
        or expected_version < 0
    ):
        raise ValueError(f"{flag}: expected_version must be an int >= 0")
    if not (actor or "").strip() or not (reason or "").strip():
        raise ValueError(f"{flag}: a config change needs an actor and a reason")


def _create_flag(conn: sa.Connection, flag: str, value: str, now: datetime) -> None:
    """Insert ``flag`` at version 1; :class:`ConfigConflict` when it was created concurrently."""
    t = ftf_config_table
    try:
        with conn.begin_nested():
            conn.execute(t.insert().values(flag=flag, value=value, version=1, updated_at=now))
    except sa.exc.IntegrityError:  # created concurrently
        current = conn.execute(sa.select(t.c.value, t.c.version).where(t.c.flag == flag)).first()
        raise _conflict(flag, 0, current) from None


def _update_flag(
    conn: sa.Connection, flag: str, expected_version: int, value: str, now: datetime
) -> None:
    """Set ``flag`` to ``value`` at ``expected_version + 1`` if it is still at
    ``expected_version``; :class:`ConfigConflict` otherwise."""
    t = ftf_config_table
    # the version check in the WHERE is what makes it a compare-and-set (on PostgreSQL a
    # concurrent writer's UPDATE waits for ours, then matches nothing)
    done = conn.execute(
        t.update()
        .where((t.c.flag == flag) & (t.c.version == expected_version))
        .values(value=value, version=expected_version + 1, updated_at=now)
    )
    if done.rowcount != 1:
        current = conn.execute(sa.select(t.c.value, t.c.version).where(t.c.flag == flag)).first()
        raise _conflict(flag, expected_version, current)


def _effective_time(flag: str, at: datetime | None) -> datetime:
    now = utc_now()
    if at is None:
        return now
    when = utc_param(f"{flag}: at", at)
    if when > now + timedelta(seconds=1):
        raise ValueError(
            f"{flag}: a change at {when.isoformat()} is in the future: the audit records what "
            "happened"
        )
    return when


def _check_order(flag: str, when: datetime, current: Any) -> None:
    """Refuse a change dated before the flag's last change (``ftf_config.updated_at``); the
    flag's first row (version 1: its creation, e.g. the migration's seed) does not count."""
    if current is None or int(current.version) < 2:
        return
    last = current.updated_at
    if when < last:
        raise ValueError(
            f"{flag}: a change at {when.isoformat()} precedes the flag's last change at "
            f"{last.isoformat()}: the audit must stay ordered in time"
        )


def _conflict(flag: str, expected: int, current: Any) -> ConfigConflict:
    if current is None:
        return ConfigConflict(flag, expected, None, None)
    return ConfigConflict(flag, expected, int(current.version), current.value)
