"""Model registry: champion candidates as versions, ``champion``/``previous``/``candidate``
aliases per crypto, and an append-only alias history.

* ``model_versions``: one row per candidate (crypto, variant, loss function, gamma, alpha,
  training window, sweep id, artifact location, reference statistics). Registering the same
  candidate again (same crypto, variant, sweep and train end, same content) returns its id.
* ``model_aliases``: the current ``champion`` and ``previous`` of each crypto, and its
  ``candidate`` (a model in shadow mode: paper trading logs its predictions beside the
  champion's; never promoted silently: :meth:`ModelRegistry.promote_candidate`, audited, makes
  it the champion and closes the alias; :meth:`ModelRegistry.clear_alias` drops it).
* ``model_alias_history``: one row per assignment of an alias, valid over
  ``[valid_from, valid_to)`` (``valid_to`` NULL while current). A change closes the open row
  and opens the next one at the same instant, in the transaction that moves the alias, so
  the intervals of an alias tile time without gaps or overlaps. Rows are never updated
  except to close them, and never deleted (database triggers enforce both).

So re-promoting the previous champion is one transaction (:meth:`ModelRegistry.
repromote_previous`), and "which model was live at 2024-06-03 14:00 UTC" is one query
(:meth:`ModelRegistry.live_at`). Alias changes of one crypto are serialised (SQLite:
``BEGIN IMMEDIATE``; PostgreSQL: a transaction-scoped advisory lock per crypto).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from cvn_assets.ablation.guardrails import validate_focal_config
from resources.db import (
    UTCDateTime,
    as_utc,
    utc_now,
    utc_param,
    write_transaction,
)
from resources.results_store import ResultsDatabaseResource, UnknownSweep, sweeps_table

__all__ = [
    "ALIASES",
    "ModelRegistry",
    "ModelVersionConflict",
    "NoCandidate",
    "NoPreviousChampion",
    "model_alias_history_table",
    "model_aliases_table",
    "model_versions_table",
]

ALIASES = ("champion", "previous", "candidate")
#: how long a SQLite writer waits for another one's transaction
WRITE_WAIT_MS = 30_000

REGISTRY_METADATA = sa.MetaData()

model_versions_table = sa.Table(
    "model_versions",
    REGISTRY_METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("crypto", sa.String(32), nullable=False),
    sa.Column("variant", sa.String(64), nullable=False),
    sa.Column("loss_function", sa.String(32), nullable=False),
    sa.Column("gamma", sa.Float, nullable=True),
    sa.Column("alpha", sa.Float, nullable=True),
    sa.Column("train_start", UTCDateTime("model_versions.train_start"), nullable=False),
    sa.Column("train_end", UTCDateTime("model_versions.train_end"), nullable=False),
    sa.Column(
        "sweep_id",
        sa.String(64),
        sa.ForeignKey(sweeps_table.c.sweep_id, name="model_versions_sweep_id_fkey"),
        nullable=False,
    ),
    sa.Column("artifact_uri", sa.Text, nullable=False),
    sa.Column("reference_stats_json", sa.Text, nullable=False),
    sa.Column(
        "created_at",
        UTCDateTime("model_versions.created_at"),
        nullable=False,
        server_default=sa.func.now(),
    ),
    sa.UniqueConstraint(
        "crypto", "variant", "sweep_id", "train_end", name="uq_model_versions_candidate"
    ),
)

model_aliases_table = sa.Table(
    "model_aliases",
    REGISTRY_METADATA,
    sa.Column("crypto", sa.String(32), primary_key=True),
    sa.Column("alias", sa.String(16), primary_key=True),
    sa.Column(
        "version_id",
        sa.Integer,
        sa.ForeignKey("model_versions.id", name="model_aliases_version_id_fkey"),
        nullable=False,
    ),
    sa.CheckConstraint(
        "alias IN ('champion', 'previous', 'candidate')", name="ck_model_aliases_alias"
    ),
)

model_alias_history_table = sa.Table(
    "model_alias_history",
    REGISTRY_METADATA,
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
    sa.Column("valid_from", UTCDateTime("model_alias_history.valid_from"), nullable=False),
    sa.Column("valid_to", UTCDateTime("model_alias_history.valid_to"), nullable=True),
    sa.CheckConstraint(
        "valid_to IS NULL OR valid_to >= valid_from", name="ck_model_alias_history_interval"
    ),
    sa.Index("ix_model_alias_history_lookup", "crypto", "alias", "valid_from"),
    sa.Index(
        "uq_model_alias_history_open",
        "crypto",
        "alias",
        unique=True,
        postgresql_where=sa.text("valid_to IS NULL"),
        sqlite_where=sa.text("valid_to IS NULL"),
    ),
)

#: fields that must agree when a candidate's key is registered again
_CONTENT_FIELDS = ("loss_function", "gamma", "alpha", "train_start", "artifact_uri")


class ModelVersionConflict(ValueError):
    """A candidate key (crypto, variant, sweep_id, train_end) is registered with other content."""


class NoPreviousChampion(LookupError):
    """``repromote_previous`` on a crypto that has no ``previous`` alias."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class NoCandidate(LookupError):
    """``promote_candidate`` on a crypto that has no ``candidate`` alias."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ModelRegistry(ResultsDatabaseResource):
    """Model versions, their ``champion``/``previous``/``candidate`` aliases and the alias
    history.

    ``database_url`` resolves like the results store's. Every time is UTC: datetimes given
    must be aware (any offset; converted to UTC; a naive one is refused with a ValueError
    naming the argument); datetimes returned are aware UTC.
    """

    # --- versions ---------------------------------------------------------------------
    def register_version(
        self,
        crypto: str,
        variant: str,
        *,
        loss_function: str,
        gamma: float | None,
        alpha: float | None,
        train_start: datetime,
        train_end: datetime,
        sweep_id: str,
        artifact_uri: str,
        reference_stats: Mapping[str, Any],
    ) -> int:
        """Record a champion candidate; returns its version id.

        The loss configuration is checked by the guardrails (ValueError naming the field);
        the sweep must be registered in ``sweeps`` (:class:`UnknownSweep`). The same key
        (crypto, variant, sweep_id, train_end) registered again returns the existing id when
        the content agrees and raises :class:`ModelVersionConflict` naming what differs.
        """
        validate_focal_config(loss_function, gamma, alpha)
        start, end = utc_param("train_start", train_start), utc_param("train_end", train_end)
        if not start < end:
            raise ValueError(
                f"{crypto}/{variant}: train_start {start.isoformat()} must precede "
                f"train_end {end.isoformat()}"
            )
        if not artifact_uri:
            raise ValueError(f"{crypto}/{variant}: artifact_uri is empty")
        stats_json = json.dumps(dict(reference_stats), sort_keys=True, default=_json_scalar)
        record: dict[str, Any] = {
            "crypto": crypto,
            "variant": variant,
            "loss_function": loss_function,
            "gamma": None if gamma is None else float(gamma),
            "alpha": None if alpha is None else float(alpha),
            "train_start": start,
            "train_end": end,
            "sweep_id": sweep_id,
            "artifact_uri": artifact_uri,
            "reference_stats_json": stats_json,
            "created_at": utc_now(),
        }
        self._require_sweep_of(crypto, variant, sweep_id)
        t = model_versions_table
        try:
            with self.engine.begin() as conn:
                key = conn.execute(t.insert().values(**record)).inserted_primary_key
            assert key is not None
            return int(key[0])
        except sa.exc.IntegrityError:
            existing = self._find_version(crypto, variant, sweep_id, end)
            if existing is None:
                raise
        return _same_version(existing, record)

    def _require_sweep_of(self, crypto: str, variant: str, sweep_id: str) -> None:
        """:class:`UnknownSweep` unless ``sweep_id`` is registered in ``sweeps``."""
        s = sweeps_table
        with self.engine.connect() as conn:
            known = conn.execute(sa.select(s.c.sweep_id).where(s.c.sweep_id == sweep_id)).first()
        if known is None:
            raise UnknownSweep(
                f"model version {crypto}/{variant}: sweep {sweep_id!r} is not registered "
                f"in {self.url_redacted}"
            )

    def get_version(self, version_id: int) -> dict[str, Any] | None:
        t = model_versions_table
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t).where(t.c.id == version_id)).mappings().first()
        return None if row is None else _version_dict(row)

    def _find_version(
        self, crypto: str, variant: str, sweep_id: str, train_end: datetime
    ) -> dict[str, Any] | None:
        t = model_versions_table
        query = sa.select(t).where(
            (t.c.crypto == crypto)
            & (t.c.variant == variant)
            & (t.c.sweep_id == sweep_id)
            & (t.c.train_end == train_end)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else _version_dict(row)

    # --- aliases ----------------------------------------------------------------------
    def set_alias(
        self,
        crypto: str,
        alias: str,
        version_id: int,
        *,
        actor: str,
        reason: str,
        dagster_run_id: str | None = None,
        at: datetime | None = None,
    ) -> None:
        """Point ``alias`` of ``crypto`` at ``version_id``: closes the alias's open history
        row and opens the next one, in one transaction (no-op if it already points there).

        ``at``: when the change takes effect, default now; never in the future, never before
        the start of the alias's current interval (the history stays ordered).
        """
        _check_who(crypto, actor, reason)
        with _alias_transaction(self.engine, crypto) as conn:
            now = self._effective_time(at)
            self._set(conn, crypto, alias, version_id, actor, reason, dagster_run_id, now)

    def promote(
        self,
        crypto: str,
        version_id: int,
        *,
        actor: str,
        reason: str,
        dagster_run_id: str | None = None,
        at: datetime | None = None,
    ) -> dict[str, int | None]:
        """Make ``version_id`` the champion of ``crypto`` and the old champion its previous,
        in one transaction; returns ``{"champion": id, "previous": id | None}``. Promoting
        the current champion changes nothing."""
        _check_who(crypto, actor, reason)
        with _alias_transaction(self.engine, crypto) as conn:
            now = self._effective_time(at)
            return self._promote(conn, crypto, version_id, actor, reason, dagster_run_id, now)

    def repromote_previous(
        self,
        crypto: str,
        *,
        actor: str,
        reason: str,
        dagster_run_id: str | None = None,
        at: datetime | None = None,
        expected_champion: int | None = None,
    ) -> dict[str, int | None]:
        """Swap ``champion`` and ``previous`` of ``crypto`` in one transaction (roll back to
        the previous champion); :class:`NoPreviousChampion` naming the crypto if there is
        none. Returns ``{"champion": id, "previous": id | None}``.

        ``expected_champion``: swap only if the champion is still this version (read inside
        the transaction), else change nothing and return the aliases as they are -- what makes
        two concurrent rollbacks swap once instead of swapping back."""
        _check_who(crypto, actor, reason)
        with _alias_transaction(self.engine, crypto) as conn:
            now = self._effective_time(at)
            if expected_champion is not None:
                champion = _alias_version_id(conn, crypto, "champion")
                if champion != expected_champion:
                    previous = _alias_version_id(conn, crypto, "previous")
                    return {"champion": champion, "previous": previous}
            previous = _alias_version_id(conn, crypto, "previous")
            if previous is None:
                raise NoPreviousChampion(
                    f"crypto {crypto!r} has no previous champion to re-promote "
                    f"(champion: {_alias_version_id(conn, crypto, 'champion')})"
                )
            return self._promote(conn, crypto, previous, actor, reason, dagster_run_id, now)

    def promote_candidate(
        self,
        crypto: str,
        *,
        actor: str,
        reason: str,
        incident_id: str | None = None,
        run_id: str | None = None,
        at: datetime | None = None,
    ) -> dict[str, int | None]:
        """Make the ``candidate`` of ``crypto`` its champion, in **one** transaction: the old
        champion becomes ``previous`` and the ``candidate`` alias is closed (its open history
        row gets ``valid_to``, its ``model_aliases`` row is removed). The new ``champion`` /
        ``previous`` history rows carry ``actor``, ``reason`` (with ``[incident <id>]``
        appended when ``incident_id`` is given) and ``run_id`` as ``dagster_run_id``, like
        :meth:`promote`. A candidate that already is the champion only closes the alias.

        Returns ``{"champion": id, "previous": id | None, "candidate": id}`` (the promoted
        version). Raises :class:`NoCandidate` naming the crypto when it has no candidate -- so
        of two concurrent calls (serialised per crypto, like every alias change) the second
        raises and the champion moves once -- and ``ValueError`` without actor or reason.
        """
        _check_who(crypto, actor, reason)
        why = reason if not incident_id else f"{reason} [incident {incident_id}]"
        with _alias_transaction(self.engine, crypto) as conn:
            now = self._effective_time(at)
            candidate = _alias_version_id(conn, crypto, "candidate")
            if candidate is None:
                raise NoCandidate(
                    f"crypto {crypto!r} has no candidate to promote (champion: "
                    f"{_alias_version_id(conn, crypto, 'champion')}): a candidate is registered "
                    "with set_alias(crypto, 'candidate', version_id, ...)"
                )
            out = self._promote(conn, crypto, candidate, actor, why, run_id, now)
            self._close(conn, crypto, "candidate", now)
            return {**out, "candidate": candidate}

    def clear_alias(
        self,
        crypto: str,
        alias: str,
        *,
        actor: str,
        reason: str,
        at: datetime | None = None,
    ) -> int | None:
        """Remove ``alias`` of ``crypto`` (e.g. reject a ``candidate``): its open history row
        is closed at ``at`` (default now) and its ``model_aliases`` row removed, in one
        transaction. Returns the version it pointed at, or None (nothing to do). The
        ``champion`` cannot be cleared (roll back with :meth:`repromote_previous`)."""
        _check_who(crypto, actor, reason)
        if alias not in ALIASES:
            raise ValueError(f"alias {alias!r} rejected: must be one of {ALIASES}")
        if alias == "champion":
            raise ValueError(f"{crypto}: the champion alias cannot be cleared, only replaced")
        with _alias_transaction(self.engine, crypto) as conn:
            now = self._effective_time(at)
            return self._close(conn, crypto, alias, now)

    def alias(self, crypto: str, alias: str) -> dict[str, Any] | None:
        """The version ``alias`` of ``crypto`` points at, or None."""
        t, a = model_versions_table, model_aliases_table
        query = (
            sa.select(t)
            .join(a, a.c.version_id == t.c.id)
            .where((a.c.crypto == crypto) & (a.c.alias == alias))
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else _version_dict(row)

    def live_at(
        self, crypto: str, when_utc: datetime, alias: str = "champion"
    ) -> dict[str, Any] | None:
        """The version that was ``alias`` (champion) of ``crypto`` at ``when_utc`` (aware, any
        offset; naive: ValueError), or None before the first promotion. One query on
        ``model_alias_history``."""
        when = utc_param("when_utc", when_utc)
        t, h = model_versions_table, model_alias_history_table
        query = (
            sa.select(t)
            .join(h, h.c.version_id == t.c.id)
            .where(
                (h.c.crypto == crypto)
                & (h.c.alias == alias)
                & (h.c.valid_from <= when)
                & (h.c.valid_to.is_(None) | (h.c.valid_to > when))
            )
            .order_by(h.c.valid_from.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else _version_dict(row)

    def history(self, crypto: str | None = None, alias: str | None = None) -> list[dict[str, Any]]:
        """Alias history rows, oldest first (times aware UTC)."""
        h = model_alias_history_table
        query = sa.select(h).order_by(h.c.id)
        if crypto is not None:
            query = query.where(h.c.crypto == crypto)
        if alias is not None:
            query = query.where(h.c.alias == alias)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            {
                **dict(r),
                "valid_from": as_utc(r["valid_from"]),
                "valid_to": None if r["valid_to"] is None else as_utc(r["valid_to"]),
            }
            for r in rows
        ]

    # --- internals --------------------------------------------------------------------
    @staticmethod
    def _effective_time(at: datetime | None) -> datetime:
        now = utc_now()
        if at is None:
            return now
        when = utc_param("at", at)
        if when > now + timedelta(seconds=1):
            raise ValueError(
                f"alias change at {when.isoformat()} is in the future: the history records "
                "what happened"
            )
        return when

    def _promote(
        self,
        conn: sa.Connection,
        crypto: str,
        version_id: int,
        actor: str,
        reason: str,
        run_id: str | None,
        now: datetime,
    ) -> dict[str, int | None]:
        champion = _alias_version_id(conn, crypto, "champion")
        if champion == version_id:
            return {"champion": champion, "previous": _alias_version_id(conn, crypto, "previous")}
        self._set(conn, crypto, "champion", version_id, actor, reason, run_id, now)
        if champion is not None:
            self._set(conn, crypto, "previous", champion, actor, reason, run_id, now)
        return {"champion": version_id, "previous": _alias_version_id(conn, crypto, "previous")}

    def _set(
        self,
        conn: sa.Connection,
        crypto: str,
        alias: str,
        version_id: int,
        actor: str,
        reason: str,
        run_id: str | None,
        now: datetime,
    ) -> None:
        if alias not in ALIASES:
            raise ValueError(f"alias {alias!r} rejected: must be one of {ALIASES}")
        t, a, h = model_versions_table, model_aliases_table, model_alias_history_table
        owner = conn.execute(sa.select(t.c.crypto).where(t.c.id == version_id)).scalar()
        if owner is None:
            raise LookupError(f"no model version {version_id} in {self.url_redacted}")
        if owner != crypto:
            raise ValueError(
                f"model version {version_id} is a {owner} model: it cannot be the {alias} "
                f"of {crypto}"
            )
        current = _alias_version_id(conn, crypto, alias)
        if current == version_id:
            return
        is_open = (h.c.crypto == crypto) & (h.c.alias == alias) & h.c.valid_to.is_(None)
        open_from = conn.execute(sa.select(h.c.valid_from).where(is_open)).scalar()
        if open_from is not None and now < as_utc(open_from):
            raise ValueError(
                f"{crypto} {alias}: change at {now.isoformat()} precedes the current "
                f"assignment's start {as_utc(open_from).isoformat()}"
            )
        conn.execute(h.update().where(is_open).values(valid_to=now))
        conn.execute(
            h.insert().values(
                crypto=crypto,
                alias=alias,
                version_id=version_id,
                previous_version_id=current,
                actor=actor,
                reason=reason,
                dagster_run_id=run_id,
                valid_from=now,
                valid_to=None,
            )
        )
        if current is None:
            conn.execute(a.insert().values(crypto=crypto, alias=alias, version_id=version_id))
        else:
            conn.execute(
                a.update()
                .where((a.c.crypto == crypto) & (a.c.alias == alias))
                .values(version_id=version_id)
            )

    def _close(self, conn: sa.Connection, crypto: str, alias: str, now: datetime) -> int | None:
        """Close ``alias``'s open history row at ``now`` and remove its alias row."""
        a, h = model_aliases_table, model_alias_history_table
        current = _alias_version_id(conn, crypto, alias)
        if current is None:
            return None
        is_open = (h.c.crypto == crypto) & (h.c.alias == alias) & h.c.valid_to.is_(None)
        open_from = conn.execute(sa.select(h.c.valid_from).where(is_open)).scalar()
        if open_from is not None and now < as_utc(open_from):
            raise ValueError(
                f"{crypto} {alias}: closing at {now.isoformat()} precedes the current "
                f"assignment's start {as_utc(open_from).isoformat()}"
            )
        conn.execute(h.update().where(is_open).values(valid_to=now))
        conn.execute(a.delete().where((a.c.crypto == crypto) & (a.c.alias == alias)))
        return current


@contextmanager
def _alias_transaction(engine: sa.Engine, crypto: str) -> Iterator[sa.Connection]:
    """:func:`write_transaction` plus, on PostgreSQL, an advisory lock on ``crypto``'s aliases
    (held until commit; SQLite's ``BEGIN IMMEDIATE`` already serialises all writers)."""
    with write_transaction(engine, busy_timeout_ms=WRITE_WAIT_MS) as conn:
        if engine.dialect.name == "postgresql":
            key = zlib.crc32(f"cvn-focal model_aliases {crypto}".encode())
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
        yield conn


def _alias_version_id(conn: sa.Connection, crypto: str, alias: str) -> int | None:
    a = model_aliases_table
    found = conn.execute(
        sa.select(a.c.version_id).where((a.c.crypto == crypto) & (a.c.alias == alias))
    ).scalar()
    return None if found is None else int(found)


def _check_who(crypto: str, actor: str, reason: str) -> None:
    if not (actor or "").strip() or not (reason or "").strip():
        raise ValueError(f"{crypto}: an alias change needs an actor and a reason")


def _version_dict(row: sa.RowMapping) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k != "reference_stats_json"}
    for k in ("train_start", "train_end", "created_at"):
        out[k] = as_utc(out[k])
    out["reference_stats"] = json.loads(row["reference_stats_json"])
    return out


def _same_version(existing: dict[str, Any], record: dict[str, Any]) -> int:
    """The id of ``existing`` (the row already registered under ``record``'s key) when its
    content agrees with ``record``; :class:`ModelVersionConflict` naming every difference
    otherwise."""
    differs = [
        f"{k}: {existing[k]!r} -> {record[k]!r}"
        for k in _CONTENT_FIELDS
        if not _same(existing[k], record[k])
    ]
    if existing["reference_stats"] != json.loads(record["reference_stats_json"]):
        differs.append("reference_stats")
    if differs:
        raise ModelVersionConflict(
            f"model version {record['crypto']}/{record['variant']} of sweep "
            f"{record['sweep_id']!r} trained to {record['train_end'].isoformat()} is already "
            f"registered (id {existing['id']}) with other content: {'; '.join(differs)}"
        )
    return int(existing["id"])


def _json_scalar(value: Any) -> Any:
    """NumPy scalars and arrays in reference statistics -> plain Python."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"reference_stats: {type(value).__name__} {value!r} is not JSON")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, datetime) and isinstance(b, datetime):
        return as_utc(a) == as_utc(b)
    return bool(a == b)
