"""Alembic migrations of the results-store database, run from code (no ``alembic.ini``).

Revisions (``versions/``), oldest first:

* ``0001_results_baseline``: ``finetune_results``, ``oos_returns``, ``gate_verdicts`` as the
  code of commit abe7750 created them (``METADATA.create_all``).
* ``0002_sweeps``: the ``sweeps`` table, a placeholder row for every sweep id already used by
  a result row, and the foreign keys ``sweep_id -> sweeps.sweep_id ON DELETE CASCADE``.
* ``0003_guard_state``: the production guard's state: ``ftf_config`` (seeded),
  ``config_audit``, ``model_versions``, ``model_aliases``, ``model_alias_history``.
* ``0004_trading_metrics``: ``finetune_results`` gains ``trading_threshold``,
  ``expectancy_trading`` and ``n_trades_trading``.
* ``0005_journal``: the paper-trading journal, ``predictions`` and ``trades``
  (:mod:`resources.journal`).
* ``0006_monitoring``: ``monitoring_metrics``, one row of the five monitoring metrics per
  crypto and day (:mod:`resources.journal`).
* ``0007_drift_inputs``: ``predictions`` gains the drift detectors' and shadow mode's inputs
  (``feature_1..5``, ``label``, ``label_known_at``, ``candidate_version``,
  ``candidate_buy_proba``, ``candidate_decision``; nullable) and ``model_aliases`` accepts
  the ``candidate`` alias.
* ``0008_rollbacks``: ``rollbacks``, one row per rollback incident of the production guard
  (:mod:`resources.rollbacks`).
* ``0009_alerts``: ``alerts``, every alert of the guard with its delivery state
  (:mod:`resources.alert_store`).
* ``0010_live_state``: ``live_state`` (the live loop's last journaled hour, open position and
  measured latencies per crypto) and ``live_events`` (:mod:`resources.live_state`).

A change to a ``Table`` of the results store, the config store or the model registry needs a
new revision here: ``tests/integration/test_migrations.py`` compares the migrated schema
with the ``Table`` objects.

:func:`upgrade_database` is what :class:`~resources.results_store.ResultsDatabaseResource`
(the results store, config store, model registry, rollback log, alert sink) calls when it
opens its engine (:func:`resources.db.open_engine`). It is cheap when the database is
already at head (one ``SELECT`` on ``cvn_alembic_version``) and otherwise upgrades it under
a lock held across processes:
``pg_advisory_xact_lock`` on PostgreSQL (the whole upgrade is one transaction there: DDL is
transactional), ``BEGIN IMMEDIATE`` on SQLite (also one transaction). A database created by
the code before migrations existed has our tables but no ``cvn_alembic_version``: it is stamped
with the revision whose schema it has, then upgraded in place.

From a shell::

    python -m resources.migrations [URL]    # upgrade URL (default: the results store's) to head
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from resources.db import database_url, open_engine, redact_url, write_transaction

__all__ = [
    "HEAD",
    "LegacySchemaError",
    "alembic_config",
    "current_revision",
    "head_revision",
    "upgrade_database",
]

HERE = Path(__file__).resolve().parent
#: the newest revision (checked against the scripts by the tests)
HEAD = "0010_live_state"
BASELINE = "0001_results_baseline"
SWEEPS = "0002_sweeps"
#: tables created before migrations existed (abe7750), and their later ``sweeps`` table
LEGACY_TABLES = ("finetune_results", "oos_returns", "gate_verdicts")
#: key of the PostgreSQL advisory lock that serialises upgrades (per database)
ADVISORY_LOCK_KEY = zlib.crc32(b"cvn-focal results store migrations")
#: how long a second SQLite process waits for another one's upgrade
SQLITE_LOCK_WAIT_MS = 120_000


class LegacySchemaError(RuntimeError):
    """The database holds some of our tables but not a schema any revision describes."""


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """An Alembic ``Config`` for this folder; with ``connection``, ``env.py`` migrates it."""
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE).replace("%", "%%"))
    cfg.set_main_option("path_separator", "os")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def head_revision() -> str:
    """The head of the revision scripts (read once per process)."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(conn: sa.Connection) -> str | None:
    """The database's revision, or None when it has no ``cvn_alembic_version`` row."""
    if not sa.inspect(conn).has_table("cvn_alembic_version"):
        return None
    return conn.execute(sa.text("SELECT version_num FROM cvn_alembic_version")).scalar()


def upgrade_database(engine: sa.Engine) -> str:
    """Bring the database to the newest revision (``alembic upgrade head``); returns it.

    Safe to call from many processes at once: the first one upgrades while holding the lock,
    the others wait for it and then find nothing to do. A database made by the code before
    migrations (tables present, no ``cvn_alembic_version``) is stamped first: ``0002_sweeps``
    when it has ``sweeps`` and the three foreign keys to it, ``0001_results_baseline``
    otherwise (``0002`` completes a ``sweeps`` table created without the foreign keys).
    """
    head = head_revision()
    with engine.connect() as conn:
        if current_revision(conn) == head:
            return head
    with _locked_transaction(engine) as conn:
        if current_revision(conn) is None:
            legacy = _legacy_revision(conn)
            if legacy is not None:
                command.stamp(alembic_config(conn), legacy)
        command.upgrade(alembic_config(conn), "head")
    return head


@contextmanager
def _locked_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """:func:`write_transaction` that also holds PostgreSQL's upgrade lock (until commit)."""
    with write_transaction(engine, busy_timeout_ms=SQLITE_LOCK_WAIT_MS) as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": ADVISORY_LOCK_KEY})
        yield conn


def _legacy_revision(conn: sa.Connection) -> str | None:
    """The revision a database made without Alembic matches; None for a database without
    any of our tables (other applications' tables, e.g. Dagster's, are ignored)."""
    insp = sa.inspect(conn)
    names = set(insp.get_table_names())
    present = [t for t in LEGACY_TABLES if t in names]
    if not present and "sweeps" not in names:
        return None
    if len(present) < len(LEGACY_TABLES):
        missing = sorted(set(LEGACY_TABLES) - set(present))
        raise LegacySchemaError(
            f"the results-store database has no cvn_alembic_version and only part of the "
            f"pre-migration schema: tables {sorted(present)} exist, {missing} do not; "
            "restore the missing tables (or start from an empty database)"
        )
    if "sweeps" in names and all(
        any(fk["referred_table"] == "sweeps" for fk in insp.get_foreign_keys(t))
        for t in LEGACY_TABLES
    ):
        return SWEEPS
    return BASELINE


def _main(argv: list[str]) -> int:
    url = database_url(argv[0] if argv else "")
    engine = open_engine(url)
    try:
        upgrade_database(engine)
        with engine.connect() as conn:
            print(f"{redact_url(url)}: {current_revision(conn)}")
    finally:
        engine.dispose()
    return 0
