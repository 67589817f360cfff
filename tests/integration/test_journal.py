"""The paper-trading journal on real SQLite and PostgreSQL: a day's rows are replaced, never
duplicated, and a refused write leaves the journal as it was."""

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from cvn_assets.ablation.identity import SweepIdentity
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
    got = read_predictions(engine, "BTCUSDC", "2024-06-02T00:00+00:00", "2024-06-04T00:00+00:00")
    assert len(got) == 48 and np.allclose(got["buy_proba"], 0.4)
    assert got["latency_ms"].isna().all()  # NaN stored as NULL
    tr = read_trades(engine, "BTCUSDC", "2024-06-02T00:00+00:00", "2024-06-04T00:00+00:00")
    assert len(tr) == 2 and tr["net_return"].tolist() == [0.008, 0.008]
    # a row outside the replaced day is refused before anything is written
    with pytest.raises(ValueError, match="outside the days being replaced"):
        replace_days(engine, "BTCUSDC", ["2024-06-02"], _predictions("2024-06-03", v, 0.9), None)
    # a row the database refuses (probability > 1) rolls the whole day back
    bad = _predictions("2024-06-02", v, 0.5)
    bad.loc[bad.index[-1], "buy_proba"] = 1.5
    with pytest.raises(Exception):  # noqa: B017 - the driver's IntegrityError/CheckViolation
        replace_days(engine, "BTCUSDC", ["2024-06-02"], bad, _trade("2024-06-02", v, 0.0))
    after = read_predictions(engine, "BTCUSDC", "2024-06-02T00:00+00:00", "2024-06-04T00:00+00:00")
    assert len(after) == 48 and np.allclose(after["buy_proba"], 0.4)
    assert (
        len(read_trades(engine, "BTCUSDC", "2024-06-02T00:00+00:00", "2024-06-04T00:00+00:00")) == 2
    )


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
    a = read_predictions(engine, "BTCUSDC", "2024-06-04T00:00+00:00", "2024-06-05T00:00+00:00")
    b = read_predictions(engine, "ETHUSDC", "2024-06-04T00:00+00:00", "2024-06-05T00:00+00:00")
    assert a["hour"].iloc[0] == hour == b["hour"].iloc[0]
    pd.testing.assert_frame_equal(a.drop(columns="crypto"), b.drop(columns="crypto"))
    assert a["latency_ms"].iloc[0] == 1.5 and a["buy_proba"].iloc[0] == 0.25


def _drift_predictions(day: str, version: int, candidate: int | None) -> pd.DataFrame:
    """A day of rows with the drift inputs: features 1-3 set (a model with 3 top features),
    labels known except the last 4 hours, the candidate shadowed from 12:00."""
    p = _predictions(day, version, 0.3)
    hours = p["hour"]
    for i in range(1, 6):
        p[f"feature_{i}"] = np.where(i <= 3, 0.1 * i + np.arange(24) / 100, np.nan)
    resolved = np.arange(24) < 20
    p["label"] = pd.array(np.where(resolved, np.arange(24) % 2, 0), dtype="Int8")
    p.loc[~resolved, "label"] = pd.NA
    p["label_known_at"] = (hours + pd.Timedelta(hours=3)).where(resolved)
    live = (np.arange(24) >= 12) & (candidate is not None)
    p["candidate_version"] = pd.array(np.where(live, candidate or 0, 0), dtype="Int64")
    p.loc[~live, "candidate_version"] = pd.NA
    p["candidate_buy_proba"] = np.where(live, 0.55, np.nan)
    p["candidate_decision"] = pd.array(np.where(live, "BUY", None), dtype="str")
    return p


def test_the_drift_inputs_round_trip_and_late_labels_fill_nulls_only(setup):
    engine, v = setup
    d1, d2 = "2024-06-05", "2024-06-06"
    p1 = _drift_predictions(d1, v, v)
    assert replace_days(engine, "BTCUSDC", [d1], p1, None) == (24, 0)
    got = read_predictions(engine, "BTCUSDC", f"{d1}T00:00+00:00", f"{d1} 23:00+00:00")
    assert len(got) == 24
    np.testing.assert_allclose(got["feature_2"].astype(float), p1["feature_2"])
    assert got["feature_5"].isna().all()
    assert got["label"].tolist()[:20] == (np.arange(20) % 2).tolist()
    assert got["label"].iloc[20:].isna().all() and got["label_known_at"].iloc[20:].isna().all()
    assert (got["label_known_at"].iloc[:20] == p1["hour"].iloc[:20] + pd.Timedelta(hours=3)).all()
    assert str(got["label_known_at"].dtype).startswith("datetime64") and got["hour"].dt.tz
    assert got["candidate_version"].iloc[:12].isna().all()
    assert (got["candidate_version"].iloc[12:] == v).all()
    assert got["candidate_decision"].isna().tolist() == [True] * 12 + [False] * 12
    assert got["candidate_decision"].iloc[12:].tolist() == ["BUY"] * 12
    assert str(got["label"].dtype) == "Int8" and str(got["candidate_version"].dtype) == "Int64"
    assert got["candidate_buy_proba"].iloc[12:].tolist() == [0.55] * 12
    # a row without the new columns (an older caller): stored with them NULL
    replace_days(engine, "BTCUSDC", [d2], _predictions(d2, v, 0.3), None)
    old = read_predictions(engine, "BTCUSDC", f"{d2}T00:00+00:00", f"{d2} 23:00+00:00")
    assert old[["feature_1", "label", "label_known_at", "candidate_version"]].isna().all().all()

    # the next day's run resolves d1's last hours: only NULL labels are filled
    late = p1.iloc[18:].copy()  # 18, 19 known already; 20..23 now resolved
    late["label"] = pd.array([1, 1, 1, 0, 1, 1], dtype="Int8")
    late["label_known_at"] = late["hour"] + pd.Timedelta(hours=2)
    p2 = _drift_predictions(d2, v, None)
    assert replace_days(engine, "BTCUSDC", [d2], p2, None, label_updates=late) == (24, 0)
    got = read_predictions(engine, "BTCUSDC", f"{d1}T00:00+00:00", f"{d1} 23:00+00:00")
    assert got["label"].tolist()[18:] == [0, 1, 1, 0, 1, 1]  # 18, 19 untouched
    assert got["label_known_at"].iloc[19] == p1["hour"].iloc[19] + pd.Timedelta(hours=3)
    assert got["label_known_at"].iloc[20] == p1["hour"].iloc[20] + pd.Timedelta(hours=2)
    assert (
        read_predictions(engine, "BTCUSDC", f"{d2}T00:00+00:00", f"{d2} 23:00+00:00")[
            "candidate_version"
        ]
        .isna()
        .all()
    )
    # refused before anything is written: an update inside the replaced days, a bad label
    inside = p2.iloc[:1]
    with pytest.raises(ValueError, match="is in a day being replaced"):
        replace_days(engine, "BTCUSDC", [d2], p2, None, label_updates=inside)
    with pytest.raises(ValueError, match="has label"):
        replace_days(engine, "BTCUSDC", [d2], p2, None, label_updates=p1.iloc[20:21])
    # the database's checks: a half-filled candidate, a label without its time
    bad = _drift_predictions(d2, v, v)
    bad["candidate_decision"] = pd.array([None] * 24, dtype="str")
    with pytest.raises(Exception):  # noqa: B017 - the driver's IntegrityError/CheckViolation
        replace_days(engine, "BTCUSDC", [d2], bad, None)
    bad = _drift_predictions(d2, v, None)
    bad["label_known_at"] = pd.NaT
    with pytest.raises(Exception):  # noqa: B017
        replace_days(engine, "BTCUSDC", [d2], bad, None)
    assert (
        read_predictions(engine, "BTCUSDC", f"{d2}T00:00+00:00", f"{d2} 23:00+00:00")["label"]
        .notna()
        .sum()
        == 20
    )


def test_the_fast_insert_of_nulls_stores_what_a_core_insert_stores(setup):
    import sqlalchemy as sa

    from resources.journal import predictions_table

    engine, v = setup
    rows = _drift_predictions("2024-06-07", v, v).iloc[[5, 22]]  # no candidate, no label
    replace_days(engine, "BTCUSDC", ["2024-06-07"], rows, None)
    with engine.begin() as conn:
        for _, r in rows.iterrows():
            rec = {}
            for k, x in r.items():
                x = None if pd.isna(x) else x
                rec[k] = x.item() if isinstance(x, np.generic) else x
            rec["crypto"] = "ETHUSDC"
            rec["hour"] = r["hour"].to_pydatetime()
            if rec["label_known_at"] is not None:
                rec["label_known_at"] = rec["label_known_at"].to_pydatetime()
            conn.execute(predictions_table.insert().values(**rec))
        if engine.dialect.name == "sqlite":
            stored = conn.execute(
                sa.text(
                    "SELECT crypto, label_known_at, label FROM predictions ORDER BY crypto, hour"
                )
            ).all()
            assert [r[1:] for r in stored[:2]] == [r[1:] for r in stored[2:]]
            assert stored[0][1] == "2024-06-07 08:00:00.000000" and stored[1][1:] == (None, None)
    a = read_predictions(engine, "BTCUSDC", "2024-06-07T00:00+00:00", "2024-06-08T00:00+00:00")
    b = read_predictions(engine, "ETHUSDC", "2024-06-07T00:00+00:00", "2024-06-08T00:00+00:00")
    pd.testing.assert_frame_equal(a.drop(columns="crypto"), b.drop(columns="crypto"))
    assert a["label"].tolist()[0] == 1 and pd.isna(a["label"].iloc[1])


def test_last_journaled_hours_is_the_newest_hour_per_crypto(setup):
    engine, v = setup
    from resources.journal import last_journaled_hours

    assert last_journaled_hours(engine, ["BTCUSDC", "ETHUSDC"]) == {
        "BTCUSDC": None,
        "ETHUSDC": None,
    }
    preds = _predictions("2024-06-02", v, 0.3).iloc[:15]  # 00:00 .. 14:00
    replace_days(engine, "BTCUSDC", ["2024-06-02"], preds, _trade("2024-06-02", v, 0.0).iloc[:0])
    got = last_journaled_hours(engine)
    assert got == {"BTCUSDC": pd.Timestamp("2024-06-02 14:00", tz="UTC")}
    assert got["BTCUSDC"].tzinfo is not None
