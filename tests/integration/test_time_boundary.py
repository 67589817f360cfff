"""Times at the database boundary, on real SQLite and PostgreSQL: every time bound into SQL
is converted to UTC first (a naive one is refused, naming it), and every time read back is
aware UTC. The windows are given at UTC, UTC+05:30 and UTC-08:00; the right counts are
computed by hand from the trade timeline below (and differ from what binding the local wall
time would select, so each case can fail)."""

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from cvn_assets.ablation.identity import SweepIdentity
from resources.config_store import ConfigStore
from resources.journal import read_predictions, read_trades, replace_days, trades_table
from resources.model_registry import ModelRegistry
from resources.results_store import ResultsStore
from resources.rollbacks import RollbackLog
from sensors.evaluation import evaluate_expectancy

IST = timezone(timedelta(hours=5, minutes=30))
PST = timezone(timedelta(hours=-8))
T0 = datetime(2024, 6, 1, tzinfo=UTC)
#: 51 trades, the k-th exiting at T0 + k h (k = 0..50: the last at 2024-06-03 02:00 UTC)
N_TRADES = 51
AS_OF = datetime(2024, 6, 3, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'times.sqlite'}"
    return request.getfixturevalue("pg_database")


@pytest.fixture
def journal(url):
    """A focal champion (promoted at T0 - 1 day) and its 51 hourly trades."""
    store = ResultsStore(database_url=url)
    ident = SweepIdentity({"eta": 0.05}, {"universe": ["BTCUSDC"]}, {"source": "x"}, {"c": "1"})
    store.register_sweep("s", ident)
    registry = ModelRegistry(database_url=url)
    v = registry.register_version(
        "BTCUSDC",
        "focal_g2_a025",
        loss_function="focal",
        gamma=2.0,
        alpha=0.25,
        train_start=datetime(2024, 1, 1, tzinfo=UTC),
        train_end=datetime(2024, 5, 1, tzinfo=UTC),
        sweep_id="s",
        artifact_uri="file:///tmp/x",
        reference_stats={},
    )
    registry.promote("BTCUSDC", v, actor="t", reason="r", at=T0 - timedelta(days=1))
    exits = pd.date_range(T0, periods=N_TRADES, freq="h")
    trades = pd.DataFrame(
        {
            "crypto": "BTCUSDC",
            "entry_time": exits - pd.Timedelta(hours=1),
            "entry_price": 100.0,
            "exit_time": exits,
            "exit_price": 99.0,
            "barrier": "sl",
            "gross_return": -0.01,
            "net_return": -0.012,
            "model_version": v,
            "loss_function": "focal",
        }
    )
    days = sorted({d for d in pd.DatetimeIndex(trades["exit_time"]).normalize()})
    replace_days(store.engine, "BTCUSDC", days, pd.DataFrame(), trades)
    return registry, v


def _in_window(lo: datetime, hi: datetime) -> int:
    """By hand: trades k with lo < T0 + k h <= hi."""
    return sum(1 for k in range(N_TRADES) if lo < T0 + timedelta(hours=k) <= hi)


@pytest.mark.parametrize("tz", [UTC, IST, PST], ids=["utc", "+05:30", "-08:00"])
def test_expectancy_windows_select_the_same_trades_at_any_offset(journal, tz):
    registry, _ = journal
    # the windows (as_of - 48 h, as_of] and (as_of - 24 h, as_of], as_of = 2024-06-03 12:00 UTC:
    # k = 13..50 (38 trades) and k = 37..50 (14 trades)
    assert _in_window(AS_OF - timedelta(hours=48), AS_OF) == 38
    assert _in_window(AS_OF - timedelta(hours=24), AS_OF) == 14
    # what binding the local wall time would have selected (the bug): other counts
    wall = AS_OF.astimezone(tz).replace(tzinfo=UTC)
    if tz is not UTC:
        assert _in_window(wall - timedelta(hours=48), wall) != 38
    ev = evaluate_expectancy(registry, ["BTCUSDC"], AS_OF.astimezone(tz))
    details = ev.per_crypto["BTCUSDC"].details
    assert (details["n_48h"], details["n_24h"]) == (38, 14)
    assert ev.focal_cryptos == ("BTCUSDC",)


@pytest.mark.parametrize("tz", [IST, PST], ids=["+05:30", "-08:00"])
def test_journal_reads_convert_the_window_and_refuse_a_naive_one(journal, tz):
    registry, _ = journal
    engine = registry.engine
    lo, hi = datetime(2024, 6, 2, 5, 0, tzinfo=UTC), datetime(2024, 6, 2, 20, 0, tzinfo=UTC)
    got = read_trades(engine, "BTCUSDC", lo.astimezone(tz), hi.astimezone(tz).isoformat())
    # exits at k = 29..44 (closed window): 16 trades, read back aware UTC
    assert len(got) == 16 == sum(1 for k in range(N_TRADES) if lo <= T0 + timedelta(hours=k) <= hi)
    assert got["exit_time"].iloc[0] == pd.Timestamp(lo) and str(got["exit_time"].dt.tz) == "UTC"
    with pytest.raises(ValueError, match=r"start: naive time '2024-06-02T05:00:00' refused"):
        read_trades(engine, "BTCUSDC", datetime(2024, 6, 2, 5), hi)
    with pytest.raises(ValueError, match=r"end: naive time '2024-06-02T20:00:00' refused"):
        read_predictions(engine, "BTCUSDC", lo, "2024-06-02 20:00")
    # a Core query binding a naive time into a time column is refused too, naming the column
    q = sa.select(sa.func.count()).where(trades_table.c.exit_time > datetime(2024, 6, 2))
    with engine.connect() as conn, pytest.raises(sa.exc.StatementError, match="trades.exit_time"):
        conn.execute(q)
    # ... and an aware one at any offset selects by the instant: exits after 06-02 05:30 UTC
    q = sa.select(sa.func.count()).where(
        trades_table.c.exit_time > datetime(2024, 6, 2, 11, 0, tzinfo=IST)
    )
    with engine.connect() as conn:
        assert conn.execute(q).scalar() == N_TRADES - 30  # k = 30..50


def test_journal_rows_at_an_offset_are_stored_in_utc_and_naive_rows_refused(journal):
    registry, v = journal
    engine = registry.engine
    hours = pd.date_range("2024-06-05 05:30", periods=24, freq="h", tz=IST)  # 00:00 UTC..
    preds = pd.DataFrame(
        {
            "crypto": "BTCUSDC",
            "hour": hours,
            "model_version": v,
            "loss_function": "focal",
            "buy_proba": np.full(24, 0.3),
            "decision": "HOLD",
        }
    )
    no_trades = pd.DataFrame(columns=["crypto"])
    day = pd.Timestamp("2024-06-05", tz="UTC")
    assert replace_days(engine, "BTCUSDC", [day], preds, no_trades) == (24, 0)
    got = read_predictions(engine, "BTCUSDC", day, day + pd.Timedelta(hours=23))
    assert list(got["hour"]) == list(pd.date_range(day, periods=24, freq="h"))
    naive = preds.assign(hour=hours.tz_localize(None))
    with pytest.raises(ValueError, match=r"predictions.hour: naive time '2024-06-05T05:30:00'"):
        replace_days(engine, "BTCUSDC", [day], naive, no_trades)
    assert len(read_predictions(engine, "BTCUSDC", day, day + pd.Timedelta(hours=23))) == 24


def test_registry_live_at_and_history_at_offsets(journal):
    registry, v = journal
    change = datetime(2024, 6, 3, 15, 30, tzinfo=UTC)
    registry.set_alias("BTCUSDC", "candidate", v, actor="t", reason="r", at=change.astimezone(PST))
    # 15:15 UTC is before the change, 15:45 UTC after, whatever offset asks
    before = datetime(2024, 6, 3, 20, 45, tzinfo=IST)  # 15:15 UTC; its wall time is after
    after = datetime(2024, 6, 3, 7, 45, tzinfo=PST)  # 15:45 UTC; its wall time is before
    assert registry.live_at("BTCUSDC", before, alias="candidate") is None
    assert registry.live_at("BTCUSDC", after, alias="candidate")["id"] == v
    row = registry.history("BTCUSDC", "candidate")[0]
    assert row["valid_from"] == change and row["valid_from"].utcoffset() == timedelta(0)
    with pytest.raises(ValueError, match=r"when_utc: naive time '2024-06-03T15:45:00' refused"):
        registry.live_at("BTCUSDC", datetime(2024, 6, 3, 15, 45))
    with pytest.raises(ValueError, match=r"at: naive time"):
        registry.set_alias("BTCUSDC", "previous", v, actor="t", reason="r", at=datetime(2024, 7, 1))


def test_config_changes_at_an_offset_are_audited_in_utc(url):
    store = ConfigStore(database_url=url)
    halt = datetime(2024, 6, 1, 15, 0, tzinfo=UTC)
    store.compare_and_set(
        "trading_halted", 1, "true", actor="a", reason="r", at=halt.astimezone(IST)
    )
    audit = store.audit("trading_halted")[-1]
    assert audit["changed_at"] == halt and audit["changed_at"].utcoffset() == timedelta(0)
    # 08:00-08:00 is 16:00 UTC: after the halt, so accepted; 14:00 UTC would precede it
    store.compare_and_set(
        "trading_halted", 2, "false", actor="a", reason="r", at=datetime(2024, 6, 1, 8, tzinfo=PST)
    )
    with pytest.raises(ValueError, match="precedes the flag's last change"):
        store.compare_and_set(
            "trading_halted",
            3,
            "true",
            actor="a",
            reason="r",
            at=datetime(2024, 6, 1, 14, tzinfo=UTC),
        )
    with pytest.raises(ValueError, match=r"trading_halted: at: naive time '2024-06-02T00:00:00'"):
        store.compare_and_set(
            "trading_halted", 3, "true", actor="a", reason="r", at=datetime(2024, 6, 2)
        )
    assert store.get("trading_halted") == ("false", 3)
    hist = store.history("trading_halted")
    assert [hist.value_at(datetime(2024, 6, 1, h, tzinfo=UTC)) for h in (14, 15, 16)] == [
        "false",
        "true",
        "false",
    ]


def test_rollback_times_at_offsets(url):
    log = RollbackLog(database_url=url)
    at = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
    row, created = log.record(
        "INC-1", trigger="auto", actor="a", reason="r", cryptos=["BTCUSDC"], flipped=True,
        at=at.astimezone(IST),
    )  # fmt: skip
    assert created and row["triggered_at"] == at and row["confirm_by"] == at + timedelta(minutes=15)
    assert row["confirm_by"].utcoffset() == timedelta(0)
    # overdue at confirm_by (12:15 UTC) given at -08:00, not one second before it given at +05:30
    assert [r["incident_id"] for r in log.overdue(datetime(2024, 6, 1, 4, 15, tzinfo=PST))] == [
        "INC-1"
    ]
    assert log.overdue(datetime(2024, 6, 1, 17, 44, 59, tzinfo=IST)) == []
    with pytest.raises(ValueError, match=r"now: naive time '2024-06-01T12:15:00'"):
        log.overdue(datetime(2024, 6, 1, 12, 15))
