"""Gap-aware barrier fills: hand-worked cases and a brute-force per-row loop as the oracle."""

import numpy as np
import pandas as pd
import pytest

from cvn_assets.market.labels import triple_barrier_labels
from cvn_assets.market.trading import bar_fills, check_barriers, simulate_long_trades


def _frame(times: list[str], rows: list[tuple[float, float, float, float]]) -> pd.DataFrame:
    idx = pd.DatetimeIndex(times, tz="UTC", name="open_time").as_unit("us")
    o, h, lo, c = (list(x) for x in zip(*rows, strict=True))
    return pd.DataFrame({"open": o, "high": h, "low": lo, "close": c, "volume": 1.0}, index=idx)


def _simulate(rows: list[tuple[float, float, float, float]], tp: float, sl: float, h: int):
    o, hi, lo, c = (np.array(x) for x in zip(*rows, strict=True))
    return simulate_long_trades(o, hi, lo, c, take_profit=tp, stop_loss=sl, horizon=h)


# ------------------------------------------------------------------ the issue's example


def test_issue_example_gap_down_after_outage_fills_stop_at_open() -> None:
    # Long entered at the close 100 of the 00:00 candle; TP 1 % -> 101, SL 0.5 % -> 99.5; H4.
    # The exchange is down 01:00-03:59; the 04:00 candle opens at 97, below the stop: a stop
    # order is triggered by the first trade, at 97. ret = 97/100 - 1 = -0.03 (not -0.005).
    c = _frame(
        [
            "2024-01-01 00:00",
            "2024-01-01 04:00",
            "2024-01-01 05:00",
            "2024-01-01 06:00",
            "2024-01-01 07:00",
        ],
        [
            (99.8, 100.2, 99.7, 100.0),  # 00:00: entry at close 100
            (97.0, 97.6, 96.9, 97.4),  # 04:00: gap open 97
            (97.4, 98.0, 97.2, 97.9),
            (97.9, 98.3, 97.5, 98.0),
            (98.0, 98.4, 97.8, 98.1),
        ],
    )
    out = triple_barrier_labels(c, take_profit=0.01, stop_loss=0.005, horizon=4)
    row = out.iloc[0]
    assert row["ret"] == -0.03  # exactly: (97 - 100) / 100
    assert row["barrier"] == "sl"
    assert row["label"] == 0
    assert not row["tie"]
    assert out["t1"].iloc[0] == c.index[4]
    assert out.attrs["n_gap_fills"] == 1


def test_gap_down_decides_even_if_the_candle_later_reaches_take_profit() -> None:
    # The 04:00 candle opens at 97 and rallies to 102: the stop already filled at the open.
    rows = [(100.0, 100.0, 100.0, 100.0), (97.0, 102.0, 96.0, 101.5), (101.5, 101.6, 101.4, 101.5)]
    t = _simulate(rows, 0.01, 0.005, 2)
    assert t.barrier[0] == "sl"
    assert t.ret[0] == -0.03
    assert not t.tie[0]
    assert t.gap[0]
    assert t.exit_offset[0] == 1


def test_upward_mirror_gap_up_fills_take_profit_at_open() -> None:
    # Opens at 102 >= TP 101 -> take-profit at the open: ret = 102/100 - 1 = 0.02, BUY, no tie,
    # even though the same candle later trades down through the stop (99).
    c = _frame(
        ["2024-01-01 00:00", "2024-01-01 04:00", "2024-01-01 05:00"],
        [(100.0, 100.0, 100.0, 100.0), (102.0, 102.5, 99.0, 99.2), (99.2, 99.5, 99.0, 99.3)],
    )
    out = triple_barrier_labels(c, take_profit=0.01, stop_loss=0.005, horizon=2)
    row = out.iloc[0]
    assert row["ret"] == 0.02
    assert row["barrier"] == "tp"
    assert row["label"] == 1
    assert not row["tie"]


def test_open_between_barriers_touching_both_is_a_tie_at_the_stop() -> None:
    # Opens at 100.2 (between 99.5 and 101), high 101.3, low 99.4: order unknown -> stop first.
    t = _simulate([(100.0, 100.0, 100.0, 100.0), (100.2, 101.3, 99.4, 100.0)], 0.01, 0.005, 1)
    assert t.barrier[0] == "sl"
    assert t.ret[0] == -0.005
    assert t.tie[0]
    assert not t.gap[0]


def test_touch_only_cases_fill_at_the_barrier() -> None:
    # TP only: opens 100.1, high 101.4 -> +0.01.  SL only: opens 99.9, low 99.0 -> -0.005.
    tp = _simulate([(100.0, 100.0, 100.0, 100.0), (100.1, 101.4, 99.9, 101.2)], 0.01, 0.005, 1)
    assert (tp.barrier[0], tp.ret[0], tp.tie[0], tp.gap[0]) == ("tp", 0.01, False, False)
    sl = _simulate([(100.0, 100.0, 100.0, 100.0), (99.9, 100.3, 99.0, 99.2)], 0.01, 0.005, 1)
    assert (sl.barrier[0], sl.ret[0], sl.tie[0], sl.gap[0]) == ("sl", -0.005, False, False)


def test_open_exactly_at_a_barrier_fills_there() -> None:
    # TP 50 %, SL 25 %: barriers 150 and 75 are exact in binary floating point.
    up = _simulate([(100.0, 100.0, 100.0, 100.0), (150.0, 160.0, 60.0, 100.0)], 0.5, 0.25, 1)
    assert (up.barrier[0], up.ret[0], up.tie[0], up.gap[0]) == ("tp", 0.5, False, True)
    dn = _simulate([(100.0, 100.0, 100.0, 100.0), (75.0, 160.0, 60.0, 100.0)], 0.5, 0.25, 1)
    assert (dn.barrier[0], dn.ret[0], dn.tie[0], dn.gap[0]) == ("sl", -0.25, False, True)


def test_gap_in_a_later_candle_and_first_fill_wins() -> None:
    rows = [
        (100.0, 100.0, 100.0, 100.0),  # 0: entry 100 (TP 101, SL 99.5)
        (100.0, 100.4, 99.8, 100.3),  # 1: no touch for row 0
        (98.0, 98.5, 97.5, 98.2),  # 2: gap open 98 -> row 0 stops at 98: -0.02
        (103.0, 104.0, 102.0, 103.5),  # 3
        (103.5, 103.6, 103.4, 103.5),  # 4
        (103.5, 103.6, 103.4, 103.5),  # 5
    ]
    t = _simulate(rows, 0.01, 0.005, 3)
    # row 0: k=1 nothing, k=2 gap down at 98 -> (98 - 100) / 100 = -0.02, exit at offset 2
    #        (the gap up at k=3 comes too late).
    # row 1: entry 100.3 (TP 101.303, SL 99.7985): k=1 opens 98 -> (98 - 100.3) / 100.3.
    # row 2: entry 98.2 (TP 99.182): k=1 opens 103 -> gap up: (103 - 98.2) / 98.2.
    assert t.barrier.tolist() == ["sl", "sl", "tp"]
    assert t.exit_offset.tolist() == [2, 1, 1]
    assert t.gap.tolist() == [True, True, True]
    assert t.ret[0] == -0.02
    np.testing.assert_allclose(t.ret[1:], [-2.3 / 100.3, 4.8 / 98.2], rtol=1e-12)


def test_time_out_closes_at_the_last_close() -> None:
    rows = [(100.0, 100.0, 100.0, 100.0), (100.0, 100.6, 99.7, 100.4), (100.4, 100.9, 100.1, 100.8)]
    t = _simulate(rows, 0.01, 0.005, 2)
    assert t.barrier.tolist() == ["time"]
    assert t.exit_offset.tolist() == [2]
    np.testing.assert_allclose(t.ret, [0.008], rtol=1e-12)


def test_bar_fills_one_candle_for_several_positions() -> None:
    # One candle (open 100, high 101, low 99) against five entries, TP 1 %, SL 0.5 %.
    entry = np.array([103.0, 99.0, 100.0, 99.9, 100.4])
    f = bar_fills(entry, 100.0, 101.0, 99.0, take_profit=0.01, stop_loss=0.005)
    # 103: SL 102.485 >= open -> gap stop, (100 - 103) / 103.
    # 99: TP 99.99 <= open -> gap take-profit, (100 - 99) / 99.
    # 100: barriers 101 / 99.5, both touched -> tie at the stop.
    # 99.9: barriers 100.899 / 99.4005, both touched -> tie at the stop.
    # 100.4: TP 101.404 not touched, SL 99.898 touched -> stop.
    assert f.stop_loss.tolist() == [True, False, True, True, True]
    assert f.take_profit.tolist() == [False, True, False, False, False]
    assert f.gap.tolist() == [True, True, False, False, False]
    assert f.tie.tolist() == [False, False, True, True, False]
    np.testing.assert_allclose(f.ret, [-3 / 103, 1 / 99, -0.005, -0.005, -0.005], rtol=1e-12)
    none = bar_fills(100.0, 100.0, 100.5, 99.8, take_profit=0.01, stop_loss=0.005)
    assert not none.filled.any()
    assert np.isnan(none.ret).all()


# ------------------------------------------------------------------ brute force oracle


def _gappy_candles(rng: np.random.Generator, n: int, vol: float, gap_p: float) -> pd.DataFrame:
    """Random OHLC whose opens jump away from the previous close with probability ``gap_p``."""
    body = rng.standard_t(4, n) * vol
    jump = np.where(rng.random(n) < gap_p, rng.normal(0.0, 3 * vol, n), 0.0)
    close = np.empty(n)
    open_ = np.empty(n)
    prev = 100.0
    for i in range(n):
        open_[i] = prev * np.exp(jump[i])
        close[i] = open_[i] * np.exp(body[i])
        prev = close[i]
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, vol, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, vol, n)))
    idx = pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC", name="open_time")
    return pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": 1.0},
        index=idx.as_unit("us"),
    )


def _brute_force(c: pd.DataFrame, tp: float, sl: float, h: int) -> list[tuple]:
    """Per row, per candle, plain Python: (barrier, label, ret, tie, gap, exit_offset)."""
    o, hi, lo, cl = (c[k].tolist() for k in ("open", "high", "low", "close"))
    rows = []
    for i in range(len(c) - h):
        e = cl[i]
        up, down = e * (1 + tp), e * (1 - sl)
        result = ("time", 0, (cl[i + h] - e) / e, False, False, h)
        for k in range(1, h + 1):
            j = i + k
            if o[j] <= down:  # opened through the stop: filled at the open
                result = ("sl", 0, min(-sl, (o[j] - e) / e), False, True, k)
                break
            if o[j] >= up:  # opened through the take-profit: filled at the open
                result = ("tp", 1, max(tp, (o[j] - e) / e), False, True, k)
                break
            if lo[j] <= down:  # stop touched (first, if the take-profit was touched too)
                result = ("sl", 0, -sl, hi[j] >= up, False, k)
                break
            if hi[j] >= up:
                result = ("tp", 1, tp, False, False, k)
                break
        rows.append(result)
    return rows


@pytest.mark.parametrize(
    ("seed", "tp", "sl", "h", "vol", "gap_p"),
    [
        (0, 0.01, 0.005, 4, 0.006, 0.1),
        (1, 0.01, 0.005, 1, 0.006, 0.2),
        (2, 0.02, 0.01, 10, 0.004, 0.05),
        (3, 0.006, 0.005, 3, 0.005, 0.3),  # large moves: many ties and gap fills
        (4, 0.02, 0.003, 3, 0.002, 0.1),  # tight stop
        (5, 0.01, 0.005, 12, 0.0015, 0.03),  # long horizon
    ],
)
def test_vectorized_matches_brute_force_with_gap_opens(
    seed: int, tp: float, sl: float, h: int, vol: float, gap_p: float
) -> None:
    rng = np.random.default_rng(seed)
    c = _gappy_candles(rng, 2000, vol, gap_p)
    t = simulate_long_trades(c["open"], c["high"], c["low"], c["close"], tp, sl, h)
    ref = _brute_force(c, tp, sl, h)
    barrier, label, ret, tie, gap, offset = (list(x) for x in zip(*ref, strict=True))
    assert t.barrier.tolist() == barrier
    assert t.take_profit.astype(int).tolist() == label
    assert t.tie.tolist() == tie
    assert t.gap.tolist() == gap
    assert t.exit_offset.tolist() == offset
    np.testing.assert_allclose(t.ret, ret, rtol=0, atol=1e-15)
    # the labels go through the same rule
    out = triple_barrier_labels(c, take_profit=tp, stop_loss=sl, horizon=h)
    assert out["barrier"].tolist() == barrier
    np.testing.assert_array_equal(out["ret"].to_numpy(), t.ret)
    # every branch was exercised: gap and touch fills on both sides, ties, time-outs
    kinds = {(b, g) for b, g in zip(barrier, gap, strict=True)}
    assert {("tp", True), ("tp", False), ("sl", True), ("sl", False), ("time", False)} <= kinds
    assert any(tie)
    # gap fills never flatter: at least as bad as the stop, at least as good as the take-profit
    r = np.asarray(ret)
    g = np.asarray(gap)
    b = np.asarray(barrier)
    assert (r[g & (b == "sl")] <= -sl).all()
    assert (r[g & (b == "tp")] >= tp).all()


# ------------------------------------------------------------------ bad input


def test_rejects_bad_barriers_and_horizon() -> None:
    with pytest.raises(ValueError, match="take_profit"):
        check_barriers(0.0, 0.005)
    with pytest.raises(ValueError, match="stop_loss"):
        check_barriers(0.01, 1.0)
    with pytest.raises(ValueError, match="horizon"):
        check_barriers(0.01, 0.005, 0)
    with pytest.raises(ValueError, match="stop_loss"):
        bar_fills(100.0, 100.0, 101.0, 99.0, take_profit=0.01, stop_loss=-0.1)


def test_rejects_bad_arrays() -> None:
    p = np.full(5, 100.0)
    with pytest.raises(ValueError, match="equal lengths"):
        simulate_long_trades(p[:4], p, p, p, 0.01, 0.005, 2)
    with pytest.raises(ValueError, match="need more than horizon=5"):
        simulate_long_trades(p, p, p, p, 0.01, 0.005, 5)
    bad = p.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match=r"open\[3\] = nan"):
        simulate_long_trades(bad, p, p, p, 0.01, 0.005, 2)
    with pytest.raises(ValueError, match=r"low\[0\] = -1.0"):
        simulate_long_trades(p, p, np.r_[-1.0, p[1:]], p, 0.01, 0.005, 2)
    with pytest.raises(ValueError, match="1-D"):
        simulate_long_trades(p.reshape(5, 1), p, p, p, 0.01, 0.005, 2)
    with pytest.raises(ValueError, match="common shape"):
        bar_fills(p, p[:3], p, p, 0.01, 0.005)
