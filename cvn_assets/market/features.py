"""Causal features of hourly OHLCV candles (pure: no Dagster).

Every feature of row ``i`` is a function of candles ``0 .. i`` only -- the candle ``i`` itself is
complete at its close, which is when the label's long is entered (:mod:`cvn_assets.market.labels`).
No centred windows, no ``shift(-k)``, no full-sample normalisation: look-ahead in features is the
leak that purging cannot repair (AFML ch. 7.2). ``tests/unit/test_features.py`` checks it by
changing the future and asserting that the past does not move.

Windows are positional (rows, not clock hours): across an exchange gap the previous candle is the
last one that exists. The first :data:`WARMUP_BARS` rows, where the longest window is not yet
full, are set to NaN in every column -- one explicit warm-up that :func:`cvn_assets.market.dataset.
assemble_dataset` drops and reports. After the warm-up no feature is NaN: divisions by a zero
range, volatility or volume dispersion are defined explicitly (see each feature).

Flat windows. A denominator is never compared with an exact 0 after arithmetic that can leave a
residue: pandas' online rolling moments keep up to ~1e-10 of values that left the window, so a
"divide unless exactly 0" guard would fire or not depending on history. Instead:

* rolling means and standard deviations are computed per window (two-pass, from the window's
  own values only -- :func:`_rolling_mean`, :func:`_rolling_std`), and a standard deviation is
  exactly 0 when its window is constant (``max == min``, exact) or when it is at most
  ``w * eps * max|x|`` over the same ``w``-row window (the rounding scale of that window);
* candle-shape ratios divide by ``high - low``, which is exactly 0 only when ``high == low``
  (exact float subtraction);
* the Wilder averages (ATR, RSI) have infinite memory, so their flat window is
  :data:`WILDER_FLAT_BARS` rows -- after which less than 1 % of the pre-flat history would
  remain in the average -- of exactly zero true range (ATR) or close change (RSI).

Value of each feature at the end of a *flat stretch* -- ``N`` consecutive candles with
``open = high = low = close`` = the close before the stretch and a constant volume (a trading
halt: volume 0) -- whatever came before the stretch (``tests/unit/test_features.py`` checks
every column over a halt starting at two different rows):

==================================  ===============  ======================================
feature                             flat value       ``N`` (rows of flat stretch needed)
==================================  ===============  ======================================
``ret_k``                           0                ``k``
``rv_w``                            0                ``w``
``rv_ratio_6_72``                   1                72 (``rv_72 == 0``)
``parkinson_24``                    0                24
``atr_14``                          0                :data:`WILDER_FLAT_BARS` (63)
``rsi_14``                          50               :data:`WILDER_FLAT_BARS` (63)
``ret_z_1``, ``mom_z_24``           0                24 (``rv_24 == 0``)
``volume_z_w``                      0                ``w`` (any constant volume)
``volume_chg_1``                    0                2
``body``, ``upper_wick``            0                1 (``high == low``)
``lower_wick``, ``range_rel``       0                1 (``high == low``)
``dist_high_w``, ``dist_low_w``     0                ``w``
hour / day-of-week (sin, cos)       the calendar     -- (no history)
==================================  ===============  ======================================

On data without flat windows these rules never fire and the features are those of the plain
formulas up to floating-point rounding.

The set follows the usual families of the literature on short-horizon crypto prediction
(returns over several lags, realized and range-based volatility -- Parkinson 1980 --, ATR and RSI
-- Wilder 1978 --, volume surprises, candle shape, distance to recent extremes, cyclical calendar).
"""

import math

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from cvn_assets.market.candles_io import validate_candles

RETURN_LAGS: tuple[int, ...] = (1, 2, 4, 8, 24, 72)
RV_WINDOWS: tuple[int, ...] = (6, 24, 72)
VOLUME_WINDOWS: tuple[int, ...] = (24, 168)
EXTREME_WINDOWS: tuple[int, ...] = (24, 168)
WILDER_PERIOD = 14
WILDER_RESIDUAL = 0.01
"""Largest weight a Wilder average may still give to the history before a flat stretch."""
WILDER_FLAT_BARS: int = math.ceil(math.log(WILDER_RESIDUAL) / math.log(1.0 - 1.0 / WILDER_PERIOD))
"""Rows of zero true range / close change after which ATR is 0 and RSI 50 (63 for period 14)."""

_EPS = float(np.finfo(np.float64).eps)

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
    """``num / den`` where ``den > 0``; ``fill`` where ``den == 0``; NaN stays NaN (warm-up).

    ``den`` must be exactly 0 over a flat window by construction -- a rolling standard deviation
    from :func:`_rolling_std` or an exact difference such as ``high - low`` --, never a quantity
    that may keep a rounding residue of the history.
    """
    out = num / den.where(den > 0)
    return out.mask((den == 0) & num.notna(), fill)


def _trailing_windows(x: pd.Series, w: int) -> np.ndarray:
    """Row ``j`` holds ``x[j .. j + w - 1]``: the ``w``-row window ending at row ``j + w - 1``."""
    return sliding_window_view(x.to_numpy(dtype=np.float64), w)


def _aligned(x: pd.Series, w: int, per_window: np.ndarray) -> pd.Series:
    """Per-window values put on the row where each window ends; the first ``w - 1`` rows NaN."""
    out = np.full(len(x), np.nan)
    out[w - 1 :] = per_window
    return pd.Series(out, index=x.index)


def _rolling_mean(x: pd.Series, w: int) -> pd.Series:
    """Mean of the trailing ``w`` rows, from those rows only (NaN if any of them is NaN)."""
    return _aligned(x, w, _trailing_windows(x, w).mean(axis=1))


def _rolling_std(x: pd.Series, w: int) -> pd.Series:
    """Sample std (ddof 1) of the trailing ``w`` rows, exactly 0 over a (numerically) flat window.

    Two-pass per window, so the value depends on the window's values only -- pandas' online
    algorithm leaves ~1e-10 of values that have left the window. The result is set to 0 where
    the window is constant (``max == min``, exact) or where it is at most ``w * eps * max|x|``
    over the window, the rounding scale of the two passes. NaN if the window holds a NaN.
    """
    win = _trailing_windows(x, w)
    std = win.std(axis=1, ddof=1)
    tol = w * _EPS * np.abs(win).max(axis=1)
    flat = (win.max(axis=1) == win.min(axis=1)) | (std <= tol)
    return _aligned(x, w, np.where(flat, 0.0, std))


def _wilder(x: pd.Series, period: int) -> pd.Series:
    """Wilder's smoothing (an EWM with alpha = 1/period), causal by construction."""
    return x.ewm(alpha=1.0 / period, adjust=False, min_periods=period).mean()


def _return_features(log_c: pd.Series) -> dict[str, pd.Series]:
    """``ret_k``, ``rv_w``, ``rv_ratio_6_72``, ``ret_z_1``, ``mom_z_24`` from the log close."""
    r = log_c.diff()
    f: dict[str, pd.Series] = {}
    for k in RETURN_LAGS:
        f[f"ret_{k}"] = log_c - log_c.shift(k)
    for w in RV_WINDOWS:
        f[f"rv_{w}"] = _rolling_std(r, w)
    f["rv_ratio_6_72"] = _safe_div(f["rv_6"], f["rv_72"], 1.0)
    f["ret_z_1"] = _safe_div(r, f["rv_24"], 0.0)
    f["mom_z_24"] = _safe_div(f["ret_24"], f["rv_24"] * math.sqrt(24.0), 0.0)
    return f


def _range_features(h: pd.Series, lo: pd.Series, c: pd.Series) -> dict[str, pd.Series]:
    """``parkinson_24``, ``atr_14`` (relative to the close) and ``rsi_14``."""
    f: dict[str, pd.Series] = {}
    log_hl = np.log(h / lo)
    f["parkinson_24"] = np.sqrt(_rolling_mean(log_hl**2, 24) / (4.0 * math.log(2.0)))
    prev_c = c.shift(1)
    true_range = pd.concat([h - lo, (h - prev_c).abs(), (lo - prev_c).abs()], axis=1).max(axis=1)
    # exact: a true range (>= 0) is 0 iff h == l == previous close; rolling max only compares
    no_range = true_range.rolling(WILDER_FLAT_BARS, min_periods=WILDER_FLAT_BARS).max() == 0
    f["atr_14"] = (_wilder(true_range, WILDER_PERIOD) / c).mask(no_range, 0.0)
    delta = c.diff()
    avg_gain = _wilder(delta.clip(lower=0.0), WILDER_PERIOD)
    avg_loss = _wilder((-delta).clip(lower=0.0), WILDER_PERIOD)
    total = avg_gain + avg_loss
    no_change = delta.abs().rolling(WILDER_FLAT_BARS, min_periods=WILDER_FLAT_BARS).max() == 0
    f["rsi_14"] = (100.0 * _safe_div(avg_gain, total, 0.5)).mask(no_change, 50.0)
    return f


def _volume_features(v: pd.Series) -> dict[str, pd.Series]:
    """``volume_z_w`` (z-score of ``log1p(v)`` in its window) and ``volume_chg_1``."""
    f: dict[str, pd.Series] = {}
    log_v = np.log1p(v)
    for w in VOLUME_WINDOWS:
        f[f"volume_z_{w}"] = _safe_div(log_v - _rolling_mean(log_v, w), _rolling_std(log_v, w), 0.0)
    f["volume_chg_1"] = log_v.diff()
    return f


def _candle_features(
    o: pd.Series, h: pd.Series, lo: pd.Series, c: pd.Series, log_c: pd.Series
) -> dict[str, pd.Series]:
    """``body``, ``upper_wick``, ``lower_wick``, ``range_rel``, ``dist_high_w``, ``dist_low_w``."""
    f: dict[str, pd.Series] = {}
    rng = h - lo
    f["body"] = _safe_div(c - o, rng, 0.0)
    f["upper_wick"] = _safe_div(h - np.maximum(o, c), rng, 0.0)
    f["lower_wick"] = _safe_div(np.minimum(o, c) - lo, rng, 0.0)
    f["range_rel"] = np.log(h / lo)
    for w in EXTREME_WINDOWS:
        f[f"dist_high_{w}"] = log_c - np.log(h.rolling(w, min_periods=w).max())
        f[f"dist_low_{w}"] = log_c - np.log(lo.rolling(w, min_periods=w).min())
    return f


def _calendar_features(idx: pd.DatetimeIndex) -> dict[str, pd.Series]:
    """Hour of day and day of week of the open time (UTC) as (sin, cos) pairs."""
    hour = idx.hour.to_numpy(dtype=np.float64)
    dow = idx.day_of_week.to_numpy(dtype=np.float64)
    return {
        "hour_sin": pd.Series(np.sin(2 * np.pi * hour / 24.0), index=idx),
        "hour_cos": pd.Series(np.cos(2 * np.pi * hour / 24.0), index=idx),
        "dow_sin": pd.Series(np.sin(2 * np.pi * dow / 7.0), index=idx),
        "dow_cos": pd.Series(np.cos(2 * np.pi * dow / 7.0), index=idx),
    }


def build_features(candles: pd.DataFrame) -> pd.DataFrame:
    """Compute :data:`FEATURE_NAMES` (float64) for every candle; warm-up rows are NaN.

    ``candles`` must satisfy the candle contract (checked by
    :func:`cvn_assets.market.candles_io.validate_candles`, which names the offending row) and hold
    more than :data:`WARMUP_BARS` rows, otherwise no row would have features.

    Definitions (``c, h, l, o, v`` = close, high, low, open, volume; ``r = log(c / c.shift(1))``):

    * ``ret_k = log(c / c.shift(k))``; ``rv_w`` = rolling std of ``r`` over ``w`` rows (0 over
      a constant window, see :func:`_rolling_std`); ``rv_ratio_6_72 = rv_6 / rv_72`` (1 when
      ``rv_72`` is 0);
    * ``parkinson_24 = sqrt(mean(log(h/l)^2) / (4 ln 2))`` over 24 rows (Parkinson 1980);
    * ``atr_14`` = Wilder average of the true range, divided by ``c`` (0 after
      :data:`WILDER_FLAT_BARS` rows of zero true range); ``rsi_14`` = Wilder RSI in [0, 100]
      (100 with no losses, 50 after :data:`WILDER_FLAT_BARS` rows of unchanged close);
    * ``ret_z_1 = r / rv_24``, ``mom_z_24 = ret_24 / (rv_24 sqrt 24)`` (0 when ``rv_24`` is 0);
    * ``volume_z_w`` = z-score of ``log1p(v)`` in its rolling ``w``-row window (0 when the window
      is constant), ``volume_chg_1 = log1p(v) - log1p(v.shift(1))``;
    * ``body = (c - o) / (h - l)``, ``upper_wick = (h - max(o, c)) / (h - l)``,
      ``lower_wick = (min(o, c) - l) / (h - l)`` (all 0 for a flat candle, ``h == l``),
      ``range_rel = log(h / l)``;
    * ``dist_high_w = log(c / max(h over w rows))`` (<= 0), ``dist_low_w = log(c / min(l))``
      (>= 0);
    * hour of day and day of week of the open time as (sin, cos) pairs (UTC).

    The value of every feature over a flat stretch is tabulated in the module docstring.
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
    idx = candles.index
    f: dict[str, pd.Series] = {
        **_return_features(log_c),
        **_range_features(h, lo, c),
        **_volume_features(v),
        **_candle_features(o, h, lo, c, log_c),
        **_calendar_features(idx),
    }
    out = pd.DataFrame({name: f[name].astype(np.float64) for name in FEATURE_NAMES}, index=idx)
    out.iloc[:WARMUP_BARS] = np.nan
    out.attrs["warmup_bars"] = WARMUP_BARS
    return out
