"""Data integrity of the live model's inputs (issue 23): a broken feature pipeline, judged on
the last hours of the journal, separately from distribution drift (pure: no Dagster).

Distribution drift (PSI over 7 days) needs days of broken rows before it moves, and a
missing value is dropped before the PSI (so a NaN-filled feature made it ``insufficient``,
never an alarm). A pipeline break is not a subtle shift: it is visible in the **last
``recent`` values** (default **6** hours) of a top feature. :func:`data_integrity` is
``crit`` when, for some watched feature, those values are

* **missing**: all ``recent`` values are NaN (the training rows have none: the dataset
  refuses a NaN after the warm-up);
* **stuck**: all ``recent`` values are identical and finite, and that value is not a mass
  point of the training data (a value two or more training decile edges share, e.g. an RSI
  of exactly 50 over a flat stretch). Calendar features (``dow_*``: constant over a UTC day)
  are not judged stuck;
* **out of range** (scale): at least half of the ``recent`` values lie outside the band
  ``[q10 - k (q90 - q10), q90 + k (q90 - q10)]`` of the training deciles, ``k`` =
  :data:`RANGE_SPREADS` (**20**): a unit or scale error (x100, a price instead of a return),
  not a volatile market (the largest hourly move of the 2021-2023 candles stays within it);
  or when the median ``|value|`` of the ``recent`` values exceeds :data:`SCALE_RATIO` (**10**)
  times the training's largest ``|q10|``, ``|q90|`` (a zero-centred feature scaled up keeps
  its small values inside the band).

* **not what the candles give** (``mismatch``; only when the caller passes ``recomputed``: the
  same hours' values recomputed from the stored candles by the project's feature code,
  :func:`recompute_features`): at least half of the ``recent`` values differ from the
  recomputed ones by more than :data:`MISMATCH_TOL` (**1e-6**) of the training decile spread
  ``q90 - q10`` (a journaled NaN against a finite recomputed value counts as a difference; an
  hour the candles cannot give -- a feature the feature code does not produce, an hour without
  a candle -- is not compared). This is the check of a feature pipeline that serves the right
  distribution from the wrong hours: a feature **lagged by a day** keeps its distribution and
  its range, so none of the rules above sees it, but it differs from its recomputation at
  nearly every hour. The recomputation is exact up to rounding (the rolling windows are
  computed per window; the Wilder averages of ``atr_14`` / ``rsi_14`` start
  :data:`RECOMPUTE_HISTORY` hours back, where their initial state weighs ``(13/14)^720 <
  1e-23``), so the tolerance only absorbs rounding. A lag of exactly 24 h of an hour-of-day
  feature (``hour_sin`` / ``hour_cos``) gives the same values: the model sees no change, and
  nothing is reported.

Fewer than ``recent`` rows in the window -> ``insufficient``. ``value`` is the number of broken
features, ``threshold`` 1; ``details[feature]`` holds ``nan_share``, ``stuck`` (bool),
``out_share``, ``mismatch_share`` (None when not recomputed) and ``problem`` (``"missing"``,
``"stuck"``, ``"out_of_range"``, ``"mismatch"`` or None; the first that applies).

Evaluated every hour (the ``model_drift`` sensor, which recomputes the top features from the
``market_data`` resource's candles; ``bench/bench_detectors.py``), so a break that starts at
any hour is reported at most ``recent`` hours later (3 for a mismatch): within a day, as
issue 23 requires.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from cvn_assets.guard.drift import Verdict

__all__ = ["CALENDAR_PREFIXES", "INTEGRITY_RECENT", "MISMATCH_TOL", "RANGE_SPREADS",
           "RECOMPUTE_HISTORY", "data_integrity", "is_calendar", "recompute_features"]  # fmt: skip

#: the last hours judged
INTEGRITY_RECENT = 6
#: the range band's half-width beyond q10 / q90, in units of q90 - q10
RANGE_SPREADS = 20.0
#: out of range also when the recent median |value| exceeds this many times the training's
#: largest |q10|, |q90|
SCALE_RATIO = 10.0
#: a journaled value differs from its recomputation beyond this share of the decile spread
MISMATCH_TOL = 1e-6
#: candles before the first judged hour that :func:`recompute_features` starts from (30 days)
RECOMPUTE_HISTORY = 720
#: features that are functions of the clock alone (kept out of data drift and of "stuck")
CALENDAR_PREFIXES = ("dow_", "hour_")


def is_calendar(name: str) -> bool:
    """Whether ``name`` is a calendar feature (``dow_*``, ``hour_*``)."""
    return name.startswith(CALENDAR_PREFIXES)


def recompute_features(
    candles: pd.DataFrame, first_hour: pd.Timestamp, last_hour: pd.Timestamp
) -> pd.DataFrame:
    """The features of the hours ``[first_hour, last_hour]`` recomputed from ``candles`` by the
    project's feature code (:func:`cvn_assets.market.features.build_features`, causal), from
    :data:`RECOMPUTE_HISTORY` + ``WARMUP_BARS`` candles before ``first_hour`` (or the first
    candle). ``candles``: the candle contract (UTC open times, ascending). Returns the rows of
    those hours that have a candle (index = open time; NaN in the warm-up); an empty frame when
    the candles cannot give any. Raises ``ValueError`` for a naive or unordered index."""
    from cvn_assets.market.features import WARMUP_BARS, build_features

    idx = candles.index
    if not isinstance(idx, pd.DatetimeIndex) or idx.tz is None:
        raise ValueError("candles must be indexed by UTC open times (an aware DatetimeIndex)")
    if not (idx.is_monotonic_increasing and idx.is_unique):
        raise ValueError("candles' open times must be unique and in time order")
    i0 = int(idx.searchsorted(pd.Timestamp(first_hour), side="left"))
    i1 = int(idx.searchsorted(pd.Timestamp(last_hour), side="right"))
    lo = max(0, i0 - RECOMPUTE_HISTORY - WARMUP_BARS)
    if i1 <= i0 or i1 - lo <= WARMUP_BARS:
        return pd.DataFrame(index=idx[i0:i0])
    return build_features(candles.iloc[lo:i1]).iloc[i0 - lo :]


def _mismatch_share(
    values: ArrayLike, recomputed: ArrayLike, spread: float, name: str, recent: int
) -> float:
    """Share of the last ``recent`` hours whose value differs from its recomputation."""
    v = np.asarray(values, dtype=np.float64)
    r = np.asarray(recomputed, dtype=np.float64)
    if r.shape != v.shape:
        raise ValueError(f"recomputed[{name!r}] has {r.size} values, the window {v.size}")
    x, r = v[-recent:], r[-recent:]
    known = np.isfinite(r)
    tol = MISMATCH_TOL * max(spread, 1e-9) + 1e-12 * np.abs(r)
    with np.errstate(invalid="ignore"):
        differs = known & (~np.isfinite(x) | (np.abs(x - r) > tol))
    return float(differs.sum() / x.size)


def _feature(
    name: str, values: ArrayLike, edges: ArrayLike, recent: int, recomputed: ArrayLike | None
) -> dict[str, Any]:
    x = np.asarray(values, dtype=np.float64)[-recent:]
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.size < 2 or not np.isfinite(e).all():
        raise ValueError(f"edges[{name!r}] must be >= 2 finite decile edges, got {edges!r}")
    spread = float(e[-1] - e[0])
    nan = ~np.isfinite(x)
    out: dict[str, Any] = {"nan_share": float(nan.mean()), "stuck": False, "out_share": 0.0,
                           "mismatch_share": None}  # fmt: skip
    if recomputed is not None:
        out["mismatch_share"] = _mismatch_share(values, recomputed, spread, name, recent)
    if nan.all():
        out["problem"] = "missing"
        return out
    f = x[~nan]
    lo, hi = e[0] - RANGE_SPREADS * spread, e[-1] + RANGE_SPREADS * spread
    out["out_share"] = float(((x < lo) | (x > hi)).sum() / x.size)
    scale = float(np.median(np.abs(f))) / max(abs(float(e[0])), abs(float(e[-1])), 1e-12)
    out["scale_ratio"] = scale
    if scale > SCALE_RATIO:  # a zero-centred feature scaled up: most values still in the band
        out["out_share"] = max(out["out_share"], 1.0)
    mass_points = {float(v) for v, c in zip(*np.unique(e, return_counts=True), strict=True)
                   if c >= 2}  # fmt: skip
    out["stuck"] = bool(
        f.size == x.size
        and not name.startswith("dow_")
        and np.all(f == f[0])
        and float(f[0]) not in mass_points
    )
    mismatch = out["mismatch_share"] is not None and out["mismatch_share"] >= 0.5
    out["problem"] = (
        "stuck" if out["stuck"]
        else "out_of_range" if out["out_share"] >= 0.5
        else "mismatch" if mismatch
        else None
    )  # fmt: skip
    return out


def data_integrity(
    feature_windows: Mapping[str, ArrayLike],
    edges: Mapping[str, ArrayLike],
    *,
    recent: int = INTEGRITY_RECENT,
    recomputed: Mapping[str, ArrayLike] | None = None,
) -> Verdict:
    """Missing, stuck, out-of-range or mismatched values among the last ``recent`` of each
    feature.

    ``feature_windows``: feature -> its values in time order (NaN for a missing value; at
    least the last ``recent`` hours); ``edges``: feature -> the training decile edges
    (``train_decile_edges``); ``recomputed`` (optional): feature -> the same hours' values
    recomputed from the candles (NaN where unknown; a feature absent from it is not
    compared). Rule in the module docstring. Raises ``ValueError`` naming a feature without
    edges, a recomputed window of another length, or ``recent`` < 2.
    """
    if isinstance(recent, bool) or not isinstance(recent, int) or recent < 2:
        raise ValueError(f"recent must be an integer >= 2, got {recent!r}")
    missing = [f for f in feature_windows if f not in edges]
    if missing:
        raise ValueError(f"edges missing for feature(s) {missing}")
    n = min((len(np.asarray(v)) for v in feature_windows.values()), default=0)
    if not feature_windows or n < recent:
        return Verdict("insufficient", math.nan, 1.0, n,
                       f"{n} rows < the {recent} recent hours judged")  # fmt: skip
    rec = recomputed or {}
    details = {name: _feature(name, v, edges[name], recent, rec.get(name))
               for name, v in feature_windows.items()}  # fmt: skip
    broken = {k: d["problem"] for k, d in details.items() if d["problem"]}
    if broken:
        what = ", ".join(f"{k}: {p}" for k, p in broken.items())
        return Verdict("crit", float(len(broken)), 1.0, n,
                       f"the last {recent} h of {len(broken)} feature(s) broken ({what})",
                       details)  # fmt: skip
    return Verdict("ok", 0.0, 1.0, n, f"the last {recent} h of every feature look sane", details)
