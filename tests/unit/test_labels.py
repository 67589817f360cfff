"""Triple-barrier labels: hand-worked cases and a brute-force loop as the oracle."""

import numpy as np
import pandas as pd
import pytest

from cvn_assets.market.labels import (
    LabelStrategy,
    labels_for_strategy,
    parse_label_strategy,
    triple_barrier_labels,
)


def _candles(
    rows: list[tuple[float, float, float, float]], start: str = "2024-01-01"
) -> pd.DataFrame:
    idx = pd.date_range(start, periods=len(rows), freq="h", tz="UTC", name="open_time")
    o, h, lo, c = (list(x) for x in zip(*rows, strict=True))
    return pd.DataFrame(
        {"open": o, "high": h, "low": lo, "close": c, "volume": 1.0}, index=idx.as_unit("us")
    )


# ------------------------------------------------------------------ parse_label_strategy


def test_parse_default_strategy() -> None:
    s = parse_label_strategy("SL0.5_TP1_H4")
    assert s == LabelStrategy(stop_loss=0.005, take_profit=0.01, horizon=4)
    assert s.name == "SL0.5_TP1_H4"


def test_parse_other_values_round_trip() -> None:
    s = parse_label_strategy("SL1.25_TP2.5_H12")
    assert s.stop_loss == pytest.approx(0.0125)
    assert s.take_profit == pytest.approx(0.025)
    assert s.horizon == 12
    assert parse_label_strategy(s.name) == s


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "SL0.5_TP1",
        "sl0.5_tp1_h4",
        "SL-1_TP1_H4",
        "SL0.5_TP1_H4.5",
        "SLx_TP1_H4",
        "SL0.5_TP1_H4_extra",
        "TP1_SL0.5_H4",
        "SL.5_TP1_H4",
    ],
)
def test_parse_rejects_malformed(bad: str) -> None:
    with pytest.raises(ValueError, match="malformed label strategy") as err:
        parse_label_strategy(bad)
    assert repr(bad) in str(err.value)


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ("SL0_TP1_H4", "stop-loss"),
        ("SL0.0_TP1_H4", "stop-loss"),
        ("SL100_TP1_H4", "stop-loss"),
        ("SL0.5_TP0_H4", "take-profit"),
        ("SL0.5_TP1_H0", "horizon"),
    ],
)
def test_parse_rejects_zero_and_impossible(bad: str, field: str) -> None:
    with pytest.raises(ValueError, match=field) as err:
        parse_label_strategy(bad)
    assert bad in str(err.value)


def test_parse_rejects_non_string() -> None:
    with pytest.raises(ValueError, match="string"):
        parse_label_strategy(None)  # type: ignore[arg-type]


# ------------------------------------------------------------------ hand-made cases


def test_hand_made_sequence_horizon_2() -> None:
    # take_profit 1 %, stop 0.5 %, horizon 2. Rows (open, high, low, close):
    rows = [
        (100.0, 100.0, 100.0, 100.0),  # 0
        (100.0, 100.5, 99.8, 100.2),  # 1
        (100.2, 101.2, 100.0, 101.0),  # 2
        (101.0, 101.1, 100.4, 100.5),  # 3
        (100.5, 102.0, 99.0, 101.0),  # 4
        (101.0, 101.0, 101.0, 101.0),  # 5
    ]
    c = _candles(rows)
    out = triple_barrier_labels(c, take_profit=0.01, stop_loss=0.005, horizon=2)
    # Worked on paper:
    # row 0: entry 100, TP 101, SL 99.5. k=1 (row 1): high 100.5, low 99.8 -> nothing.
    #        k=2 (row 2): high 101.2 >= 101 -> take-profit first: BUY, ret +0.01.
    # row 1: entry 100.2, TP 101.202, SL 99.699. k=1 (row 2): high 101.2 < 101.202 (near miss),
    #        low 100.0 > 99.699. k=2 (row 3): 101.1 / 100.4 -> nothing: time-out,
    #        ret = close[3]/close[1] - 1 = 100.5/100.2 - 1.
    # row 2: entry 101, TP 102.01, SL 100.495. k=1 (row 3): low 100.4 <= 100.495 -> stop.
    # row 3: entry 100.5, TP 101.505, SL 99.9975. k=1 (row 4): high 102 >= TP and low 99 <= SL
    #        in the same candle -> tie, counted as stop first.
    # rows 4, 5: the last `horizon` rows have no label and are dropped.
    assert list(out.index) == list(c.index[:4])
    assert out["label"].tolist() == [1, 0, 0, 0]
    assert out["barrier"].tolist() == ["tp", "time", "sl", "sl"]
    assert out["tie"].tolist() == [False, False, False, True]
    np.testing.assert_allclose(out["ret"], [0.01, 100.5 / 100.2 - 1.0, -0.005, -0.005])
    assert list(out["t1"]) == list(c.index[2:6])  # open time of bar i + horizon
    assert out.attrs["tie_share"] == pytest.approx(0.25)
    assert out.attrs["buy_rate"] == pytest.approx(0.25)
    assert out["label"].dtype == np.int8
    assert out["tie"].dtype == bool
    assert out["t1"].dtype == c.index.dtype


def test_exact_touch_counts_and_stop_beats_later_take_profit() -> None:
    # take_profit 50 %, stop 25 %: barriers 150 and 75 are exact in binary floating point.
    rows = [
        (100.0, 100.0, 100.0, 100.0),  # 0: entry 100
        (100.0, 110.0, 75.0, 100.0),  # 1: low == 75 exactly -> stop touched at k=1
        (100.0, 150.0, 100.0, 120.0),  # 2: high == 150 exactly (row 0 already stopped)
        (120.0, 121.0, 119.0, 120.0),  # 3
    ]
    out = triple_barrier_labels(_candles(rows), take_profit=0.5, stop_loss=0.25, horizon=2)
    # row 0: stop touched exactly at k=1, before the take-profit touched exactly at k=2 -> sl.
    # row 1: entry 100, barriers 150 / 75: k=1 (row 2) high 150 touches exactly -> tp.
    assert out["barrier"].tolist() == ["sl", "tp"]
    assert out["label"].tolist() == [0, 1]
    assert out["tie"].tolist() == [False, False]


def test_horizon_one_timeout_return_is_next_close() -> None:
    rows = [(10.0, 10.0, 10.0, 10.0), (10.0, 10.05, 9.97, 10.02), (10.02, 10.03, 10.0, 10.01)]
    out = triple_barrier_labels(_candles(rows), take_profit=0.01, stop_loss=0.005, horizon=1)
    # row 0: TP 10.1, SL 9.95; row 1 spans 9.97..10.05 -> time-out, ret = 10.02/10 - 1.
    # row 1: TP 10.1202, SL 9.9699; row 2 spans 10.0..10.03 -> time-out, ret = 10.01/10.02 - 1.
    assert out["barrier"].tolist() == ["time", "time"]
    np.testing.assert_allclose(out["ret"], [10.02 / 10.0 - 1, 10.01 / 10.02 - 1])


def test_bars_are_positional_across_a_gap() -> None:
    rows = [(100.0, 100.0, 100.0, 100.0)] * 3 + [(100.0, 101.5, 100.0, 101.0)]
    c = _candles(rows)
    # a 5-hour outage between row 1 and row 2
    c.index = pd.DatetimeIndex(
        [
            c.index[0],
            c.index[1],
            c.index[1] + pd.Timedelta(hours=6),
            c.index[1] + pd.Timedelta(hours=7),
        ],
        name="open_time",
    )
    out = triple_barrier_labels(c, horizon=2)
    # row 1 looks at rows 2 and 3 (positional), so row 3's high 101.5 >= 101 is a take-profit,
    # and t1 of row 1 is the open time of row 3 (7 clock hours later, not 2).
    assert out["label"].tolist() == [0, 1]
    assert out["t1"].iloc[1] == c.index[3]


def test_labels_for_strategy_string() -> None:
    rng = np.random.default_rng(3)
    c = _random_candles(rng, 200)
    a = labels_for_strategy(c, "SL0.5_TP1_H4")
    b = triple_barrier_labels(c, take_profit=0.01, stop_loss=0.005, horizon=4)
    pd.testing.assert_frame_equal(a, b)
    assert a.attrs["strategy"] == "SL0.5_TP1_H4"


# ------------------------------------------------------------------ brute force oracle


def _random_candles(
    rng: np.random.Generator, n: int, vol: float = 0.006, gap_p: float = 0.0
) -> pd.DataFrame:
    """Random walk candles; with ``gap_p`` > 0 an open jumps away from the previous close."""
    close = 100.0 * np.exp(np.cumsum(rng.standard_t(4, n) * vol))
    open_ = np.concatenate([[100.0], close[:-1]])
    if gap_p > 0:
        jump = np.where(rng.random(n) < gap_p, rng.normal(0.0, 3 * vol, n), 0.0)
        open_ = open_ * np.exp(jump)
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, vol, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, vol, n)))
    idx = pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC", name="open_time")
    return pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": 1.0},
        index=idx.as_unit("us"),
    )


def _brute_force(c: pd.DataFrame, tp: float, sl: float, h: int) -> pd.DataFrame:
    rows = []
    open_, high = c["open"].to_numpy(), c["high"].to_numpy()
    low, close = c["low"].to_numpy(), c["close"].to_numpy()
    for i in range(len(c) - h):
        entry = close[i]
        result = ("time", 0, close[i + h] / entry - 1.0, False)
        for k in range(1, h + 1):
            # a candle opening through a barrier fills at its open (gap), never a tie
            if open_[i + k] <= entry * (1 - sl):
                result = ("sl", 0, min(-sl, open_[i + k] / entry - 1.0), False)
                break
            if open_[i + k] >= entry * (1 + tp):
                result = ("tp", 1, max(tp, open_[i + k] / entry - 1.0), False)
                break
            up = high[i + k] >= entry * (1 + tp)
            down = low[i + k] <= entry * (1 - sl)
            if down:
                result = ("sl", 0, -sl, bool(up))
                break
            if up:
                result = ("tp", 1, tp, False)
                break
        rows.append(result)
    return pd.DataFrame(rows, columns=["barrier", "label", "ret", "tie"])


@pytest.mark.parametrize(
    ("seed", "tp", "sl", "h", "vol", "gap_p"),
    [
        (0, 0.01, 0.005, 4, 0.006, 0.0),
        (1, 0.01, 0.005, 1, 0.006, 0.0),
        (2, 0.02, 0.01, 10, 0.004, 0.0),
        (3, 0.006, 0.005, 3, 0.005, 0.0),  # large moves: many ties
        (4, 0.03, 0.002, 6, 0.002, 0.0),
        (5, 0.01, 0.005, 4, 0.006, 0.1),  # opens jump away from the previous close
        (6, 0.02, 0.01, 8, 0.004, 0.05),
    ],
)
def test_matches_brute_force_on_random_candles(
    seed: int, tp: float, sl: float, h: int, vol: float, gap_p: float
) -> None:
    rng = np.random.default_rng(seed)
    c = _random_candles(rng, 3000, vol, gap_p)
    out = triple_barrier_labels(c, take_profit=tp, stop_loss=sl, horizon=h)
    ref = _brute_force(c, tp, sl, h)
    assert len(out) == len(c) - h
    assert out["barrier"].tolist() == ref["barrier"].tolist()
    assert out["label"].tolist() == ref["label"].tolist()
    assert out["tie"].tolist() == ref["tie"].tolist()
    np.testing.assert_allclose(out["ret"].to_numpy(), ref["ret"].to_numpy(), rtol=0, atol=1e-15)
    assert list(out["t1"]) == list(c.index[h:])
    assert out.attrs["tie_share"] == pytest.approx(ref["tie"].mean())
    # every outcome occurs, so the comparison exercised all branches
    assert set(ref["barrier"]) == {"tp", "sl", "time"}
    # with jumping opens some trades are decided at a gap open (and none without)
    assert (out.attrs["n_gap_fills"] > 0) == (gap_p > 0)


def test_random_case_contains_ties() -> None:
    rng = np.random.default_rng(3)
    out = triple_barrier_labels(_random_candles(rng, 3000, 0.01), 0.005, 0.005, 3)
    assert out["tie"].sum() > 0
    assert (out.loc[out["tie"], "barrier"] == "sl").all()


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("kwargs", "msg"),
    [
        ({"horizon": 0}, "horizon"),
        ({"horizon": 2.5}, "horizon"),
        ({"take_profit": 0.0}, "take_profit"),
        ({"take_profit": -0.01}, "take_profit"),
        ({"take_profit": float("nan")}, "take_profit"),
        ({"stop_loss": 0.0}, "stop_loss"),
        ({"stop_loss": 1.0}, "stop_loss"),
    ],
)
def test_rejects_bad_barriers(kwargs: dict, msg: str) -> None:
    c = _random_candles(np.random.default_rng(0), 50)
    with pytest.raises(ValueError, match=msg):
        triple_barrier_labels(c, **kwargs)


def test_rejects_too_few_rows_and_missing_columns() -> None:
    c = _random_candles(np.random.default_rng(0), 4)
    with pytest.raises(ValueError, match="need more than horizon=4 candles"):
        triple_barrier_labels(c, horizon=4)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['high'\]"):
        triple_barrier_labels(c.drop(columns="high"), horizon=2)
    with pytest.raises(ValueError, match="need more than"):
        triple_barrier_labels(c.iloc[:0], horizon=1)


def test_rejects_nan_price_naming_row() -> None:
    c = _random_candles(np.random.default_rng(0), 20)
    c.iloc[7, c.columns.get_loc("low")] = np.nan
    with pytest.raises(ValueError, match=r"'low' row 7 .*nan"):
        triple_barrier_labels(c)


def test_open_is_required_and_validated() -> None:
    c = _random_candles(np.random.default_rng(0), 20)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['open'\]"):
        triple_barrier_labels(c.drop(columns="open"))
    c.iloc[5, c.columns.get_loc("open")] = 0.0
    with pytest.raises(
        ValueError, match=r"'open' row 5 \(open_time 2024-01-01 05:00:00\+00:00\).*0\.0"
    ):
        triple_barrier_labels(c)
