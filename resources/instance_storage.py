"""SQLite event-log storage for the embedded default that keeps its engines and connections.

Dagster's ``SqliteEventLogStorage`` builds a new ``Engine`` (with ``NullPool``) for every
event it stores and disposes of it afterwards. Measured here (``bench/bench_event_log.py``),
that makes each stored event cost ~10 ms: four engine builds, four statement compilations
(SQLAlchemy's compiled cache lives on the engine and never hits), and four connection
closes, each of which checkpoints the WAL file. The sweep stores ~650 events (materializations
and their "planned" twins for 25 partitions x 10 assets), so bookkeeping, not training, was
the largest overhead of the one command.

This subclass keeps one engine per shard file (bounded LRU), pools the connections of the
cross-run index shard (run shards still open and close a connection per use, so the WAL is
checkpointed into ``<run_id>.db`` and the webserver's file watcher sees every event), and sets
``PRAGMA synchronous=NORMAL`` on its connections: the storage is in WAL mode, where NORMAL
cannot corrupt the database and only a power cut (not a process crash) can lose the last
commits, which is SQLite's own recommendation for WAL. Everything else (schema,
initialisation, locking, queries) is the upstream class. It is selected in
``$DAGSTER_HOME/dagster.yaml`` (written by ``python -m cvn_assets.sweep`` for a new home)::

    event_log_storage:
      module: resources.instance_storage
      class: CachedEngineSqliteEventLogStorage
      config:
        base_dir: <DAGSTER_HOME>/history/runs/
"""

import sqlite3
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SQLITE_BUSY_TIMEOUT_SECONDS,
    SqliteEventLogStorage,
)
from dagster._serdes import ConfigurableClassData
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

#: engines (and their open connections) kept at most; the least recently used is disposed
MAX_CACHED_SHARDS = 16


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    if isinstance(dbapi_conn, sqlite3.Connection):
        cur = dbapi_conn.cursor()
        if cur.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
            cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()


class CachedEngineSqliteEventLogStorage(SqliteEventLogStorage):
    """``SqliteEventLogStorage`` with cached engines and pooled connections per shard."""

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> "CachedEngineSqliteEventLogStorage":
        return cls(inst_data=inst_data, **config_value)

    def _engine_for(self, shard: str) -> Engine:
        engines: OrderedDict[str, Engine] = self.__dict__.setdefault("_engines", OrderedDict())
        engine = engines.get(shard)
        if engine is not None:
            engines.move_to_end(shard)
            return engine
        if shard == INDEX_SHARD_NAME:
            pool: dict[str, Any] = {"pool_size": 1, "max_overflow": 4}
        else:
            # run shards: a connection per use, as upstream. Closing it checkpoints the WAL
            # into <run_id>.db, whose modification is what the webserver's watchdog streams
            # to a live run view
            pool = {"poolclass": NullPool}
        engine = create_engine(
            self.conn_string_for_shard(shard),
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
            **pool,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        engines[shard] = engine
        while len(engines) > MAX_CACHED_SHARDS:
            _, old = engines.popitem(last=False)
            old.dispose()
        return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:
            engine = self._engine_for(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn:
                with conn.begin():
                    yield conn

    def dispose(self) -> None:
        engines = self.__dict__.pop("_engines", {})
        for engine in engines.values():
            engine.dispose()
        super().dispose()


def default_instance_yaml(home: str) -> str:
    """The embedded default's ``dagster.yaml``: SQLite storage with the event log above."""
    return (
        "# written by `python -m cvn_assets.sweep` for a new DAGSTER_HOME; see\n"
        "# resources/instance_storage.py (delete this file for Dagster's stock SQLite storage,\n"
        "# or replace it with deploy/dagster.postgres.yaml for PostgreSQL)\n"
        "event_log_storage:\n"
        "  module: resources.instance_storage\n"
        "  class: CachedEngineSqliteEventLogStorage\n"
        "  config:\n"
        f"    base_dir: {home}/history/runs/\n"
        "telemetry:\n"
        "  enabled: false\n"
    )
