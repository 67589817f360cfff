"""Paper trading replay: hand-worked days, journal semantics, refusals, and a per-hour oracle.

Independent truths: hand-checked prices and returns on tiny candle sequences (a TP 1 % / SL
0.5 % long entered at a close of 100 exits at 101, or at a gap open of 97), and a plain per-hour
Python loop that re-implements the rules from the module docstring without
``cvn_assets.market.trading`` (the brute-force oracle). A fake model scripts ``buy_proba`` by hour;
one test wraps a real tiny booster the way the sweep does (``train_cell`` +
``calibrate_and_evaluate`` -> CalibratedModel).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from cvn_assets.ablation.evaluation import calibrate_and_evaluate, train_cell
from cvn_assets.ablation.variants import DEFAULT_VARIANTS
from cvn_assets.guard.live_model import (
    LiveModel,
    candidate_schedule,
    live_feature_row,
    live_model_from_calibrated,
    measure_latency,
    model_schedule,
    top_feature_names,
)
from cvn_assets.guard.paper import (
    PREDICTION_COLUMNS,
    TRADE_COLUMNS,
    Position,
    hour_labels,
    replay,
    replay_day,
    replay_hours,
)
from cvn_assets.market.dataset import assemble_dataset
from cvn_assets.market.features import FEATURE_NAMES, build_features
from cvn_assets.market.folds import three_way_fold_plan
from cvn_assets.market.labels import triple_barrier_labels
from cvn_assets.market.synthetic_market import synthetic_candles

UTC = "UTC"
TP, SL, H, FEE = 0.01, 0.005, 4, 0.001
D1, D2 = "2024-01-01", "2024-01-02"
TRAIN_END = pd.Timestamp("2023-12-01", tz=UTC)


def T(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz=UTC)


# --------------------------------------------------------------------------- fixtures / fakes
def flat_candles(first_day: str = D1, n_days: int = 1, price: float = 100.0) -> pd.DataFrame:
    """Hourly candles open = high = low = close = ``price`` (never touch a 1 % / 0.5 % barrier)."""
    idx = pd.date_range(T(first_day), periods=24 * n_days, freq="h", name="open_time").as_unit("us")
    return pd.DataFrame(
        {"open": price, "high": price, "low": price, "close": price, "volume": 1.0}, index=idx
    )


def put(c: pd.DataFrame, hour: str, o: float, h: float, lo: float, cl: float) -> None:
    c.loc[T(hour), ["open", "high", "low", "close"]] = [o, h, lo, cl]


def zero_features(c: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(0.0, index=c.index, columns=list(FEATURE_NAMES))


@dataclass
class Scripted:
    """P(BUY) looked up by the row's hour (default 0.1); records the size of every call."""

    probs: dict[pd.Timestamp, float]
    default: float = 0.1
    calls: list[int] = field(default_factory=list)

    def __call__(self, X: pd.DataFrame) -> np.ndarray:
        assert list(X.columns) == list(FEATURE_NAMES)
        self.calls.append(len(X))
        return np.array([self.probs.get(t, self.default) for t in X.index], dtype=np.float64)


def scripted(
    buy_hours: list[str] | None = None,
    *,
    p: float = 0.9,
    version: int = 1,
    threshold: float | None = 0.5,
    train_end: pd.Timestamp = TRAIN_END,
    loss: str = "focal",
) -> tuple[LiveModel, Scripted]:
    fn = Scripted({T(h): p for h in (buy_hours or [])})
    return LiveModel(version, loss, fn, threshold, train_end), fn


def run_day(c: pd.DataFrame, day: str, model: Any, **kw: Any):
    feats = kw.pop("features", zero_features(c))
    opts: dict[str, Any] = dict(crypto="BTCUSDC", take_profit=TP, stop_loss=SL, horizon=H)
    opts.update(kw)
    return replay_day(c, feats, day, model, **opts)


def only_trade(r) -> pd.Series:
    assert len(r.trades) == 1, r.trades
    return r.trades.iloc[0]


# --------------------------------------------------------------------------- hand-checked days
def test_buy_at_the_1000_close_exits_at_take_profit_101() -> None:
    c = flat_candles()
    put(c, "2024-01-01 11:00", 100.2, 101.3, 99.9, 101.1)  # touches 101 inside the candle
    model, fn = scripted(["2024-01-01 10:00"])
    r = run_day(c, D1, model)
    t = only_trade(r)
    assert t["entry_time"] == T("2024-01-01 10:00") and t["entry_price"] == 100.0
    assert t["exit_time"] == T("2024-01-01 11:00") and t["exit_price"] == pytest.approx(101.0)
    assert t["barrier"] == "tp"
    assert t["gross_return"] == 0.01
    assert t["net_return"] == pytest.approx(0.008, abs=1e-15)  # 0.01 - 2 * 0.001
    assert (t["crypto"], t["model_version"], t["loss_function"]) == ("BTCUSDC", 1, "focal")
    assert r.open_position is None
    assert len(r.predictions) == 24 and fn.calls == [24]  # one vectorised call for the day
    assert r.predictions["decision"].tolist() == ["HOLD"] * 10 + ["BUY"] + ["HOLD"] * 13


def test_gap_down_open_at_97_after_an_outage_fills_the_stop_at_97() -> None:
    c = flat_candles()
    c = c.drop(pd.date_range(T("2024-01-01 11:00"), periods=3, freq="h"))  # outage 11:00-13:59
    put(c, "2024-01-01 14:00", 97.0, 97.6, 96.9, 97.4)  # opens below the stop 99.5
    model, _ = scripted(["2024-01-01 10:00"])
    r = run_day(c, D1, model)
    t = only_trade(r)
    assert t["exit_time"] == T("2024-01-01 14:00") and t["exit_price"] == 97.0
    assert t["barrier"] == "sl"
    assert t["gross_return"] == -0.03  # exactly (97 - 100) / 100, not -0.005
    assert t["net_return"] == pytest.approx(-0.032, abs=1e-15)
    assert len(r.predictions) == 21  # no candle, no decision during the outage


def test_time_out_exits_at_the_close_of_the_horizon_candle() -> None:
    c = flat_candles()
    for hour, px in (("11:00", 100.3), ("12:00", 99.8), ("13:00", 100.6), ("14:00", 100.4)):
        put(c, f"2024-01-01 {hour}", px, px + 0.1, px - 0.1, px)  # inside 99.5 .. 101
    for h in range(15, 24):
        put(c, f"2024-01-01 {h:02d}:00", 100.4, 100.4, 100.4, 100.4)
    model, _ = scripted(["2024-01-01 10:00"])
    t = only_trade(run_day(c, D1, model))
    assert t["barrier"] == "time"
    assert t["exit_time"] == T("2024-01-01 14:00")  # 10:00 + horizon 4 candles
    assert t["exit_price"] == 100.4
    assert t["gross_return"] == pytest.approx(0.004, abs=1e-14)
    assert t["net_return"] == pytest.approx(0.002, abs=1e-14)


def test_one_position_at_a_time_signals_during_it_are_logged_not_traded() -> None:
    c = flat_candles()
    put(c, "2024-01-01 13:00", 100.2, 101.2, 100.0, 100.5)  # TP of the 10:00 long; closes 100.5
    model, _ = scripted(
        ["2024-01-01 10:00", "2024-01-01 11:00", "2024-01-01 12:00", "2024-01-01 13:00"]
    )
    r = run_day(c, D1, model)
    p = r.predictions.set_index("hour")
    for hour in ("10:00", "11:00", "12:00", "13:00"):  # the decision column is the signal
        assert p.loc[T(f"2024-01-01 {hour}"), "decision"] == "BUY"
    tr = r.trades
    assert tr["entry_time"].tolist() == [T("2024-01-01 10:00"), T("2024-01-01 13:00")]
    assert tr["barrier"].tolist() == ["tp", "time"]
    # flat at 13:00's close (the TP filled inside it), so 13:00's BUY opens the next long at
    # 100.5; the flat 100 candles after it stay above its stop 99.9975: time-out at 17:00
    assert tr["exit_time"].tolist() == [T("2024-01-01 13:00"), T("2024-01-01 17:00")]
    assert tr["entry_price"].tolist() == [100.0, 100.5]
    assert tr["gross_return"].iloc[1] == pytest.approx(-0.5 / 100.5, rel=1e-12)
    assert tr["net_return"].iloc[1] == pytest.approx(-0.5 / 100.5 - 0.002, rel=1e-12)


def test_late_entries_exit_and_reenter_within_the_last_horizon_candles() -> None:
    # 20:00 and 22:00 are within the day's last 4 candles (walked candle by candle)
    c = flat_candles()
    put(c, "2024-01-01 21:00", 100.2, 101.3, 99.9, 100.8)  # TP of the 20:00 long
    model, _ = scripted(["2024-01-01 20:00", "2024-01-01 22:00"])
    r = run_day(c, D1, model)
    t = only_trade(r)
    assert (t["entry_time"], t["exit_time"], t["barrier"]) == (
        T("2024-01-01 20:00"),
        T("2024-01-01 21:00"),
        "tp",
    )
    pos = r.open_position
    assert pos is not None
    assert (pos.entry_time, pos.entry_price, pos.bars_held, pos.last_hour) == (
        T("2024-01-01 22:00"),
        100.0,
        1,
        T("2024-01-01 23:00"),
    )


def test_halt_closes_at_the_next_open_and_blocks_entries_until_lifted() -> None:
    c = flat_candles()
    for hour in range(13, 24):
        put(c, f"2024-01-01 {hour:02d}:00", 100.3, 100.3, 100.3, 100.3)
    put(c, "2024-01-01 13:00", 100.3, 100.4, 100.2, 100.3)
    buys = [f"2024-01-01 {h}:00" for h in (10, 12, 13, 14, 15)]
    model, _ = scripted(buys)

    def halted(t: pd.Timestamp) -> bool:
        return T("2024-01-01 12:00") <= t < T("2024-01-01 15:00")

    r = run_day(c, D1, model, halted=halted)
    tr = r.trades
    assert tr["barrier"].tolist() == ["halt", "time"]
    # halted at 12:00's decision: out at the open of 13:00, 100.3
    assert tr["exit_time"].iloc[0] == T("2024-01-01 13:00")
    assert tr["exit_price"].iloc[0] == 100.3
    assert tr["gross_return"].iloc[0] == pytest.approx(0.003, abs=1e-14)
    assert tr["net_return"].iloc[0] == pytest.approx(0.001, abs=1e-14)
    # the BUYs at 12:00, 13:00, 14:00 (halted) open nothing; 15:00 (lifted) does
    assert tr["entry_time"].iloc[1] == T("2024-01-01 15:00")
    assert tr["exit_time"].iloc[1] == T("2024-01-01 19:00")
    assert tr["gross_return"].iloc[1] == 0.0
    decided = r.predictions.set_index("hour")["decision"]
    assert all(decided[T(h)] == "BUY" for h in buys)  # still logged as BUY


def test_halt_close_meets_a_gap_open_beyond_the_stop_fills_the_stop() -> None:
    c = flat_candles()
    for hour in range(12, 24):
        put(c, f"2024-01-01 {hour:02d}:00", 99.0, 99.0, 99.0, 99.0)
    model, _ = scripted(["2024-01-01 10:00"])
    r = run_day(c, D1, model, halted=lambda t: t == T("2024-01-01 11:00"))
    t = only_trade(r)
    assert t["exit_time"] == T("2024-01-01 12:00") and t["exit_price"] == 99.0
    assert t["barrier"] == "sl" and t["gross_return"] == pytest.approx(-0.01, abs=1e-15)


def test_trading_threshold_none_never_trades() -> None:
    c = flat_candles()
    put(c, "2024-01-01 11:00", 100.2, 101.3, 99.9, 101.1)
    model, _ = scripted([f"2024-01-01 {h:02d}:00" for h in range(24)], p=1.0, threshold=None)
    r = run_day(c, D1, model)
    assert (r.predictions["decision"] == "HOLD").all()
    assert (r.predictions["buy_proba"] == 1.0).all()
    assert r.trades.empty and r.open_position is None
    assert list(r.trades.columns) == list(TRADE_COLUMNS)


def test_journal_columns_and_dtypes() -> None:
    c = flat_candles()
    put(c, "2024-01-01 11:00", 100.2, 101.3, 99.9, 101.1)
    model, _ = scripted(["2024-01-01 10:00"])
    r = run_day(c, D1, model, latency_ms={1: 2.5})
    assert list(r.predictions.columns) == list(PREDICTION_COLUMNS)
    assert list(r.trades.columns) == list(TRADE_COLUMNS)
    assert str(r.predictions["hour"].dtype) == "datetime64[us, UTC]"
    for col in ("entry_time", "exit_time"):
        assert str(r.trades[col].dtype) == "datetime64[us, UTC]"
    assert r.predictions["model_version"].dtype == np.int64
    assert r.trades["model_version"].dtype == np.int64
    assert (r.predictions["latency_ms"] == 2.5).all()
    assert run_day(c, D1, model).predictions["latency_ms"].isna().all()  # not measured
    empty = run_day(flat_candles(), D1, scripted()[0]).trades
    assert empty.empty and empty.dtypes.equals(r.trades.dtypes)


# --------------------------------------------------------------------------- day boundaries
def test_trade_spanning_midnight_is_journaled_on_its_exit_day() -> None:
    c = flat_candles(n_days=2)
    put(c, "2024-01-02 01:00", 100.1, 101.5, 100.0, 101.2)
    model, _ = scripted(["2024-01-01 23:00", "2024-01-02 00:00"])
    day1 = run_day(c, D1, model)
    assert day1.trades.empty
    pos = day1.open_position
    assert pos == Position(
        crypto="BTCUSDC",
        entry_time=T("2024-01-01 23:00"),
        entry_price=100.0,
        model_version=1,
        loss_function="focal",
        bars_held=0,
        last_hour=T("2024-01-01 23:00"),
    )
    day2 = run_day(c, D2, model, open_position=pos)
    t = only_trade(day2)  # 00:00's BUY is during the position: logged, not traded
    assert t["entry_time"] == T("2024-01-01 23:00") and t["exit_time"] == T("2024-01-02 01:00")
    assert t["barrier"] == "tp" and t["gross_return"] == 0.01
    assert day2.open_position is None
    # one replay over both days writes the same journal
    both = replay(
        c,
        zero_features(c),
        D1,
        D2,
        model,
        crypto="BTCUSDC",
        take_profit=TP,
        stop_loss=SL,
        horizon=H,
    )
    pd.testing.assert_frame_equal(both.trades, day2.trades)
    pd.testing.assert_frame_equal(
        both.predictions,
        pd.concat([day1.predictions, day2.predictions], ignore_index=True),
    )


def test_halt_at_2300_closes_the_carried_position_at_the_next_days_first_open() -> None:
    c = flat_candles(n_days=2)
    put(c, "2024-01-02 00:00", 100.2, 100.3, 100.1, 100.2)
    model, _ = scripted(["2024-01-01 21:00"])
    halted = lambda t: t == T("2024-01-01 23:00")  # noqa: E731
    day1 = run_day(c, D1, model, halted=halted)
    assert day1.open_position is not None and day1.open_position.close_at_next_open
    assert day1.open_position.bars_held == 2
    t = only_trade(run_day(c, D2, model, halted=halted, open_position=day1.open_position))
    assert (t["barrier"], t["exit_time"], t["exit_price"]) == ("halt", T(D2), 100.2)


def test_a_day_whose_candles_do_not_exist_yet_names_the_missing_hours() -> None:
    c = flat_candles(n_days=2).loc[: T("2024-01-02 05:00")]
    model, fn = scripted()
    with pytest.raises(ValueError, match=r"2024-01-02 06:00 UTC \.\. 2024-01-02 23:00 UTC") as e:
        run_day(c, D2, model)
    assert "18 hour(s)" in str(e.value) and fn.calls == []
    with pytest.raises(
        ValueError, match="2024-01-02 21:00 UTC, 2024-01-02 22:00 UTC, 2024-01-02 23:00"
    ):
        run_day(flat_candles(n_days=2).loc[: T("2024-01-02 20:00")], D2, model)


def test_position_entered_at_2300_needs_the_next_days_candles() -> None:
    c = flat_candles(n_days=1)
    model, _ = scripted(["2024-01-01 23:00"])
    pos = run_day(c, D1, model).open_position
    assert pos is not None
    with pytest.raises(
        ValueError, match=r"24 hour\(s\): 2024-01-02 00:00 UTC \.\. 2024-01-02 23:00"
    ):
        run_day(c, D2, model, open_position=pos)


def test_a_carried_position_refuses_skipped_days() -> None:
    c = flat_candles(n_days=3)
    model, _ = scripted(["2024-01-01 23:00"])
    pos = run_day(c, D1, model).open_position
    with pytest.raises(ValueError, match="2024-01-02 00:00 UTC .. 2024-01-02 23:00 UTC"):
        run_day(c, "2024-01-03", model, open_position=pos)


def test_replaying_the_same_day_twice_gives_identical_frames() -> None:
    c = flat_candles(n_days=2)
    put(c, "2024-01-01 11:00", 100.2, 101.3, 99.9, 101.1)
    model, _ = scripted(["2024-01-01 10:00", "2024-01-01 22:00"])
    a = run_day(c, D1, model, halted=lambda t: t.hour == 5)
    b = run_day(c, D1, model, halted=lambda t: t.hour == 5)
    pd.testing.assert_frame_equal(a.predictions, b.predictions)
    pd.testing.assert_frame_equal(a.trades, b.trades)
    assert a.open_position == b.open_position and a.open_position is not None


# --------------------------------------------------------------------------- models, leakage
def test_leakage_refused_naming_the_hour_and_the_training_window_end() -> None:
    c = flat_candles()
    model, fn = scripted(train_end=T("2024-01-01 12:00"))
    with pytest.raises(ValueError, match="leakage") as e:
        run_day(c, D1, model)
    assert "2024-01-01 00:00 UTC" in str(e.value) and "2024-01-01 12:00 UTC" in str(e.value)
    assert fn.calls == []  # refused before any prediction


def test_model_switch_mid_day_one_call_per_version_and_leakage_per_version() -> None:
    c = flat_candles()
    m1, f1 = scripted(version=1)
    m2, f2 = scripted(version=2, train_end=T("2024-01-01 12:00"), loss="binary:logistic")
    r = run_day(c, D1, model_schedule([(TRAIN_END, m1), (T("2024-01-01 12:00"), m2)]))
    assert f1.calls == [12] and f2.calls == [12]
    assert r.predictions["model_version"].tolist() == [1] * 12 + [2] * 12
    assert r.predictions["loss_function"].tolist() == ["focal"] * 12 + ["binary:logistic"] * 12
    late, _ = scripted(version=3, train_end=T("2024-01-01 18:00"))
    with pytest.raises(ValueError, match="version 3") as e:
        run_day(c, D1, model_schedule([(TRAIN_END, m1), (T("2024-01-01 12:00"), late)]))
    assert "2024-01-01 12:00 UTC" in str(e.value) and "2024-01-01 18:00 UTC" in str(e.value)


def test_models_as_a_mapping_and_the_version_of_the_entry_is_journaled() -> None:
    c = flat_candles()
    put(c, "2024-01-01 13:00", 100.2, 101.2, 100.0, 101.0)
    m1, _ = scripted(["2024-01-01 10:00"], version=1)
    m2, _ = scripted(version=2)
    by_hour = {t: (m1 if t.hour <= 10 else m2) for t in c.index}
    t = only_trade(run_day(c, D1, by_hour))
    assert t["model_version"] == 1  # the model that decided the entry
    del by_hour[T("2024-01-01 07:00")]
    with pytest.raises(ValueError, match="no live model for hour 2024-01-01 07:00"):
        run_day(c, D1, by_hour)


# --------------------------------------------------------------------------- input refusals
BAD_ARGS: list[tuple[dict[str, Any], str]] = [
    ({"fee_per_side": -0.001}, "fee_per_side"),
    ({"fee_per_side": math.nan}, "fee_per_side"),
    ({"take_profit": 0.0}, "take_profit"),
    ({"stop_loss": 1.0}, "stop_loss"),
    ({"horizon": 0}, "horizon"),
    ({"crypto": ""}, "crypto"),
    ({"halted": lambda t: None}, "halted"),
    ({"halted": 3}, "halted"),
    ({"latency_ms": {1: -1.0}}, r"latency_ms\[1\]"),
    ({"latency_ms": "fast"}, "latency_ms"),
]


@pytest.mark.parametrize(("kw", "field_name"), BAD_ARGS)
def test_bad_arguments_are_refused_before_any_prediction(
    kw: dict[str, Any], field_name: str
) -> None:
    c = flat_candles()
    model, fn = scripted()
    with pytest.raises(ValueError, match=field_name):
        run_day(c, D1, model, **kw)
    assert fn.calls == []


@pytest.mark.parametrize(
    ("day", "needle"),
    [("2024-01-01 05:00", "not a day"), ("yesterday", "first_day"), (20240101, "first_day")],
)
def test_bad_day_is_refused(day: Any, needle: str) -> None:
    model, _ = scripted()
    with pytest.raises(ValueError, match=needle):
        run_day(flat_candles(), day, model)


def test_bad_features_and_candles_are_refused_naming_hour_and_column() -> None:
    c = flat_candles()
    model, fn = scripted()
    feats = zero_features(c)
    feats.loc[T("2024-01-01 03:00"), "rsi_14"] = np.nan
    with pytest.raises(ValueError, match=r"2024-01-01 03:00 UTC: column 'rsi_14'"):
        run_day(c, D1, model, features=feats)
    with pytest.raises(ValueError, match="missing column"):
        run_day(c, D1, model, features=zero_features(c).drop(columns="atr_14"))
    with pytest.raises(ValueError, match="no row for 1 replayed hour"):
        run_day(c, D1, model, features=zero_features(c).drop(T("2024-01-01 09:00")))
    bad = c.copy()
    bad.loc[T("2024-01-01 04:00"), "low"] = 100.5
    with pytest.raises(ValueError, match="'low' at 2024-01-01 04:00"):
        run_day(bad, D1, model)
    with pytest.raises(ValueError, match="candles start at 2024-01-01 01:00"):
        run_day(c.iloc[1:], D1, model)
    with pytest.raises(ValueError, match="UTC DatetimeIndex"):
        run_day(c.tz_localize(None), D1, model, features=zero_features(c))
    assert fn.calls == []


def test_bad_models_and_positions_are_refused() -> None:
    with pytest.raises(ValueError, match="train_end"):
        LiveModel(1, "focal", lambda X: np.zeros(len(X)), 0.5, pd.Timestamp("2024-01-01"))
    with pytest.raises(ValueError, match="trading_threshold"):
        LiveModel(1, "focal", lambda X: np.zeros(len(X)), 1.5, TRAIN_END)
    with pytest.raises(ValueError, match="version"):
        LiveModel(True, "focal", lambda X: np.zeros(len(X)), 0.5, TRAIN_END)
    c = flat_candles(n_days=2)
    two_cols = LiveModel(1, "focal", lambda X: np.zeros((len(X), 2)), 0.5, TRAIN_END)
    with pytest.raises(ValueError, match=r"shape \(24, 2\)"):
        run_day(c, D1, two_cols)
    model, _ = scripted(["2024-01-01 23:00"])
    pos = run_day(c, D1, model).open_position
    assert pos is not None
    with pytest.raises(ValueError, match="open_position.crypto 'BTCUSDC'"):
        run_day(c, D2, model, crypto="ETHUSDC", open_position=pos)
    with pytest.raises(ValueError, match="bars_held"):
        run_day(c, D2, model, open_position=replace(pos, bars_held=4))
    with pytest.raises(ValueError, match="last_hour"):
        run_day(c, D1, model, open_position=pos)  # carried from a later replay


# --------------------------------------------------------------------------- brute-force oracle
def random_candles(seed: int, n: int = 168 + 24 * 8) -> pd.DataFrame:
    """A volatile random walk with gaps between close and next open and a few outages."""
    rng = np.random.default_rng(seed)
    idx = pd.date_range("2023-12-20", periods=n, freq="h", tz=UTC, name="open_time").as_unit("us")
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.003, n)))
    jump = np.where(rng.random(n) < 0.08, rng.normal(0.0, 0.012, n), rng.normal(0.0, 0.0005, n))
    open_ = np.concatenate([[100.0], close[:-1]]) * np.exp(jump)
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 0.002, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 0.002, n)))
    c = pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": rng.random(n) + 1},
        index=idx,
    )
    keep = np.ones(n, dtype=bool)
    keep[200:] = rng.random(n - 200) > 0.04  # outages after the warm-up
    keep[-1] = True
    return c[keep]


def fake_proba(X: pd.DataFrame) -> np.ndarray:
    """A fixed function of the features (independent of the row order)."""
    z = 0.8 * X["ret_z_1"].to_numpy() + 1.5 * X["body"].to_numpy() - 0.4
    return 1.0 / (1.0 + np.exp(-z))


def oracle(
    c: pd.DataFrame,
    feats: pd.DataFrame,
    start: pd.Timestamp,
    end: pd.Timestamp,
    model_at: Callable[[pd.Timestamp], LiveModel],
    halted: Callable[[pd.Timestamp], bool],
    tp: float,
    sl: float,
    h: int,
    fee: float,
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], dict[str, Any] | None]:
    """The rules of the module docstring, one hour at a time, without cvn_assets.market.trading.

    Returns the prediction rows, the closed trades and the position still open at the end."""
    preds: list[tuple[Any, ...]] = []
    trades: list[tuple[Any, ...]] = []
    pos: dict[str, Any] | None = None
    for t, row in c.loc[(c.index >= start) & (c.index < end)].iterrows():
        o, hi, lo, cl = row["open"], row["high"], row["low"], row["close"]
        if pos is not None:
            e = pos["e"]
            up, down = e * (1 + tp), e * (1 - sl)
            pos["bars"] += 1
            ex = None
            if o <= down:
                ex = ("sl", o, (o - e) / e)
            elif o >= up:
                ex = ("tp", o, (o - e) / e)
            elif pos["halt"]:
                ex = ("halt", o, (o - e) / e)
            elif lo <= down:
                ex = ("sl", down, -sl)
            elif hi >= up:
                ex = ("tp", up, tp)
            elif pos["bars"] == h:
                ex = ("time", cl, (cl - e) / e)
            if ex is not None:
                trades.append((pos["t"], e, t, ex[1], ex[0], ex[2], ex[2] - 2 * fee, pos["v"]))
                pos = None
        m = model_at(t)
        p = float(m.predict_proba(feats.loc[[t], list(FEATURE_NAMES)])[0])
        buy = m.trading_threshold is not None and p >= m.trading_threshold
        preds.append((t, m.version, p, "BUY" if buy else "HOLD"))
        if halted(t):
            if pos is not None:
                pos["halt"] = True
        elif buy and pos is None:
            pos = {"t": t, "e": cl, "bars": 0, "halt": False, "v": m.version}
    return preds, trades, pos


@pytest.mark.parametrize(
    ("seed", "tp", "sl", "h", "barriers"),
    [
        (0, 0.01, 0.005, 4, {"sl", "time", "halt"}),
        (1, 0.006, 0.006, 3, {"sl", "tp", "time"}),
        (2, 0.02, 0.004, 6, {"sl", "time", "halt"}),
        (3, 0.004, 0.01, 1, {"tp", "time"}),
        (4, 0.03, 0.03, 12, {"tp", "time", "halt"}),
        (5, 0.015, 0.01, 8, {"tp", "sl", "time", "halt"}),
    ],
)
def test_replay_matches_a_per_hour_loop_on_random_data(
    seed: int, tp: float, sl: float, h: int, barriers: set[str]
) -> None:
    c = random_candles(seed)
    feats = build_features(c)
    first, last = T("2023-12-28"), T("2024-01-03")
    rng = np.random.default_rng(100 + seed)
    m1 = LiveModel(1, "focal", fake_proba, 0.45, T("2023-12-27"))
    m2 = LiveModel(2, "binary:logistic", fake_proba, None, T("2023-12-30 06:00"))
    m3 = LiveModel(3, "focal", fake_proba, 0.4, T("2024-01-02"))
    model_at = model_schedule([(m1.train_end, m1), (m2.train_end, m2), (m3.train_end, m3)])
    halted_hours = set(c.index[rng.random(len(c)) < 0.12])
    halted = lambda t: t in halted_hours  # noqa: E731
    fee = 0.0015
    kw: dict[str, Any] = dict(
        crypto="SOLUSDC", take_profit=tp, stop_loss=sl, horizon=h, fee_per_side=fee, halted=halted
    )
    whole = replay(c, feats, first, last, model_at, **kw)

    preds, trades, still_open = oracle(
        c, feats, first, last + pd.Timedelta(days=1), model_at, halted, tp, sl, h, fee
    )
    # the seeded data exercises the rules: barrier kinds, gap fills, outages, model switches
    assert len(trades) > 10 and {tr[4] for tr in trades} >= barriers
    assert any(tr[4] in ("tp", "sl") and tr[3] == c.loc[tr[2], "open"] for tr in trades)
    assert len(preds) < 7 * 24 and {p[1] for p in preds} == {1, 2, 3}
    got_p = whole.predictions
    assert got_p["hour"].tolist() == [p[0] for p in preds]
    assert got_p["model_version"].tolist() == [p[1] for p in preds]
    np.testing.assert_allclose(got_p["buy_proba"], [p[2] for p in preds], rtol=1e-12)
    assert got_p["decision"].tolist() == [p[3] for p in preds]
    closed = whole.trades
    assert len(closed) == len(trades)
    assert closed["entry_time"].tolist() == [tr[0] for tr in trades]
    assert closed["exit_time"].tolist() == [tr[2] for tr in trades]
    assert closed["barrier"].tolist() == [tr[4] for tr in trades]
    assert closed["model_version"].tolist() == [tr[7] for tr in trades]
    for col, k in (("entry_price", 1), ("exit_price", 3), ("gross_return", 5), ("net_return", 6)):
        np.testing.assert_allclose(closed[col], [tr[k] for tr in trades], rtol=1e-12, atol=1e-15)
    if still_open is None:
        assert whole.open_position is None
    else:
        pos_out = whole.open_position
        assert pos_out is not None
        assert (pos_out.entry_time, pos_out.entry_price, pos_out.model_version) == (
            still_open["t"],
            still_open["e"],
            still_open["v"],
        )
        assert (pos_out.bars_held, pos_out.close_at_next_open) == (
            still_open["bars"],
            still_open["halt"],
        )
        assert pos_out.last_hour == whole.predictions["hour"].iloc[-1]

    # day by day with the position carried: exactly the same journal and final position
    pos, day_preds, day_trades = None, [], []
    for day in pd.date_range(first, last, freq="D"):
        r = replay_day(c, feats, day, model_at, open_position=pos, **kw)
        day_preds.append(r.predictions)
        day_trades.append(r.trades)
        pos = r.open_position
    pd.testing.assert_frame_equal(pd.concat(day_preds, ignore_index=True), whole.predictions)
    pd.testing.assert_frame_equal(pd.concat(day_trades, ignore_index=True), whole.trades)
    assert pos == whole.open_position

    # features=None recomputes the same causal features from the candles
    again = replay(c, None, first, last, model_at, **kw)
    pd.testing.assert_frame_equal(again.trades, whole.trades)
    np.testing.assert_allclose(again.predictions["buy_proba"], whole.predictions["buy_proba"])


# --------------------------------------------------------------------------- a real booster
def test_real_booster_wrapped_as_calibrated_model_lines_up() -> None:
    candles = synthetic_candles(["BTCUSDC"], hours=1400, seed=3)["BTCUSDC"]
    feats = build_features(candles)
    train_end = T("2023-08-20")  # 1176 candles before it
    labels = triple_barrier_labels(candles, take_profit=TP, stop_loss=SL, horizon=H)
    labels = labels[labels["t1"] < train_end]  # no label looks past the training window
    ds = assemble_dataset(feats, labels)
    plan = three_way_fold_plan(ds.index, ds["t1"], n_splits=3)[2]
    variant = DEFAULT_VARIANTS[1]  # a focal variant: margins -> primary calibrator
    trained = train_cell(
        variant,
        ds,
        plan,
        params={"max_depth": 3, "nthread": 1},
        num_boost_round=25,
        early_stopping_rounds=5,
        seed=0,
    )
    cal = calibrate_and_evaluate(trained, variant, ds, plan, primary="platt", fee_per_side=FEE)
    live = live_model_from_calibrated(
        cal, version=11, train_end=train_end, trading_threshold=cal.threshold
    )
    assert live.loss_function == "focal"

    day = "2023-08-22"
    r = replay_day(
        candles, feats, day, live, crypto="BTCUSDC", take_profit=TP, stop_loss=SL, horizon=H
    )
    hours = pd.date_range(T(day), periods=24, freq="h")
    expected = cal.predict_proba(feats.loc[hours, list(FEATURE_NAMES)])[:, 1]
    assert r.predictions.shape == (24, len(PREDICTION_COLUMNS))
    np.testing.assert_allclose(r.predictions["buy_proba"], expected, rtol=1e-12)
    assert r.predictions["decision"].tolist() == [
        "BUY" if p >= cal.threshold else "HOLD" for p in expected
    ]
    assert (r.predictions["model_version"] == 11).all()

    with pytest.raises(ValueError, match="2023-08-19 00:00 UTC.*2023-08-20 00:00 UTC"):
        replay_day(
            candles,
            feats,
            "2023-08-19",
            live,
            crypto="BTCUSDC",
            take_profit=TP,
            stop_loss=SL,
            horizon=H,
        )

    # latency: one row through features (recomputed from trailing candles), booster, calibrator
    i = int(candles.index.get_loc(T("2023-08-22 23:00")))
    window = candles.iloc[: i + 1]
    row = live_feature_row(window)
    assert row.index[0] == T("2023-08-22 23:00") and list(row.columns) == list(FEATURE_NAMES)
    np.testing.assert_allclose(row.to_numpy()[0], feats.iloc[i].to_numpy(), rtol=1e-9, atol=1e-12)
    stats = measure_latency(live, None, window, n=5)
    assert len(stats.samples_ms) == 5 and 0 < stats.median_ms <= stats.max_ms
    assert stats.p95_ms <= stats.max_ms
    with pytest.raises(ValueError, match="n must be"):
        measure_latency(live, None, window, n=0)
    with pytest.raises(ValueError, match="one-row DataFrame"):
        measure_latency(live, lambda w: build_features(w).iloc[-2:], window, n=1)


# --------------------------------------------------------------------------- drift inputs
NON_LABEL = [c for c in PREDICTION_COLUMNS if c not in ("label", "label_known_at")]


def _gap_day() -> pd.DataFrame:
    """D1 at 100 with a stop touch at 06:00, a take-profit touch at 11:00, an outage
    14:00-16:59 ended by a gap-up open at 101.5, and a take-profit touch at 23:00."""
    c = flat_candles()
    put(c, "2024-01-01 06:00", 100.0, 100.0, 99.4, 100.0)  # low 99.4 <= stop 99.5
    put(c, "2024-01-01 11:00", 100.2, 101.3, 99.9, 101.1)  # high 101.3 >= 101
    c = c.drop(pd.date_range(T("2024-01-01 14:00"), periods=3, freq="h"))
    put(c, "2024-01-01 17:00", 101.5, 101.6, 101.4, 101.5)  # gap up beyond 101
    put(c, "2024-01-01 23:00", 100.0, 101.2, 100.0, 100.0)
    return c


def test_labels_and_when_they_became_known_by_hand_with_a_gap() -> None:
    c = _gap_day()
    model, _ = scripted(["2024-01-01 10:00"])
    r = run_day(c, D1, model)
    p = r.predictions.set_index("hour")
    assert (
        str(p["label"].dtype) == "Int8" and str(p["label_known_at"].dtype) == "datetime64[us, UTC]"
    )
    d2 = "2024-01-02 00:00"
    expected = {  # entry hour: (label, label_known_at = close of the resolving candle)
        "01:00": (0, "06:00"),  # time-out: candles 02..05 flat, closed at 05:00's close
        "05:00": (0, "07:00"),  # 06:00's low touches the stop 99.5
        "06:00": (0, "11:00"),  # time-out at 10:00
        "07:00": (1, "12:00"),  # 11:00's high touches 101 (low 99.9 stays above 99.5)
        "10:00": (1, "12:00"),
        "11:00": (0, "13:00"),  # entry 101.1: 12:00 opens at 100 <= 100.59, a gap stop
        "12:00": (1, "18:00"),  # 13:00 flat, then (positional) 17:00 opens at 101.5 >= 101
        "13:00": (1, "18:00"),  # the next candle after the outage gaps over the take-profit
        "17:00": (0, "19:00"),  # entry 101.5: 18:00 opens at 100, a gap stop
        "18:00": (0, "23:00"),  # time-out at 22:00
        "19:00": (1, d2),  # 23:00 touches 101 with a full horizon
        "20:00": (1, d2),  # ... and with fewer than 4 later candles: resolved all the same
        "22:00": (1, d2),
    }
    for hour, (lab, known) in expected.items():
        t = T(f"2024-01-01 {hour}")
        want = T(known if known == d2 else f"2024-01-01 {known}")
        assert (p.loc[t, "label"], p.loc[t, "label_known_at"]) == (lab, want), hour
    # 23:00 needs candles of the next day: unresolved, NULL in the journal
    last = T("2024-01-01 23:00")
    assert pd.isna(p.loc[last, "label"]) and pd.isna(p.loc[last, "label_known_at"])
    assert p["label"].isna().sum() == 1
    # equal to the labels module wherever it labels these candles
    tb = triple_barrier_labels(c, take_profit=TP, stop_loss=SL, horizon=H)
    assert len(tb) == 21 - 4
    assert p.loc[tb.index, "label"].astype(int).tolist() == tb["label"].astype(int).tolist()
    # a resolved label is known after the decision and at the latest at the vertical barrier
    ok = p["label"].notna()
    known_at = p.loc[ok, "label_known_at"]
    assert (known_at > known_at.index).all()
    t1 = tb["t1"] + pd.Timedelta(hours=1)
    assert (p.loc[tb.index, "label_known_at"] <= t1).all()
    time_outs = tb.index[tb["barrier"] == "time"]
    assert (p.loc[time_outs, "label_known_at"] == t1[time_outs]).all()

    # with the next day's candles (flat at 100): 23:00 times out at 03:00's close; the labels
    # module agrees on every hour, and nothing but the labels changed (decisions are causal)
    c2 = pd.concat([c, flat_candles(D2)])
    r2 = run_day(c2, D1, model, features=zero_features(c2))
    p2 = r2.predictions.set_index("hour")
    assert (p2.loc[last, "label"], p2.loc[last, "label_known_at"]) == (0, T("2024-01-02 04:00"))
    tb2 = triple_barrier_labels(c2, take_profit=TP, stop_loss=SL, horizon=H)
    assert p2["label"].astype(int).tolist() == tb2.loc[p2.index, "label"].astype(int).tolist()
    pd.testing.assert_frame_equal(r2.predictions[NON_LABEL], r.predictions[NON_LABEL])
    pd.testing.assert_frame_equal(r2.trades, r.trades)
    assert r2.open_position == r.open_position
    both = p["label"].notna()
    assert (
        (p2.loc[both, ["label", "label_known_at"]] == p.loc[both, ["label", "label_known_at"]])
        .all()
        .all()
    )


@pytest.mark.parametrize(("seed", "h"), [(0, 4), (1, 6), (2, 1), (3, 12)])
def test_labels_equal_the_labels_module_and_appear_once_known(seed: int, h: int) -> None:
    """On random candles with outages: the journal's label is the labels module's, and with
    the candles cut at any hour X a label is present exactly when it was known by X's close
    (label_known_at <= X + 1 h); decisions and trades never depend on the later candles."""
    c = random_candles(seed)
    feats = build_features(c)
    first, last = T("2023-12-28"), T("2024-01-02")
    model = LiveModel(1, "focal", fake_proba, 0.45, T("2023-12-27"))
    kw: dict[str, Any] = dict(crypto="SOLUSDC", take_profit=TP, stop_loss=SL, horizon=h)
    full = replay(c, feats, first, last, model, **kw).predictions.set_index("hour")
    tb = triple_barrier_labels(c, take_profit=TP, stop_loss=SL, horizon=h)
    assert full["label"].notna().all()  # candles go on for days after the replay
    assert full["label"].astype(int).tolist() == tb.loc[full.index, "label"].astype(int).tolist()
    assert (full["label_known_at"] <= tb.loc[full.index, "t1"] + pd.Timedelta(hours=1)).all()
    base = replay(c[c.index < last + pd.Timedelta(days=1)], feats, first, last, model, **kw)
    for cut in (
        last + pd.Timedelta(hours=23),
        last + pd.Timedelta(hours=26),
        last + pd.Timedelta(days=3),
    ):
        cut_c = c[c.index <= cut]
        r = replay(cut_c, feats, first, last, model, **kw)
        p = r.predictions.set_index("hour")
        known = full["label_known_at"] <= cut_c.index[-1] + pd.Timedelta(hours=1)
        assert p["label"].notna().tolist() == known.tolist()
        assert (p.loc[known, "label"] == full.loc[known, "label"]).all()
        assert (p.loc[known, "label_known_at"] == full.loc[known, "label_known_at"]).all()
        pd.testing.assert_frame_equal(r.predictions[NON_LABEL], base.predictions[NON_LABEL])
        pd.testing.assert_frame_equal(r.trades, base.trades)
        assert r.open_position == base.open_position


def test_feature_columns_are_the_live_models_top_features_in_order() -> None:
    c = random_candles(7)
    feats = build_features(c)
    top_a = ("rsi_14", "ret_1", "body")
    top_b = ("dist_low_168", "rv_24", "hour_cos", "atr_14", "volume_z_24")
    a = LiveModel(1, "focal", fake_proba, 0.45, T("2023-12-27"), top_features=top_a)
    b = LiveModel(2, "focal", fake_proba, 0.45, T("2023-12-29 13:00"), top_features=top_b)
    none = LiveModel(3, "focal", fake_proba, 0.45, T("2023-12-30 05:00"))
    sched = model_schedule([(a.train_end, a), (b.train_end, b), (none.train_end, none)])
    kw: dict[str, Any] = dict(crypto="SOLUSDC", take_profit=TP, stop_loss=SL, horizon=H)
    p = replay(c, None, "2023-12-28", "2023-12-30", sched, **kw).predictions.set_index("hour")
    cols = [f"feature_{i}" for i in range(1, 6)]
    for model, names in ((1, top_a), (2, top_b)):
        rows = p.index[p["model_version"] == model]
        assert len(rows) > 10
        want = feats.loc[rows, list(names)].to_numpy()
        np.testing.assert_array_equal(p.loc[rows, cols[: len(names)]].to_numpy(), want)
        assert p.loc[rows, cols[len(names) :]].isna().all().all()
    assert p.loc[p["model_version"] == 3, cols].isna().all().all()
    # hand-checked: hour_cos at 13:00 is cos(2 pi 13 / 24)
    t = T("2023-12-29 13:00")
    assert p.loc[t, "model_version"] == 2
    assert p.loc[t, "feature_3"] == pytest.approx(math.cos(2 * math.pi * 13 / 24))
    # given features and features=None agree
    q = replay(c, feats, "2023-12-28", "2023-12-30", sched, **kw).predictions.set_index("hour")
    np.testing.assert_allclose(q[cols].to_numpy(), p[cols].to_numpy(), rtol=1e-12)
    # refusals
    with pytest.raises(ValueError, match=r"\['rsi'\] not among the FEATURE_NAMES"):
        LiveModel(1, "focal", fake_proba, 0.5, TRAIN_END, top_features=("rsi",))
    with pytest.raises(ValueError, match="at most 5 distinct names"):
        LiveModel(1, "focal", fake_proba, 0.5, TRAIN_END, top_features=("body", "body"))
    with pytest.raises(ValueError, match="at most 5 distinct names"):
        LiveModel(1, "focal", fake_proba, 0.5, TRAIN_END, top_features=FEATURE_NAMES[:6])
    with pytest.raises(ValueError, match="must be a sequence of feature names"):
        LiveModel(1, "focal", fake_proba, 0.5, TRAIN_END, top_features="body")  # type: ignore[arg-type]
    assert top_feature_names({"top_features": [{"name": "body", "gain": 2.0}, "rsi_14"]}) == (
        "body",
        "rsi_14",
    )
    assert top_feature_names({}) == () and top_feature_names(None) == ()


def test_shadow_mode_logs_the_candidate_beside_an_unchanged_champion() -> None:
    c = random_candles(4)
    feats = build_features(c)
    champ = LiveModel(1, "focal", fake_proba, 0.45, T("2023-12-27"))

    def inverse(X: pd.DataFrame) -> np.ndarray:
        return 1.0 - fake_proba(X)

    cand = LiveModel(7, "binary:logistic", inverse, 0.5, T("2023-12-29 08:00"))
    never = LiveModel(8, "focal", inverse, None, T("2023-12-20"))
    sched = candidate_schedule(
        [
            (T("2023-12-29 06:00"), cand),  # set at 06:00, trained up to 08:00: shadowed from 08
            (T("2023-12-30 00:00"), None),  # closed (promoted or rejected)
            (T("2023-12-30 12:00"), never),  # a candidate that never trades
        ]
    )
    kw: dict[str, Any] = dict(crypto="SOLUSDC", take_profit=TP, stop_loss=SL, horizon=H)
    alone = replay(c, feats, "2023-12-28", "2023-12-30", champ, **kw)
    shadow = replay(c, feats, "2023-12-28", "2023-12-30", champ, candidates=sched, **kw)
    cand_cols = ["candidate_version", "candidate_buy_proba", "candidate_decision"]
    others = [col for col in PREDICTION_COLUMNS if col not in cand_cols]
    pd.testing.assert_frame_equal(shadow.predictions[others], alone.predictions[others])
    pd.testing.assert_frame_equal(shadow.trades, alone.trades)
    assert shadow.open_position == alone.open_position
    assert alone.predictions[cand_cols].isna().all().all()
    assert str(shadow.predictions["candidate_version"].dtype) == "Int64"

    p = shadow.predictions.set_index("hour")
    h = p.index
    live7 = (h >= T("2023-12-29 08:00")) & (h < T("2023-12-30 00:00"))
    live8 = h >= T("2023-12-30 12:00")
    assert (p.loc[live7, "candidate_version"] == 7).all() and (
        p.loc[live8, "candidate_version"] == 8
    ).all()
    assert p.loc[~(live7 | live8), cand_cols].isna().all().all()
    want = 1.0 - fake_proba(feats.loc[h[live7], list(FEATURE_NAMES)])
    np.testing.assert_allclose(p.loc[live7, "candidate_buy_proba"], want, rtol=1e-12)
    assert p.loc[live7, "candidate_decision"].tolist() == [
        "BUY" if x >= 0.5 else "HOLD" for x in want
    ]
    assert {"BUY", "HOLD"} == set(p.loc[live7, "candidate_decision"])
    assert (p.loc[live8, "candidate_decision"] == "HOLD").all()  # threshold None: never BUY
    # the same as a mapping (a missing hour: no candidate) and as a function of the hour
    as_map = {t: sched(t) for t in h if sched(t) is not None}
    for source in (as_map, sched.__call__):
        again = replay(c, feats, "2023-12-28", "2023-12-30", champ, candidates=source, **kw)
        pd.testing.assert_frame_equal(again.predictions, shadow.predictions)
    # a ModelSchedule as candidates: none before its start; one LiveModel: every hour
    ms = replay(
        c,
        feats,
        "2023-12-28",
        "2023-12-30",
        champ,
        candidates=model_schedule([(T("2023-12-29 10:00"), cand)]),
        **kw,
    )
    pm = ms.predictions.set_index("hour")
    assert pm["candidate_version"].notna().tolist() == (h >= T("2023-12-29 10:00")).tolist()
    one = replay(c, feats, "2023-12-28", "2023-12-30", champ, candidates=never, **kw)
    assert (one.predictions["candidate_version"] == 8).all()
    # a day-by-day replay gives the same shadow columns
    days = [
        replay_day(c, feats, d, champ, candidates=sched, **kw).predictions
        for d in ("2023-12-28", "2023-12-29", "2023-12-30")
    ]
    pd.testing.assert_frame_equal(pd.concat(days, ignore_index=True), shadow.predictions)
    # refusals
    with pytest.raises(ValueError, match="not a LiveModel or None"):
        replay(c, feats, "2023-12-28", "2023-12-28", champ, candidates=lambda t: "x", **kw)
    bad = LiveModel(7, "focal", inverse, 0.5, T("2023-12-29 08:00"))
    with pytest.raises(ValueError, match="two different candidate models claim version 7"):
        replay(
            c,
            feats,
            "2023-12-29",
            "2023-12-30",
            champ,
            candidates=candidate_schedule([(T("2023-12-29"), cand), (T("2023-12-30"), bad)]),
            **kw,
        )
    other = LiveModel(champ.version, champ.loss_function, inverse, 0.99, champ.train_end)
    with pytest.raises(ValueError, match=rf"two different models claim version {champ.version}: "):
        replay(
            c, feats, "2023-12-28", "2023-12-29",
            lambda t: champ if t < T("2023-12-29") else other, **kw,
        )  # fmt: skip
    with pytest.raises(ValueError, match="candidate version 7: buy_proba 1.5"):
        broken = LiveModel(7, "focal", lambda X: np.full(len(X), 1.5), 0.5, T("2023-12-20"))
        replay(c, feats, "2023-12-28", "2023-12-28", champ, candidates=broken, **kw)
    with pytest.raises(ValueError, match="strictly increasing"):
        candidate_schedule([(T("2023-12-29"), cand), (T("2023-12-29"), None)])
    assert candidate_schedule([])(T("2024-01-01")) is None


# --------------------------------------------------------------------------- hour windows (live)
@pytest.mark.parametrize(("seed", "h", "cuts"), [(0, 4, (5, 6, 30, 31)), (5, 8, (1, 23, 24, 47))])
def test_hour_windows_with_the_position_carried_equal_one_replay(
    seed: int, h: int, cuts: tuple[int, ...]
) -> None:
    """The live loop's steps: consecutive hour windows (1 hour, across midnight, a day), each
    carrying the previous one's position, give exactly the rows, trades and final position of
    one replay over the days (which the per-hour oracle above checks), with a halt inside."""
    c = random_candles(seed)
    feats = build_features(c)
    first, last = T("2023-12-28"), T("2023-12-30")
    model = LiveModel(1, "focal", fake_proba, 0.45, T("2023-12-27"))
    kw: dict[str, Any] = dict(crypto="SOLUSDC", take_profit=0.006, stop_loss=0.004, horizon=h)
    free = replay(c, feats, first, last, model, **kw).trades  # a halt where a position is open
    long = free[free["exit_time"] - free["entry_time"] >= pd.Timedelta(hours=3)].iloc[0]
    halt_at = {
        long["entry_time"] + pd.Timedelta(hours=1),
        long["entry_time"] + pd.Timedelta(hours=2),
    }
    kw["halted"] = lambda t: t in halt_at
    whole = replay(c, feats, first, last, model, **kw)
    assert len(whole.trades) >= 5 and "halt" in set(whole.trades["barrier"])
    hours = whole.predictions["hour"]
    bounds = [0, *cuts, len(hours)]
    parts, trades, pos = [], [], None
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        r = replay_hours(
            c, feats, hours.iloc[lo], hours.iloc[hi - 1], model, open_position=pos, **kw
        )
        parts.append(r.predictions)
        trades.append(r.trades)
        pos = r.open_position
    got = pd.concat(parts, ignore_index=True)
    pd.testing.assert_frame_equal(got[NON_LABEL], whole.predictions[NON_LABEL])
    pd.testing.assert_frame_equal(pd.concat(trades, ignore_index=True), whole.trades)
    assert pos == whole.open_position


def test_replay_hours_refuses_bad_hours_and_missing_candles() -> None:
    c = random_candles(0)
    model = LiveModel(1, "focal", fake_proba, 0.45, T("2023-12-27"))
    kw: dict[str, Any] = dict(crypto="SOLUSDC", take_profit=0.006, stop_loss=0.004, horizon=4)
    with pytest.raises(ValueError, match="first_hour .*10:30.* is not on the hour"):
        replay_hours(c, None, T("2023-12-28 10:30"), T("2023-12-28 11:00"), model, **kw)
    with pytest.raises(ValueError, match="last_hour .* is before first_hour"):
        replay_hours(c, None, T("2023-12-28 10:00"), T("2023-12-28 09:00"), model, **kw)
    end = c.index[-1]
    with pytest.raises(ValueError, match=r"hours .* cannot be replayed yet: .*missing 2 hour"):
        replay_hours(c, None, end - pd.Timedelta(hours=3), end + pd.Timedelta(hours=2), model, **kw)


@pytest.mark.parametrize(("seed", "h"), [(0, 4), (3, 12)])
def test_hour_labels_equal_the_replays_labels_and_the_labels_module(seed: int, h: int) -> None:
    c = random_candles(seed)
    first, last = T("2023-12-28 20:00"), T("2023-12-29 03:00")
    model = LiveModel(1, "focal", fake_proba, 0.45, T("2023-12-27"))
    kw: dict[str, Any] = dict(take_profit=TP, stop_loss=SL, horizon=h)
    tb = triple_barrier_labels(c, **kw)
    for cut in (last + pd.Timedelta(hours=2), last + pd.Timedelta(days=2)):
        cut_c = c[c.index <= cut]
        got = hour_labels(cut_c, first, last, **kw)
        want = replay_hours(cut_c, None, first, last, model, crypto="X", **kw).predictions
        assert got["hour"].tolist() == want["hour"].tolist()
        pd.testing.assert_series_equal(got["label"], want["label"])
        pd.testing.assert_series_equal(got["label_known_at"], want["label_known_at"])
    assert got["label"].astype(int).tolist() == tb.loc[got["hour"], "label"].astype(int).tolist()
    with pytest.raises(ValueError, match="last_hour .* is before first_hour"):
        hour_labels(c, last, first, **kw)


def test_no_entry_blocks_entries_only_and_keeps_open_positions_to_their_barriers() -> None:
    """The fail-safe's rule: a BUY in a blocked hour opens nothing; a position opened before
    the block exits exactly as without it (a halt would close it at the next open)."""
    c = random_candles(1)
    feats = build_features(c)
    first, last = T("2023-12-28"), T("2023-12-30")
    model = LiveModel(1, "focal", fake_proba, 0.45, T("2023-12-27"))
    kw: dict[str, Any] = dict(crypto="SOLUSDC", take_profit=0.006, stop_loss=0.004, horizon=6)
    free = replay(c, feats, first, last, model, **kw).trades
    long = free[free["exit_time"] - free["entry_time"] >= pd.Timedelta(hours=3)].iloc[0]
    lo, hi = long["entry_time"] + pd.Timedelta(hours=1), long["entry_time"] + pd.Timedelta(hours=30)
    blocked = replay(c, feats, first, last, model, no_entry=lambda t: lo <= t <= hi, **kw)
    got = blocked.trades
    assert not ((got["entry_time"] >= lo) & (got["entry_time"] <= hi)).any()
    # the position open when the block started is untouched; before it, nothing changed
    row = got[got["entry_time"] == long["entry_time"]].iloc[0]
    assert row["exit_time"] == long["exit_time"] and row["barrier"] == long["barrier"]
    pd.testing.assert_frame_equal(
        got[got["entry_time"] <= long["entry_time"]],
        free[free["entry_time"] <= long["entry_time"]],
    )
    assert ((free["entry_time"] >= lo) & (free["entry_time"] <= hi)).sum() >= 3
    # the signals are still journaled as the model gave them
    pd.testing.assert_frame_equal(
        blocked.predictions, replay(c, feats, first, last, model, **kw).predictions
    )
    with pytest.raises(ValueError, match="no_entry must be a function"):
        replay(c, feats, first, last, model, no_entry=3, **kw)


def test_a_time_out_across_an_outage_counts_candles_not_hours() -> None:
    """The rule across a gap (bars are positional): a long bought at the 10:00 close with
    an outage 11:00-12:59 meets 13:00, 14:00, 15:00, 16:00 -- its ``horizon`` (4) candles that
    exist -- and times out at the close of 16:00 (by the clock it would be 14:00)."""
    c = flat_candles()
    c = c.drop(pd.date_range(T("2024-01-01 11:00"), periods=2, freq="h"))  # outage
    for hour, px in (("13:00", 100.3), ("14:00", 99.8), ("15:00", 100.6), ("16:00", 100.2)):
        put(c, f"2024-01-01 {hour}", px, px + 0.1, px - 0.1, px)  # inside 99.5 .. 101
    for h in range(17, 24):
        put(c, f"2024-01-01 {h:02d}:00", 100.2, 100.2, 100.2, 100.2)
    model, _ = scripted(["2024-01-01 10:00"])
    r = run_day(c, D1, model)
    t = only_trade(r)
    assert (t["barrier"], t["exit_time"]) == ("time", T("2024-01-01 16:00"))
    assert t["exit_price"] == 100.2
    assert t["gross_return"] == pytest.approx(0.002, abs=1e-14)  # (100.2 - 100) / 100
    assert t["net_return"] == pytest.approx(0.0, abs=1e-14)  # 0.002 - 2 * 0.001
    assert len(r.predictions) == 22  # no decision at the two missing hours


def test_missing_hours_lists_the_hours_without_a_candle() -> None:
    from cvn_assets.market.candles_io import missing_hours

    c = flat_candles(n_days=2).drop([T("2024-01-01 05:00"), T("2024-01-02 23:00")])
    assert missing_hours(c.index, T(D1), T("2024-01-02 22:00")) == [T("2024-01-01 05:00")]
    assert missing_hours(c.index, T(D1), T("2024-01-02 23:00"))[-1] == T("2024-01-02 23:00")
    assert missing_hours(c.index, T(D2), T(D1)) == []
    with pytest.raises(ValueError, match="first 2024-01-01 00:30:00"):
        missing_hours(c.index, T("2024-01-01 00:30"), T(D2))
