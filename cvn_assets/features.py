"""Causal features of hourly OHLCV candles (pure: no Dagster).

Every feature of row ``i`` is a function of candles ``0 .. i`` only -- the candle ``i`` itself is
complete at its close, which is when the label's long is entered (:mod:`cvn_assets.labels`). No
centred windows, no ``shift(-k)``, no full-sample normalisation: look-ahead in features is the
leak that purging cannot repair (AFML ch. 7.2). ``tests/unit/test_features.py`` checks it by
changing the future and asserting that the past does not move.

Windows are positional (rows, not clock hours): across an exchange gap the previous candle is the
last one that exists. The first :data:`WARMUP_BARS` rows, where the longest window is not yet
full, are set to NaN in every column -- one explicit warm-up that :func:`cvn_assets.dataset.
assemble_dataset` drops and reports. After the warm-up no feature is NaN: divisions by a zero
range, volatility or volume dispersion are defined explicitly (see each feature).

The set follows the usual families of the literature on short-horizon crypto prediction
(returns over several lags, realized and range-based volatility -- Parkinson 1980 --, ATR and RSI
-- Wilder 1978 --, volume surprises, candle shape, distance to recent extremes, cyclical calendar).
"""

import math

import numpy as np
import pandas as pd

from cvn_assets.candles_io import validate_candles

RETURN_LAGS: tuple[int, ...] = (1, 2, 4, 8, 24, 72)
RV_WINDOWS: tuple[int, ...] = (6, 24, 72)
VOLUME_WINDOWS: tuple[int, ...] = (24, 168)
EXTREME_WINDOWS: tuple[int, ...] = (24, 168)
WILDER_PERIOD = 14

FEATURE_NAMES: tuple[str, ...] = (
    *(f"ret_{k}" for k in RETURN_LAGS),
    *(f"rv_{w}" for w in RV_WINDOWS),
    "rv_ratio_6_72",
    "parkinson_24",
    "atr_14",
    "rsi_14",
    "ret_z_1",
    "mom_z_24",
    *(f"volume_z_{w}" for w in VOLUME_WINDOWS),
    "volume_chg_1",
    "body",
    "upper_wick",
    "lower_wick",
    "range_rel",
    *(f"dist_high_{w}" for w in EXTREME_WINDOWS),
    *(f"dist_low_{w}" for w in EXTREME_WINDOWS),
    "hour_sin",
    "hour_cos",
    "dow_sin",
    "dow_cos",
)
"""The feature columns, in order (30)."""

WARMUP_BARS: int = max(max(VOLUME_WINDOWS), max(EXTREME_WINDOWS), max(RETURN_LAGS) + 1) - 1
"""Leading rows without a full longest window (167): NaN in every feature column."""


def _safe_div(num: pd.Series, den: pd.Series, fill: float) -> pd.Series:
    """``num / den`` where ``den > 0``; ``fill`` where ``den == 0``; NaN stays NaN (warm-up)."""
    out = num / den.where(den > 0)
    return out.mask((den == 0) & num.notna(), fill)


def _wilder(x: pd.Series, period: int) -> pd.Series:
    """Wilder's smoothing (an EWM with alpha = 1/period), causal by construction."""
    return x.ewm(alpha=1.0 / period, adjust=False, min_periods=period).mean()


def build_features(candles: pd.DataFrame) -> pd.DataFrame:
    """Compute :data:`FEATURE_NAMES` (float64) for every candle; warm-up rows are NaN.

    ``candles`` must satisfy the candle contract (checked by
    :func:`cvn_assets.candles_io.validate_candles`, which names the offending row) and hold more
    than :data:`WARMUP_BARS` rows, otherwise no row would have features.

    Definitions (``c, h, l, o, v`` = close, high, low, open, volume; ``r = log(c / c.shift(1))``):

    * ``ret_k = log(c / c.shift(k))``; ``rv_w`` = rolling std of ``r`` over ``w`` rows;
      ``rv_ratio_6_72 = rv_6 / rv_72`` (1 when ``rv_72`` is 0);
    * ``parkinson_24 = sqrt(mean(log(h/l)^2) / (4 ln 2))`` over 24 rows (Parkinson 1980);
    * ``atr_14`` = Wilder average of the true range, divided by ``c``; ``rsi_14`` = Wilder RSI in
      [0, 100] (100 with no losses, 50 when flat);
    * ``ret_z_1 = r / rv_24``, ``mom_z_24 = ret_24 / (rv_24 sqrt 24)`` (0 when ``rv_24`` is 0);
    * ``volume_z_w`` = z-score of ``log1p(v)`` in its rolling ``w``-row window (0 when the window
      is constant), ``volume_chg_1 = log1p(v) - log1p(v.shift(1))``;
    * ``body = (c - o) / (h - l)``, ``upper_wick = (h - max(o, c)) / (h - l)``,
      ``lower_wick = (min(o, c) - l) / (h - l)`` (all 0 for a flat candle), ``range_rel =
      log(h / l)``;
    * ``dist_high_w = log(c / max(h over w rows))`` (<= 0), ``dist_low_w = log(c / min(l))``
      (>= 0);
    * hour of day and day of week of the open time as (sin, cos) pairs (UTC).
    """
    candles = validate_candles(candles, source="build_features(candles)")
    n = len(candles)
    if n <= WARMUP_BARS:
        raise ValueError(
            f"build_features needs more than WARMUP_BARS={WARMUP_BARS} candles to produce any "
            f"feature row, got {n}"
        )
    o, h, lo, c, v = (candles[col] for col in ("open", "high", "low", "close", "volume"))
    log_c = np.log(c)
    r = log_c.diff()
    f: dict[str, pd.Series] = {}
    for k in RETURN_LAGS:
        f[f"ret_{k}"] = log_c - log_c.shift(k)
    for w in RV_WINDOWS:
        f[f"rv_{w}"] = r.rolling(w, min_periods=w).std()
    f["rv_ratio_6_72"] = _safe_div(f["rv_6"], f["rv_72"], 1.0)
    log_hl = np.log(h / lo)
    f["parkinson_24"] = np.sqrt(
        (log_hl**2).rolling(24, min_periods=24).mean() / (4.0 * math.log(2.0))
    )
    prev_c = c.shift(1)
    true_range = pd.concat([h - lo, (h - prev_c).abs(), (lo - prev_c).abs()], axis=1).max(axis=1)
    f["atr_14"] = _wilder(true_range, WILDER_PERIOD) / c
    delta = c.diff()
    avg_gain = _wilder(delta.clip(lower=0.0), WILDER_PERIOD)
    avg_loss = _wilder((-delta).clip(lower=0.0), WILDER_PERIOD)
    total = avg_gain + avg_loss
    f["rsi_14"] = 100.0 * _safe_div(avg_gain, total, 0.5)
    f["ret_z_1"] = _safe_div(r, f["rv_24"], 0.0)
    f["mom_z_24"] = _safe_div(f["ret_24"], f["rv_24"] * math.sqrt(24.0), 0.0)
    log_v = np.log1p(v)
    for w in VOLUME_WINDOWS:
        roll = log_v.rolling(w, min_periods=w)
        f[f"volume_z_{w}"] = _safe_div(log_v - roll.mean(), roll.std(), 0.0)
    f["volume_chg_1"] = log_v.diff()
    rng = h - lo
    f["body"] = _safe_div(c - o, rng, 0.0)
    f["upper_wick"] = _safe_div(h - np.maximum(o, c), rng, 0.0)
    f["lower_wick"] = _safe_div(np.minimum(o, c) - lo, rng, 0.0)
    f["range_rel"] = log_hl
    for w in EXTREME_WINDOWS:
        f[f"dist_high_{w}"] = log_c - np.log(h.rolling(w, min_periods=w).max())
        f[f"dist_low_{w}"] = log_c - np.log(lo.rolling(w, min_periods=w).min())
    idx = candles.index
    hour = idx.hour.to_numpy(dtype=np.float64)
    dow = idx.day_of_week.to_numpy(dtype=np.float64)
    f["hour_sin"] = pd.Series(np.sin(2 * np.pi * hour / 24.0), index=idx)
    f["hour_cos"] = pd.Series(np.cos(2 * np.pi * hour / 24.0), index=idx)
    f["dow_sin"] = pd.Series(np.sin(2 * np.pi * dow / 7.0), index=idx)
    f["dow_cos"] = pd.Series(np.cos(2 * np.pi * dow / 7.0), index=idx)

    out = pd.DataFrame({name: f[name].astype(np.float64) for name in FEATURE_NAMES}, index=idx)
    out.iloc[:WARMUP_BARS] = np.nan
    out.attrs["warmup_bars"] = WARMUP_BARS
    return out
