"""Shared plumbing for the resources that live in the results-store database.

* :func:`write_transaction`: one read-modify-write transaction that serialises writers. On
  PostgreSQL a plain transaction (callers lock rows with ``FOR UPDATE`` or rely on
  ``UPDATE ... WHERE version = ?``); on SQLite ``BEGIN IMMEDIATE``, which takes the database's
  write lock *before* the first read, so two writers never both read the same state and then
  race to upgrade their read lock (SQLite would fail one of them with "database is locked"
  instead of making it wait).
* Times at the database boundary: every time column is a :class:`UTCDateTime`, which binds
  every value (inserted, updated or compared in a WHERE) converted to UTC and **refuses a naive
  one** (ValueError naming the column and the value), and reads every value back as an aware
  UTC ``datetime`` (SQLite stores naive UTC text; PostgreSQL answers in the session's time
  zone). :func:`utc_param` is the same check for a function's time argument, so a bad one is
  refused before any work, naming the argument. :func:`as_utc` normalises a value *read* from
  the database (naive = UTC); never use it on an input.
* The results-store database itself: :func:`database_url` (the field, else
  ``$CVN_DATABASE_URL``, else SQLite under ``$DAGSTER_HOME``), :func:`open_engine` (an engine
  with SQLite's foreign keys on; no schema work), :func:`shared_engine` (one per URL per
  process, prepared once: what the resources use) and :func:`redact_url`. The schema upgrade
  is :func:`resources.migrations.upgrade_database`; the resources whose tables live there
  derive from :class:`~resources.results_store.ResultsDatabaseResource`, which opens and
  upgrades. Imports run one way: ``db`` <- ``migrations`` <- ``results_store``.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa

from resources.home_source import home_dir


def as_utc(when: datetime) -> datetime:
    """Aware UTC ``datetime`` of a value read from the database. A naive value is taken as
    UTC (SQLite hands back naive UTC text); for inputs use :func:`utc_param`."""
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def utc_param(field: str, value: Any) -> datetime:
    """``value`` (a ``datetime`` / ``pandas.Timestamp`` or ISO text **with** a UTC offset) as
    an aware UTC ``datetime``, ready to be bound into SQL.

    Raises ValueError naming ``field`` and the value for a naive time (no offset: its instant
    is unknown), for text that is not an ISO time and for anything else.
    """
    if isinstance(value, str):
        try:
            ts = pd.Timestamp(value)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{field}: {value!r} is not an ISO time") from exc
        if ts is pd.NaT:
            raise ValueError(f"{field}: {value!r} is not an ISO time")
        value = ts
    if not isinstance(value, datetime) or value is pd.NaT:
        raise ValueError(
            f"{field}: {value!r} is not a time (give an aware datetime or ISO text with offset)"
        )
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValueError(
            f"{field}: naive time {value.isoformat()!r} refused: its instant is unknown; "
            "give a UTC offset (e.g. +00:00)"
        )
    if isinstance(value, pd.Timestamp):
        value = value.tz_convert("UTC").to_pydatetime(warn=False)
    return value.astimezone(UTC)


def utc_index(field: str, values: Any) -> pd.DatetimeIndex:
    """A column of times (a Series, an array, a list) as a UTC ``DatetimeIndex`` (missing
    values: NaT). Raises ValueError naming ``field`` and the first naive value (a tz-naive
    ``datetime64`` column, a naive ``datetime`` or offset-less text): its instant is unknown."""
    series = pd.Series(values)
    dtype = series.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        return pd.DatetimeIndex(series).tz_convert("UTC")
    present = series[series.notna()]
    if len(present) == 0:
        return pd.DatetimeIndex(pd.to_datetime(series, utc=True))
    if dtype.kind == "M":
        bad = present.iloc[0]
        raise ValueError(
            f"{field}: naive time {pd.Timestamp(bad).isoformat()!r} refused (a tz-naive "
            "column): its instant is unknown; give UTC offsets"
        )
    for v in present:
        utc_param(field, v)  # refuses the first naive one, naming it
    return pd.DatetimeIndex(pd.to_datetime(series, utc=True))


class UTCDateTime(sa.types.TypeDecorator):
    """``DateTime(timezone=True)`` that binds only aware times, converted to UTC (naive:
    ValueError naming ``field`` and the value) and reads back aware UTC ``datetime`` on every
    backend. ``field``: the name in errors, e.g. ``"trades.exit_time"``."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def __init__(self, field: str = "time") -> None:
        super().__init__()
        self.field = field

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        return None if value is None else utc_param(self.field, value)

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


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


def default_database_url() -> str:
    """SQLite file beside the Dagster instance (``$DAGSTER_HOME/cvn_results.sqlite``)."""
    home = home_dir()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'cvn_results.sqlite'}"


def database_url(configured: str = "") -> str:
    """The results-store URL: ``configured`` (a resource's field), else ``$CVN_DATABASE_URL``
    (resolved at use: a run config that sets no URL keeps the environment's), else SQLite
    under ``$DAGSTER_HOME``."""
    return configured or os.environ.get("CVN_DATABASE_URL") or default_database_url()


def redact_url(url: str) -> str:
    """``url`` with its credentials replaced by ``***`` (for messages and metadata)."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def open_engine(url: str) -> sa.Engine:
    """An engine on ``url`` (``postgresql://`` read as ``postgresql+psycopg2://``); SQLite
    connections enforce foreign keys. The schema is not touched: see
    :func:`resources.migrations.upgrade_database`."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    engine = sa.create_engine(url, future=True, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", sqlite_foreign_keys)
    return engine


#: engines kept open by :func:`shared_engine` (per process), the least recently used first
MAX_SHARED_ENGINES = 8
_SHARED: OrderedDict[tuple[int, str], sa.Engine] = OrderedDict()
_SHARED_LOCK = threading.Lock()


def shared_engine(url: str, prepare: Callable[[sa.Engine], Any] | None = None) -> sa.Engine:
    """The process's engine on ``url`` (:func:`open_engine`), opened and ``prepare``-d (e.g.
    the schema upgrade) on the first call for that URL in this process, then reused: a
    resource initialised again for every sensor tick or run (Dagster does) no longer opens a
    connection pool and checks the schema each time. At most :data:`MAX_SHARED_ENGINES` are
    kept; the least recently used one is disposed (its pooled connections closed; a holder
    can still use it, it reconnects) and opened and prepared again when asked for. A forked
    child gets its own (keyed by process id). A ``prepare`` that raises leaves nothing
    cached."""
    key = (os.getpid(), url)
    with _SHARED_LOCK:
        engine = _SHARED.get(key)
        if engine is not None:
            _SHARED.move_to_end(key)
            return engine
        engine = open_engine(url)
        try:
            if prepare is not None:
                prepare(engine)
        except BaseException:
            engine.dispose()
            raise
        _SHARED[key] = engine
        while len(_SHARED) > MAX_SHARED_ENGINES:
            _, old = _SHARED.popitem(last=False)
            old.dispose()
        return engine


def sqlite_foreign_keys(dbapi_conn: Any, _record: Any) -> None:
    """SQLite enforces foreign keys only when asked, per connection (a ``connect`` listener)."""
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
