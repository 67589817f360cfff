"""Causal features (no look-ahead, explicit warm-up, hand-checked values) and dataset assembly."""

import math

import numpy as np
import pandas as pd
import pytest

from cvn_assets.market.candles_io import CandleValidationError
from cvn_assets.market.dataset import DatasetError, assemble_dataset
from cvn_assets.market.features import FEATURE_NAMES, WARMUP_BARS, build_features
from cvn_assets.market.labels import triple_barrier_labels
from cvn_assets.market.synthetic_market import synthetic_candles


def _candles(n: int, seed: int = 0, start: str = "2024-01-01") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    r = rng.standard_t(4, n) * 0.006
    close = 100.0 * np.exp(np.cumsum(r))
    open_ = np.concatenate([[100.0], close[:-1]])
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.003, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.003, n)))
    volume = np.exp(rng.normal(5, 0.5, n))
    idx = pd.date_range(start, periods=n, freq="h", tz="UTC", name="open_time").as_unit("us")
    return pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume}, index=idx
    )


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    c = _candles(700)
    # legal oddities: a flat zero-volume candle (exchange outage) and a flat stretch of volume
    i = 400
    px = c["close"].iloc[i - 1]
    c.iloc[i] = [px, px, px, px, 0.0]
    c.iloc[i + 1, c.columns.get_loc("open")] = px
    c.iloc[i + 1, c.columns.get_loc("high")] = max(c["high"].iloc[i + 1], px)
    c.iloc[i + 1, c.columns.get_loc("low")] = min(c["low"].iloc[i + 1], px)
    return c


@pytest.fixture(scope="module")
def feats(candles: pd.DataFrame) -> pd.DataFrame:
    return build_features(candles)


def test_names_and_dtypes(feats: pd.DataFrame) -> None:
    assert 20 <= len(FEATURE_NAMES) <= 40
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert tuple(feats.columns) == FEATURE_NAMES
    assert all(dt == np.float64 for dt in feats.dtypes)


def test_warm_up_is_explicit(feats: pd.DataFrame) -> None:
    assert WARMUP_BARS == 167  # longest window 168 rows (volume z-score, 168-h extremes)
    assert feats.iloc[:WARMUP_BARS].isna().all().all()
    assert not feats.iloc[WARMUP_BARS:].isna().any().any()  # incl. the flat zero-volume candle
    assert np.isfinite(feats.iloc[WARMUP_BARS:].to_numpy()).all()
    assert feats.attrs["warmup_bars"] == WARMUP_BARS


@pytest.mark.parametrize("i", [WARMUP_BARS, 250, 399, 400, 520, 698])
def test_no_look_ahead(candles: pd.DataFrame, feats: pd.DataFrame, i: int) -> None:
    # replace every candle after row i by a different, valid future
    future = _candles(len(candles), seed=99)
    changed = candles.copy()
    scale = candles["close"].iloc[i] / future["open"].iloc[i + 1]
    changed.iloc[i + 1 :] = future.iloc[i + 1 :].to_numpy() * np.array([scale] * 4 + [3.0])
    changed.iloc[i + 1, changed.columns.get_loc("open")] = candles["close"].iloc[i]
    hi, lo = changed["high"].iloc[i + 1], changed["low"].iloc[i + 1]
    changed.iloc[i + 1, changed.columns.get_loc("high")] = max(hi, candles["close"].iloc[i])
    changed.iloc[i + 1, changed.columns.get_loc("low")] = min(lo, candles["close"].iloc[i])
    after = build_features(changed)
    pd.testing.assert_frame_equal(after.iloc[: i + 1], feats.iloc[: i + 1], check_exact=True)
    if i + 1 < len(candles):  # the change did reach the features (the test can fail)
        assert not after.iloc[i + 1 :].equals(feats.iloc[i + 1 :])


def test_hand_checked_values(candles: pd.DataFrame, feats: pd.DataFrame) -> None:
    c = candles
    i = 300
    close, high, low, open_ = (c[k].to_numpy() for k in ("close", "high", "low", "open"))
    r = np.diff(np.log(close))  # r[j-1] is the return into row j
    row = feats.iloc[i]
    assert row["ret_1"] == pytest.approx(math.log(close[i] / close[i - 1]), rel=1e-12)
    assert row["ret_24"] == pytest.approx(math.log(close[i] / close[i - 24]), rel=1e-12)
    assert row["rv_6"] == pytest.approx(np.std(r[i - 6 : i], ddof=1), rel=1e-9)
    assert row["rv_72"] == pytest.approx(np.std(r[i - 72 : i], ddof=1), rel=1e-9)
    park = math.sqrt(
        np.mean(np.log(high[i - 23 : i + 1] / low[i - 23 : i + 1]) ** 2) / (4 * math.log(2))
    )
    assert row["parkinson_24"] == pytest.approx(park, rel=1e-9)
    rng = high[i] - low[i]
    assert row["body"] == pytest.approx((close[i] - open_[i]) / rng)
    assert row["upper_wick"] == pytest.approx((high[i] - max(open_[i], close[i])) / rng)
    assert row["lower_wick"] == pytest.approx((min(open_[i], close[i]) - low[i]) / rng)
    assert row["body"] ** 2 <= 1 and row["upper_wick"] >= 0 and row["lower_wick"] >= 0
    assert abs(row["body"]) + row["upper_wick"] + row["lower_wick"] == pytest.approx(1.0)
    assert row["dist_high_24"] == pytest.approx(math.log(close[i] / high[i - 23 : i + 1].max()))
    assert row["dist_low_168"] == pytest.approx(math.log(close[i] / low[i - 167 : i + 1].min()))
    lv = np.log1p(c["volume"].to_numpy()[i - 23 : i + 1])
    assert row["volume_z_24"] == pytest.approx((lv[-1] - lv.mean()) / lv.std(ddof=1), rel=1e-9)
    # Wilder ATR by its recursion: first value at row 13 is the plain EWM start (adjust=False)
    tr = np.maximum.reduce(
        [
            high - low,
            np.abs(high - np.concatenate([[np.nan], close[:-1]])),
            np.abs(low - np.concatenate([[np.nan], close[:-1]])),
        ]
    )
    tr[0] = high[0] - low[0]
    atr = tr[0]
    for j in range(1, i + 1):
        atr = atr + (tr[j] - atr) / 14
    assert row["atr_14"] == pytest.approx(atr / close[i], rel=1e-9)
    # 2024-01-01 is a Monday; row 300 opens 12:00 on day 12 (Saturday, day_of_week 5)
    assert c.index[i].hour == 12 and c.index[i].day_of_week == 5
    assert row["hour_sin"] == pytest.approx(math.sin(2 * math.pi * 12 / 24), abs=1e-12)
    assert row["hour_cos"] == pytest.approx(-1.0)
    assert row["dow_sin"] == pytest.approx(math.sin(2 * math.pi * 5 / 7))


def test_degenerate_windows_are_defined() -> None:
    n = WARMUP_BARS + 30
    idx = pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC", name="open_time")
    close = 100.0 * 1.001 ** np.arange(n)  # strictly rising, constant volume
    open_ = np.concatenate([[100.0], close[:-1]])
    c = pd.DataFrame(
        {"open": open_, "high": close, "low": open_, "close": close, "volume": 7.0}, index=idx
    )
    f = build_features(c).iloc[WARMUP_BARS:]
    assert (f["rsi_14"] == 100.0).all()  # no losses at all
    assert (f["volume_z_24"] == 0.0).all() and (f["volume_z_168"] == 0.0).all()  # constant
    assert (f["volume_chg_1"] == 0.0).all()
    assert np.allclose(f["body"], 1.0) and np.allclose(f["upper_wick"], 0.0)
    assert np.allclose(f["dist_high_24"], 0.0)  # closes at the running high
    # a perfectly flat market: zero range and zero volatility are mapped, not NaN
    flat = pd.DataFrame(
        {"open": 5.0, "high": 5.0, "low": 5.0, "close": 5.0, "volume": 0.0}, index=idx
    )
    g = build_features(flat).iloc[WARMUP_BARS:]
    assert not g.isna().any().any()
    assert (g["rsi_14"] == 50.0).all() and (g["rv_ratio_6_72"] == 1.0).all()
    assert (g["body"] == 0.0).all() and (g["ret_z_1"] == 0.0).all()


# ------------------------------------------------------------------ flat windows (trading halt)

_CALENDAR = ("hour_sin", "hour_cos", "dow_sin", "dow_cos")
_WILDER_FLAT_BARS = 63  # (13/14)^63 < 1 %: the pre-halt share left in a period-14 Wilder average
# documented value over a flat stretch and the rows of flat stretch it needs (module docstring)
_FLAT: dict[str, tuple[float, int]] = {
    **{f"ret_{k}": (0.0, k) for k in (1, 2, 4, 8, 24, 72)},
    **{f"rv_{w}": (0.0, w) for w in (6, 24, 72)},
    "rv_ratio_6_72": (1.0, 72),
    "parkinson_24": (0.0, 24),
    "atr_14": (0.0, _WILDER_FLAT_BARS),
    "rsi_14": (50.0, _WILDER_FLAT_BARS),
    "ret_z_1": (0.0, 24),
    "mom_z_24": (0.0, 24),
    "volume_z_24": (0.0, 24),
    "volume_z_168": (0.0, 168),
    "volume_chg_1": (0.0, 2),
    **{name: (0.0, 1) for name in ("body", "upper_wick", "lower_wick", "range_rel")},
    **{f"dist_{side}_{w}": (0.0, w) for side in ("high", "low") for w in (24, 168)},
}
_HALT_STARTS = (300, 333)


@pytest.fixture(scope="module")
def market() -> pd.DataFrame:
    return synthetic_candles(("BTCUSDC",), seed=3, hours=900)["BTCUSDC"]


def _halted(c: pd.DataFrame, start: int, hours: int) -> pd.DataFrame:
    """A trading halt: ``hours`` candles with O = H = L = C = the previous close, volume 0."""
    out = c.copy()
    px = out["close"].iloc[start - 1]
    out.iloc[start : start + hours] = [px, px, px, px, 0.0]
    after = start + hours  # trading resumes from the halt price
    out.iloc[after, out.columns.get_loc("open")] = px
    out.iloc[after, out.columns.get_loc("high")] = max(out["high"].iloc[after], px)
    out.iloc[after, out.columns.get_loc("low")] = min(out["low"].iloc[after], px)
    return out


def test_flat_table_covers_every_feature() -> None:
    assert set(_FLAT) | set(_CALENDAR) == set(FEATURE_NAMES)
    assert not set(_FLAT) & set(_CALENDAR)
    from cvn_assets.market.features import WILDER_FLAT_BARS

    assert WILDER_FLAT_BARS == _WILDER_FLAT_BARS


@pytest.mark.parametrize("hours", [120, 240])
def test_flat_halt_gives_documented_value_whatever_came_before(
    market: pd.DataFrame, hours: int
) -> None:
    base = build_features(market)
    feats = {s: build_features(_halted(market, s, hours)) for s in _HALT_STARTS}
    # the 120-h halt holds every window but the 168-row ones; the 240-h halt holds them all
    checked = {name: flat for name, flat in _FLAT.items() if flat[1] <= hours}
    assert len(checked) == (len(_FLAT) - 3 if hours < 168 else len(_FLAT))
    wrong = []
    for name, (value, need) in checked.items():
        # rows of the halt whose whole window for this feature lies inside the halt
        tails = [f[name].to_numpy()[s + need - 1 : s + hours] for s, f in feats.items()]
        for s, tail in zip(feats, tails, strict=True):
            bad = np.flatnonzero(tail != value)
            if bad.size:
                wrong.append(
                    f"{name}: halt at row {s} gives {tail[bad[0]]!r} at halt row "
                    f"{need - 1 + bad[0]} (documented {value!r})"
                )
        if not np.array_equal(tails[0], tails[1]):
            wrong.append(f"{name}: differs between halts starting at rows {_HALT_STARTS}")
    assert not wrong, "\n".join(wrong)
    for name in _CALENDAR:  # no history: a halt changes nothing
        for f in feats.values():
            pd.testing.assert_series_equal(f[name], base[name])


def test_rv_ratio_over_a_halt_does_not_depend_on_where_it_starts(market: pd.DataFrame) -> None:
    # regression: pandas' online rolling std left ~3e-10 in rv_72 after the large returns before
    # a halt at row 333 had left the window, so an exact-zero guard gave 0 there and 1 at row 300
    for s in _HALT_STARTS:
        f = build_features(_halted(market, s, 120)).iloc[s + 120 - 24 : s + 120]
        assert (f["rv_72"] == 0.0).all(), f"halt at {s}: rv_72 = {f['rv_72'].max()!r}"
        assert (f["rv_ratio_6_72"] == 1.0).all(), f"halt at {s}: {f['rv_ratio_6_72'].unique()}"


def test_rounding_level_dispersion_is_flat() -> None:
    # log1p(volume) differing only in its last bit is rounding, not a volume surprise
    n = WARMUP_BARS + 40
    c = _candles(n)
    lv = math.log1p(1000.0)
    v2 = 1000.0
    while math.log1p(v2) == lv:
        v2 = float(np.nextafter(v2, np.inf))
    assert 0 < math.log1p(v2) - lv <= 2 * math.ulp(lv)
    c["volume"] = np.where(np.arange(n) % 3 == 0, v2, 1000.0)
    f = build_features(c).iloc[WARMUP_BARS:]
    assert (f["volume_z_24"] == 0.0).all() and (f["volume_z_168"] == 0.0).all()


def _plain_formulas(c: pd.DataFrame) -> pd.DataFrame:
    """The changed features as plain pandas formulas (online rolling moments, no flat rules)."""
    log_c = np.log(c["close"])
    r = log_c.diff()
    rv = {w: r.rolling(w).std() for w in (6, 24, 72)}
    log_v = np.log1p(c["volume"])
    delta = c["close"].diff()
    gain = delta.clip(lower=0.0).ewm(alpha=1 / 14, adjust=False, min_periods=14).mean()
    loss = (-delta).clip(lower=0.0).ewm(alpha=1 / 14, adjust=False, min_periods=14).mean()
    prev_c = c["close"].shift(1)
    tr = pd.concat(
        [c["high"] - c["low"], (c["high"] - prev_c).abs(), (c["low"] - prev_c).abs()], axis=1
    ).max(axis=1)
    out = {f"rv_{w}": s for w, s in rv.items()}
    out["rv_ratio_6_72"] = rv[6] / rv[72]
    out["parkinson_24"] = np.sqrt(
        (np.log(c["high"] / c["low"]) ** 2).rolling(24).mean() / (4 * math.log(2))
    )
    out["atr_14"] = tr.ewm(alpha=1 / 14, adjust=False, min_periods=14).mean() / c["close"]
    out["rsi_14"] = 100 * (gain / (gain + loss))
    out["ret_z_1"] = r / rv[24]
    out["mom_z_24"] = (log_c - log_c.shift(24)) / (rv[24] * math.sqrt(24))
    for w in (24, 168):
        out[f"volume_z_{w}"] = (log_v - log_v.rolling(w).mean()) / log_v.rolling(w).std()
    return pd.DataFrame(out).iloc[WARMUP_BARS:]


def test_flat_rules_do_not_move_features_of_a_normal_market(market: pd.DataFrame) -> None:
    ref = _plain_formulas(market)  # no flat window anywhere in the synthetic market
    assert np.isfinite(ref.to_numpy()).all()
    got = build_features(market).iloc[WARMUP_BARS:]
    for name in ref.columns:  # equal up to rounding (per-window two-pass moments)
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-9, atol=1e-11, err_msg=name)
    for name in ("atr_14", "rsi_14"):  # the Wilder flat rules never fire: bit-identical
        np.testing.assert_array_equal(got[name], ref[name], err_msg=name)


def test_bad_candles_are_refused(candles: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match=f"more than WARMUP_BARS={WARMUP_BARS}"):
        build_features(candles.iloc[:WARMUP_BARS])
    bad = candles.copy()
    bad.iloc[250, bad.columns.get_loc("high")] = bad["close"].iloc[250] * 0.9
    with pytest.raises(CandleValidationError, match=r"row 250.*high is below max\(open, close\)"):
        build_features(bad)
    with pytest.raises(CandleValidationError, match="empty"):
        build_features(candles.iloc[:0])


# ------------------------------------------------------------------ assemble_dataset


def test_assemble_dataset(candles: pd.DataFrame, feats: pd.DataFrame) -> None:
    labels = triple_barrier_labels(candles, horizon=4)
    ds = assemble_dataset(feats, labels)
    assert list(ds.columns) == [*FEATURE_NAMES, "label", "t1", "ret"]
    assert ds.attrs["n_warmup_dropped"] == WARMUP_BARS
    assert ds.attrs["n_unlabeled_dropped"] == 4
    assert len(ds) == len(candles) - WARMUP_BARS - 4
    assert ds.index[0] == candles.index[WARMUP_BARS]
    assert ds.index.is_monotonic_increasing
    assert not ds[list(FEATURE_NAMES)].isna().any().any()
    pd.testing.assert_series_equal(ds["label"], labels["label"].loc[ds.index])
    assert ds.attrs["buy_rate"] == pytest.approx(ds["label"].mean())


def test_assemble_rejects_constant_and_all_nan_columns(
    candles: pd.DataFrame, feats: pd.DataFrame
) -> None:
    labels = triple_barrier_labels(candles)
    const = feats.copy()
    const.loc[const.index[WARMUP_BARS:], "rsi_14"] = 42.0
    with pytest.raises(DatasetError, match=r"feature column 'rsi_14' is constant \(value 42.0\)"):
        assemble_dataset(const, labels)
    all_nan = feats.copy()
    all_nan["atr_14"] = np.nan
    with pytest.raises(DatasetError, match="feature column 'atr_14' is all NaN"):
        assemble_dataset(all_nan, labels)
    late = feats.copy()
    late.iloc[500, late.columns.get_loc("ret_8")] = np.nan
    with pytest.raises(DatasetError, match=r"'ret_8' is NaN at open_time .* after the warm-up"):
        assemble_dataset(late, labels)


def test_assemble_rejects_missing_and_empty_inputs(
    candles: pd.DataFrame, feats: pd.DataFrame
) -> None:
    labels = triple_barrier_labels(candles)
    with pytest.raises(DatasetError, match=r"lacks column\(s\) \['ret_1'\]"):
        assemble_dataset(feats.drop(columns="ret_1"), labels)
    with pytest.raises(DatasetError, match=r"labels frame lacks column\(s\) \['t1'\]"):
        assemble_dataset(feats, labels.drop(columns="t1"))
    with pytest.raises(DatasetError, match="features frame is empty"):
        assemble_dataset(feats.iloc[:0], labels)
    with pytest.raises(DatasetError, match="labels frame is empty"):
        assemble_dataset(feats, labels.iloc[:0])
    shifted = labels.copy()
    shifted.index = shifted.index + pd.Timedelta(days=3650)
    with pytest.raises(DatasetError, match="share no open_time"):
        assemble_dataset(feats, shifted)
    with pytest.raises(DatasetError, match="feature column 'ret_1' is all NaN"):
        assemble_dataset(feats.iloc[:WARMUP_BARS], labels)
    # every column has a value somewhere, but no row is complete
    staggered = feats.iloc[: WARMUP_BARS + 1].copy()
    staggered.iloc[WARMUP_BARS, staggered.columns.get_loc("ret_1")] = np.nan
    staggered.iloc[0, staggered.columns.get_loc("ret_1")] = 0.1
    with pytest.raises(DatasetError, match="nothing left after the warm-up"):
        assemble_dataset(staggered, labels)
