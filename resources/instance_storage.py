"""SQLite event-log storage for the embedded default that keeps its engines and connections.

Dagster's ``SqliteEventLogStorage`` builds a new ``Engine`` (with ``NullPool``) for every
event it stores and disposes of it afterwards. Measured here (``bench/bench_event_log.py``),
that makes each stored event cost ~10 ms: four engine builds, four statement compilations
(SQLAlchemy's compiled cache lives on the engine and never hits), and four connection
closes, each of which checkpoints the WAL file. The sweep stores ~650 events (materializations
and their "planned" twins for 25 partitions x 10 assets), so bookkeeping, not training, was
the largest overhead of the one command.

This subclass keeps one engine with a small connection pool per shard file (bounded LRU);
as pooled connections stay open, the WAL is checkpointed into ``<run_id>.db`` (the file the
webserver's watchdog streams a live run from) at most every 0.5 s and when the run ends,
instead of on every event; and it sets
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
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from dagster._core.events import DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SQLITE_BUSY_TIMEOUT_SECONDS,
    SqliteEventLogStorage,
)
from dagster._serdes import ConfigurableClassData
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine

#: engines (and their open connections) kept at most; the least recently used is disposed
MAX_CACHED_SHARDS = 16
#: longest delay before a run's events reach ``<run_id>.db`` (what the webserver watches)
CHECKPOINT_SECONDS = 0.5
RUN_END_EVENTS = frozenset(
    {
        DagsterEventType.RUN_SUCCESS,
        DagsterEventType.RUN_FAILURE,
        DagsterEventType.RUN_CANCELED,
    }
)


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
        engine = create_engine(
            self.conn_string_for_shard(shard),
            pool_size=1,
            max_overflow=4,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
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
                if shard != INDEX_SHARD_NAME:
                    self._maybe_checkpoint(shard, conn)

    def _maybe_checkpoint(self, shard: str, conn: Connection, force: bool = False) -> None:
        """Copy the WAL into ``<run_id>.db`` at most every CHECKPOINT_SECONDS (and at run end).

        The webserver streams a live run by watching ``<run_id>.db`` for modification; with
        pooled connections nothing is written there until a checkpoint, so one is taken
        whenever the last is older than CHECKPOINT_SECONDS: the live view lags by at most that.
        """
        last: dict[str, float] = self.__dict__.setdefault("_last_checkpoint", {})
        now = time.monotonic()
        if force or now - last.get(shard, 0.0) >= CHECKPOINT_SECONDS:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
            last[shard] = now

    def store_event(self, event: EventLogEntry) -> None:
        super().store_event(event)
        if event.is_dagster_event and event.dagster_event_type in RUN_END_EVENTS:
            # the run is over: checkpoint its shard now and let go of its connections
            with self._db_lock:
                engine = self.__dict__.get("_engines", {}).pop(event.run_id, None)
            if engine is not None:
                with engine.connect() as conn:
                    self._maybe_checkpoint(event.run_id, conn, force=True)
                engine.dispose()

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
        "# the daemon (`dagster dev`) fails runs whose worker died (kill -9) instead of leaving\n"
        "# them STARTED; runs of the one command are also reaped by the command itself\n"
        "run_monitoring:\n"
        "  enabled: true\n"
        "  start_timeout_seconds: 180\n"
        "  max_resume_run_attempts: 0\n"
        "  poll_interval_seconds: 30\n"
        "# runs launched from the UI (and the runs of a backfill: Dagster cuts a backfill of\n"
        "# crypto x fold cells into one run per crypto) are queued and run one at a time:\n"
        "# concurrent training runs on a small machine only fight over its cores\n"
        "concurrency:\n"
        "  runs:\n"
        "    max_concurrent_runs: 1\n"
        "telemetry:\n"
        "  enabled: false\n"
    )
