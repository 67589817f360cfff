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

Fewer than ``recent`` rows in the window -> ``insufficient``. ``value`` is the number of broken
features, ``threshold`` 1; ``details[feature]`` holds ``nan_share``, ``stuck`` (bool),
``out_share`` and ``problem`` (``"missing"``, ``"stuck"``, ``"out_of_range"`` or None).

Evaluated every hour (the ``model_drift`` sensor; ``bench/bench_detectors.py``), so a break
that starts at any hour is reported ``recent`` hours later: within a day, as issue 23
requires. A feature lagged by a day keeps its distribution and its range: no rule here (or
in the drift detectors) sees it; it takes a recomputation of the feature from the candles.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from cvn_assets.guard.drift import Verdict

__all__ = ["CALENDAR_PREFIXES", "INTEGRITY_RECENT", "RANGE_SPREADS", "data_integrity",
           "is_calendar"]  # fmt: skip

#: the last hours judged
INTEGRITY_RECENT = 6
#: the range band's half-width beyond q10 / q90, in units of q90 - q10
RANGE_SPREADS = 20.0
#: out of range also when the recent median |value| exceeds this many times the training's
#: largest |q10|, |q90|
SCALE_RATIO = 10.0
#: features that are functions of the clock alone (kept out of data drift and of "stuck")
CALENDAR_PREFIXES = ("dow_", "hour_")


def is_calendar(name: str) -> bool:
    """Whether ``name`` is a calendar feature (``dow_*``, ``hour_*``)."""
    return name.startswith(CALENDAR_PREFIXES)


def _feature(name: str, values: ArrayLike, edges: ArrayLike, recent: int) -> dict[str, Any]:
    x = np.asarray(values, dtype=np.float64)[-recent:]
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.size < 2 or not np.isfinite(e).all():
        raise ValueError(f"edges[{name!r}] must be >= 2 finite decile edges, got {edges!r}")
    nan = ~np.isfinite(x)
    out: dict[str, Any] = {"nan_share": float(nan.mean()), "stuck": False, "out_share": 0.0}
    if nan.all():
        out["problem"] = "missing"
        return out
    f = x[~nan]
    spread = float(e[-1] - e[0])
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
    out["problem"] = (
        "stuck" if out["stuck"] else "out_of_range" if out["out_share"] >= 0.5 else None
    )
    return out


def data_integrity(
    feature_windows: Mapping[str, ArrayLike],
    edges: Mapping[str, ArrayLike],
    *,
    recent: int = INTEGRITY_RECENT,
) -> Verdict:
    """Missing, stuck or out-of-range values among the last ``recent`` of each feature.

    ``feature_windows``: feature -> its values in time order (NaN for a missing value; at
    least the last ``recent`` hours); ``edges``: feature -> the training decile edges
    (``train_decile_edges``). Rule in the module docstring. Raises ``ValueError`` naming a
    feature without edges, or ``recent`` < 2.
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
    details = {name: _feature(name, v, edges[name], recent) for name, v in feature_windows.items()}
    broken = {k: d["problem"] for k, d in details.items() if d["problem"]}
    if broken:
        what = ", ".join(f"{k}: {p}" for k, p in broken.items())
        return Verdict("crit", float(len(broken)), 1.0, n,
                       f"the last {recent} h of {len(broken)} feature(s) broken ({what})",
                       details)  # fmt: skip
    return Verdict("ok", 0.0, 1.0, n, f"the last {recent} h of every feature look sane", details)
