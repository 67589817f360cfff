"""resources.db.shared_engine: one engine per URL per process, prepared once (the resources'
engines: Dagster initialises a resource again for every sensor tick and run)."""

import pytest
import sqlalchemy as sa

from resources import db
from resources.db import shared_engine


def _prepare(calls: list[str]):
    def prepare(engine: sa.Engine) -> None:
        calls.append(str(engine.url))
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE IF NOT EXISTS t (x INTEGER)"))
            conn.execute(sa.text("INSERT INTO t VALUES (1)"))

    return prepare


def _rows(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM t")).scalar())


def test_one_engine_per_url_prepared_once(tmp_path):
    calls: list[str] = []
    a, b = f"sqlite:///{tmp_path / 'a.sqlite'}", f"sqlite:///{tmp_path / 'b.sqlite'}"
    first = shared_engine(a, _prepare(calls))
    assert shared_engine(a, _prepare(calls)) is first
    assert shared_engine(a) is first
    assert calls == [a] and _rows(first) == 1  # prepared (one insert) exactly once
    other = shared_engine(b, _prepare(calls))
    assert other is not first and calls == [a, b]
    # SQLite's foreign keys are on, as with open_engine
    with first.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_the_least_recently_used_engine_is_disposed_and_prepared_again(tmp_path, monkeypatch):
    monkeypatch.setattr(db, "MAX_SHARED_ENGINES", 2)
    calls: list[str] = []
    urls = [f"sqlite:///{tmp_path / f'{i}.sqlite'}" for i in range(3)]
    e0 = shared_engine(urls[0], _prepare(calls))
    shared_engine(urls[1], _prepare(calls))
    assert shared_engine(urls[0]) is e0  # used again: now the most recent
    shared_engine(urls[2], _prepare(calls))  # evicts urls[1], not urls[0]
    assert shared_engine(urls[0]) is e0
    again = shared_engine(urls[1], _prepare(calls))
    assert calls == [urls[0], urls[1], urls[2], urls[1]]
    assert _rows(again) == 2  # prepared a second time on the same file


def test_a_failed_prepare_caches_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'f.sqlite'}"
    calls: list[str] = []

    def broken(engine: sa.Engine) -> None:
        raise RuntimeError("migration failed")

    with pytest.raises(RuntimeError, match="migration failed"):
        shared_engine(url, broken)
    engine = shared_engine(url, _prepare(calls))
    assert calls == [url] and _rows(engine) == 1
