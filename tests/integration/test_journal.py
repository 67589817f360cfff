"""The paper-trading journal on real SQLite and PostgreSQL: a day's rows are replaced, never
duplicated, and a refused write leaves the journal as it was."""

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from cvn_assets.identity import SweepIdentity
from resources.journal import read_predictions, read_trades, replace_days
from resources.model_registry import ModelRegistry
from resources.results_store import ResultsStore


@pytest.fixture(params=["sqlite", "postgres"])
def setup(request, tmp_path):
    url = (
        f"sqlite:///{tmp_path / 'journal.sqlite'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_database")
    )
    store = ResultsStore(database_url=url)
    ident = SweepIdentity({"eta": 0.05}, {"universe": ["BTCUSDC"]}, {"source": "x"}, {"c": "1"})
    store.register_sweep("s", ident)
    version = ModelRegistry(database_url=url).register_version(
        "BTCUSDC",
        "baseline",
        loss_function="binary:logistic",
        gamma=None,
        alpha=None,
        train_start=datetime(2024, 1, 1, tzinfo=UTC),
        train_end=datetime(2024, 6, 1, tzinfo=UTC),
        sweep_id="s",
        artifact_uri="file:///tmp/x",
        reference_stats={},
    )
    return store.engine, version


def _predictions(day: str, version: int, proba: float) -> pd.DataFrame:
    hours = pd.date_range(day, periods=24, freq="h", tz="UTC")
    return pd.DataFrame(
        {
            "crypto": "BTCUSDC",
            "hour": hours,
            "model_version": version,
            "loss_function": "binary:logistic",
            "buy_proba": np.full(24, proba),
            "decision": np.where(np.arange(24) % 5 == 0, "BUY", "HOLD"),
            "latency_ms": np.full(24, np.nan),
        }
    )


def _trade(day: str, version: int, net: float) -> pd.DataFrame:
    entry = pd.Timestamp(day, tz="UTC") + pd.Timedelta(hours=3)
    return pd.DataFrame(
        [
            {
                "crypto": "BTCUSDC",
                "entry_time": entry,
                "entry_price": 100.0,
                "exit_time": entry + pd.Timedelta(hours=2),
                "exit_price": 101.0,
                "barrier": "tp",
                "gross_return": 0.01,
                "net_return": net,
                "model_version": version,
                "loss_function": "binary:logistic",
            }
        ]
    )


def test_replacing_days_never_duplicates_and_refusals_leave_the_journal(setup):
    engine, v = setup
    days = ["2024-06-02", "2024-06-03"]
    preds = pd.concat([_predictions(d, v, 0.3) for d in days])
    trades = pd.concat([_trade(d, v, 0.008) for d in days])
    assert replace_days(engine, "BTCUSDC", days, preds, trades) == (48, 2)
    # the same days again, other values: replaced, not duplicated
    preds2 = pd.concat([_predictions(d, v, 0.4) for d in days])
    assert replace_days(engine, "BTCUSDC", days, preds2, trades) == (48, 2)
    got = read_predictions(engine, "BTCUSDC", "2024-06-02", "2024-06-04")
    assert len(got) == 48 and np.allclose(got["buy_proba"], 0.4)
    assert got["latency_ms"].isna().all()  # NaN stored as NULL
    tr = read_trades(engine, "BTCUSDC", "2024-06-02", "2024-06-04")
    assert len(tr) == 2 and tr["net_return"].tolist() == [0.008, 0.008]
    # a row outside the replaced day is refused before anything is written
    with pytest.raises(ValueError, match="outside the days being replaced"):
        replace_days(engine, "BTCUSDC", ["2024-06-02"], _predictions("2024-06-03", v, 0.9), None)
    # a row the database refuses (probability > 1) rolls the whole day back
    bad = _predictions("2024-06-02", v, 0.5)
    bad.loc[bad.index[-1], "buy_proba"] = 1.5
    with pytest.raises(Exception):  # noqa: B017 - the driver's IntegrityError/CheckViolation
        replace_days(engine, "BTCUSDC", ["2024-06-02"], bad, _trade("2024-06-02", v, 0.0))
    after = read_predictions(engine, "BTCUSDC", "2024-06-02", "2024-06-04")
    assert len(after) == 48 and np.allclose(after["buy_proba"], 0.4)
    assert len(read_trades(engine, "BTCUSDC", "2024-06-02", "2024-06-04")) == 2


def test_the_fast_insert_stores_what_a_core_insert_stores(setup):
    """The journal's insert bypasses SQLAlchemy's per-row parameter processing on SQLite:
    a row it writes must be stored and read back exactly as a Core insert of the same values
    (microseconds, UTC, NULLs), on both databases."""
    import sqlalchemy as sa

    from resources.journal import predictions_table

    engine, v = setup
    hour = pd.Timestamp("2024-06-04 05:00:00.123456", tz="UTC")
    fast = _predictions("2024-06-04", v, 0.25).iloc[[5]].assign(hour=hour, latency_ms=1.5)
    replace_days(engine, "BTCUSDC", ["2024-06-04"], fast, None)
    core = dict(fast.iloc[0]) | {"crypto": "ETHUSDC", "hour": hour.to_pydatetime()}
    core = {k: (x.item() if isinstance(x, np.generic) else x) for k, x in core.items()}
    with engine.begin() as conn:
        conn.execute(predictions_table.insert().values(**core))
        if engine.dialect.name == "sqlite":  # the stored text itself
            stored = conn.execute(sa.text("SELECT crypto, hour FROM predictions")).all()
            texts = {c: h for c, h in stored}
            assert texts["BTCUSDC"] == texts["ETHUSDC"] == "2024-06-04 05:00:00.123456"
    a = read_predictions(engine, "BTCUSDC", "2024-06-04", "2024-06-05")
    b = read_predictions(engine, "ETHUSDC", "2024-06-04", "2024-06-05")
    assert a["hour"].iloc[0] == hour == b["hour"].iloc[0]
    pd.testing.assert_frame_equal(a.drop(columns="crypto"), b.drop(columns="crypto"))
    assert a["latency_ms"].iloc[0] == 1.5 and a["buy_proba"].iloc[0] == 0.25
