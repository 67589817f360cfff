"""Shared plumbing for the resources that live in the results-store database.

* :func:`write_transaction`: one read-modify-write transaction that serialises writers. On
  PostgreSQL a plain transaction (callers lock rows with ``FOR UPDATE`` or rely on
  ``UPDATE ... WHERE version = ?``); on SQLite ``BEGIN IMMEDIATE``, which takes the database's
  write lock *before* the first read, so two writers never both read the same state and then
  race to upgrade their read lock (SQLite would fail one of them with "database is locked"
  instead of making it wait).
* :func:`as_utc`: every time stored or compared is an aware UTC ``datetime``.
* :class:`ResultsDatabaseResource`: base of :class:`~resources.config_store.ConfigStore` and
  :class:`~resources.model_registry.ModelRegistry`; URL resolution and engine (schema upgrade
  included) are the :class:`~resources.results_store.ResultsStore` ones, not a copy of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
from dagster import ConfigurableResource, InitResourceContext
from pydantic import PrivateAttr

if TYPE_CHECKING:
    from resources.results_store import ResultsStore


def as_utc(when: datetime) -> datetime:
    """Aware UTC ``datetime``. A naive value is taken as UTC (SQLite hands back naive UTC)."""
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


@contextmanager
def write_transaction(
    engine: sa.Engine, *, busy_timeout_ms: int | None = None
) -> Iterator[sa.Connection]:
    """A connection inside one transaction that holds the write lock (SQLite) from the start.

    Commits when the block ends, rolls back when it raises. ``busy_timeout_ms`` (SQLite only)
    is how long to wait for another writer's lock; the driver's default (5 s) otherwise.
    """
    with engine.connect() as conn:
        if engine.dialect.name != "sqlite":
            with conn.begin():
                yield conn
            return
        # pysqlite opens transactions itself, lazily and DEFERRED; take over for this
        # connection only, and give it back as found.
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        saved_level = dbapi.isolation_level  # type: ignore[attr-defined]
        saved_timeout = conn.exec_driver_sql("PRAGMA busy_timeout").scalar()
        conn.commit()
        dbapi.isolation_level = None  # type: ignore[attr-defined]
        try:
            if busy_timeout_ms is not None:
                conn.exec_driver_sql(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
        finally:
            conn.rollback()  # no-op unless BEGIN IMMEDIATE itself failed half-way
            if busy_timeout_ms is not None:
                conn.exec_driver_sql(f"PRAGMA busy_timeout = {int(saved_timeout or 0)}")
                conn.commit()
            dbapi.isolation_level = saved_level  # type: ignore[attr-defined]


class ResultsDatabaseResource(ConfigurableResource):
    """A resource whose tables live in the results-store database.

    ``database_url``: the field, else ``$CVN_DATABASE_URL``, else SQLite under
    ``$DAGSTER_HOME`` -- resolved and opened by :class:`ResultsStore` (so the schema is
    upgraded to the newest migration on first use, exactly as for the results store).
    """

    database_url: str = ""

    _results_store: ResultsStore | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._results_store = None

    @property
    def _store(self) -> ResultsStore:
        if self._results_store is None:
            # lazily: results_store -> migrations -> db would be an import cycle
            from resources.results_store import ResultsStore

            self._results_store = ResultsStore(database_url=self.database_url)
        return self._results_store

    @property
    def url(self) -> str:
        return self._store.url

    @property
    def url_redacted(self) -> str:
        return self._store.url_redacted

    @property
    def engine(self) -> sa.Engine:
        return self._store.engine
