"""The five production monitoring metrics of spec 6.1, as pure functions (no Dagster).

Why: the ``monitoring_metrics`` asset (day x crypto) and, later, the drift sensors need the
same numbers, computed the same way, and the tests need to check them against hand counts.
This module does the math and assembles one flat row per (crypto, day); the asset that feeds
it from run records, predictions and trades, and writes the row to the ``monitoring_metrics``
table, to asset metadata and (via :mod:`resources.metrics_export`) to a Prometheus textfile,
lives elsewhere.

The five metrics
----------------
1. **Training failures** per loss function (run tag ``cvn/loss_function``) in the last hour
   and the last 24 h: :func:`training_failures`.
2. **Active loss** (``focal_loss_active`` with its gamma and alpha): :func:`metrics_row`.
3. **buy_proba distribution**: quantiles p05/p25/p50/p75/p95 (:func:`buy_proba_quantiles`)
   and the PSI against the training deciles (:func:`decile_edges`, :func:`psi`), with the
   sample-size-aware no-drift threshold (:func:`psi_null_quantile`).
4. **Net expectancy** over the last 24 h and 48 h with trade counts: :func:`expectancy_window`.
5. **Inference latency** p50/p99 with the sample count: :func:`latency_summary`.

Conventions
-----------
* Quantiles use :func:`numpy.quantile` with its default ``method="linear"`` (Hyndman & Fan
  type 7: virtual index ``(n - 1) q``, linear interpolation between the order statistics).
* Time windows are half-open on the left: "the last ``h`` hours before ``end``" is
  ``(end - h, end]`` -- an event exactly at ``end`` counts, one exactly ``h`` hours earlier
  does not, so consecutive windows never count an event twice.
* Times must be timezone-aware (any zone, compared in UTC) or plain numbers read as Unix
  seconds (Dagster's ``RunRecord.end_time``). A naive datetime is rejected: its zone is a
  guess.
* A statistic of nothing is NaN with ``n = 0`` from the functions, and ``None`` (SQL NULL) in
  the row of :func:`metrics_row`; it is never 0.0 -- a guard must not read "no trades" as
  "break-even" or "no predictions" as "no drift".
* Bad input raises ``ValueError`` naming the argument (and the first bad element).

PSI (Siddiqi 2006; Yurdakul 2018)
---------------------------------
Population Stability Index of a monitored sample ("actual") against the training sample
("expected"), spec 6.1: 10 bins cut at the 9 training deciles, outer edges open, each share
floored at ``1e-4``, ``PSI = sum_b (a_b - e_b) ln(a_b / e_b)``.

* Siddiqi, N. (2006). *Credit Risk Scorecards: Developing and Implementing Intelligent Credit
  Scoring*. Wiley. (definition; the usual 0.1 / 0.25 rules of thumb.)
* Yurdakul, B. (2018). *Statistical Properties of Population Stability Index*. Dissertation,
  Western Michigan University. (Under no drift PSI is approximately
  ``(1/n + 1/m) chi2_{B-1}`` for ``n`` actual and ``m`` training values and ``B`` bins, so a
  fixed threshold means a different false-alarm rate at every sample size.)

Binning side rule: bin ``k`` (0..9) holds ``edges[k-1] <= x < edges[k]`` (left-closed,
right-open; bin 0 is ``(-inf, edges[0])``, bin 9 is ``[edges[8], +inf)``). A value equal to
an edge goes to the bin *above* it. This is exactly ``np.searchsorted(edges, x,
side="right")`` (and ``np.digitize(x, edges)``), and the same rule bins the actual and the
training values.

Expected shares and merged bins: the expected share of a bin is the **training sample's
actual share** in it (:func:`training_shares`; ``psi(..., expected=shares)`` or
``psi(..., training=values)``), so the training sample against itself is exactly 0. A mass
point (a value taken by many training rows: a feature that is exactly 0 in 30 % of the rows,
a clipped or isotonic-calibrated probability, a binary or day-of-week feature) ties deciles;
the zero-width bins ``[v, v)`` between tied edges can hold nothing and are merged away
(:func:`merged_edges`: ``k`` distinct edges, ``k + 1`` bins), and the mass point fills the
bin that starts at it. Taking every expected share as ``1/10`` instead is right only for
continuous data: 30 % of zeros at the minimum leave two bins empty (each costs ``0.1
ln(0.1 / 1e-4) = 0.69``) and put 0.3 in a third (``0.2 ln 3 = 0.22``): a PSI of about 1.6
(crit) for a window drawn from the training distribution itself, where the training shares
give a median of ~0.04 (168 rows). The no-drift threshold :func:`psi_null_quantile` takes
the same shares (``expected=``), so the null is simulated on the same merged bins. Only
when nothing but the edges is known (models frozen before the shares were stored) is
``1/B`` used, on the raw bins, as before.

Outside the training range: the outer bins are open, so a window value above the largest
edge falls into the top bin (indistinguishable from the top decile, the usual PSI), and a
value below the smallest edge into the bottom bin -- whose training share is 0 when the
smallest edge is the training minimum (a mass point at the minimum), so values below a
mass-point minimum weigh heavily (``a ln(a / 1e-4)``). A constant training feature has the
two bins ``(-inf, v)`` (share 0) and ``[v, +inf)`` (share 1): only values below ``v`` are
seen. Non-finite values are rejected (``ValueError``); the sensors drop missing values
before the PSI.

Floors are applied to both shares and the shares are *not* renormalised afterwards (the spec
floors the shares; renormalising would move each share by less than ``1e-3``).

Sample size (the threshold): with ``n = 168`` hourly rows (one week) a window with no drift
already reaches a 95th-percentile PSI of 0.105 when the deciles are known exactly, and 0.109
when they are estimated from 4 380 training rows (one fifth of the default 21 900 h, the size
of a calibration block) -- the 0.109 the issue measured (200 000 draws each). Both exceed
the 0.1 "slight shift" rule of thumb: at 0.1, more than one drift-free week in twenty
alarms. So a PSI must never be compared with a fixed number alone: every detector compares
it with :func:`psi_null_quantile` at its own ``n`` (and, when the deciles come from ``m``
training values, that ``m``), i.e. alarms when ``psi > max(rule_of_thumb,
psi_null_quantile(n, q, n_train=m))``. :func:`metrics_row` stores that threshold beside the PSI
(``buy_proba_psi_null_p95``) together with ``buy_proba_n``. Null 95th percentiles (seed 0,
20 000 draws; ~ ``chi2_9(0.95) / n = 16.92 / n`` for large ``n``):

======  ===============  ================  ===========
  n     deciles known    m = 4 380         16.92 / n
======  ===============  ================  ===========
   24     1.73             1.73              0.70
   48     0.80             0.81              0.35
  100     0.186            0.190             0.169
  168     0.106            0.110             0.101
  336     0.052            0.055             0.050
  720     0.024            0.028             0.024
======  ===============  ================  ===========

Below ``n ~ 50`` empty bins are common and each costs ``0.1 ln(0.1 / 1e-4) = 0.69`` through
the floor; there the PSI carries little information and the threshold says so (it is huge)
rather than raising alarms.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypedDict

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from cvn_assets.ablation.guardrails import (
    CROSS_ENTROPY,
    FOCAL,
    LOSS_FUNCTIONS,
    validate_focal_config,
)

__all__ = [
    "BUY_PROBA_QUANTILES",
    "DECILE_LEVELS",
    "EXPECTANCY_WINDOWS_H",
    "FAILURE_WINDOWS_H",
    "LATENCY_QUANTILES",
    "LOSS_FUNCTION_KEYS",
    "MONITORING_COLUMNS",
    "PSI_FLOOR",
    "BuyProbaQuantiles",
    "LatencySummary",
    "MonitoringRow",
    "bin_counts",
    "buy_proba_quantiles",
    "decile_edges",
    "expectancy_window",
    "latency_summary",
    "merged_edges",
    "metrics_row",
    "psi",
    "psi_null_quantile",
    "shape_reference",
    "training_failures",
    "training_shares",
    "window_standardize",
]

#: The 9 interior decile levels 0.1 .. 0.9 (10 bins).
DECILE_LEVELS: NDArray[np.float64] = np.arange(1, 10, dtype=np.float64) / 10.0
#: Spec 6.1: every bin share is floored at this value before the logarithm.
PSI_FLOOR = 1e-4
#: Row key suffix -> quantile level of the buy_proba distribution.
BUY_PROBA_QUANTILES: dict[str, float] = {
    "p05": 0.05,
    "p25": 0.25,
    "p50": 0.50,
    "p75": 0.75,
    "p95": 0.95,
}
#: Row key suffix -> quantile level of the inference latency.
LATENCY_QUANTILES: dict[str, float] = {"p50": 0.50, "p99": 0.99}
#: Window label -> hours, for the training failures ("last hour and day").
FAILURE_WINDOWS_H: dict[str, float] = {"1h": 1.0, "24h": 24.0}
#: Window label -> hours, for the net expectancy.
EXPECTANCY_WINDOWS_H: dict[str, float] = {"24h": 24.0, "48h": 48.0}
#: ``cvn/loss_function`` tag value -> the identifier used in row keys. Any other tag value is
#: counted under ``"other"`` in the row.
LOSS_FUNCTION_KEYS: dict[str, str] = {CROSS_ENTROPY: "binary_logistic", FOCAL: "focal"}
OTHER_LOSS_KEY = "other"
LOSS_FUNCTION_TAG = "cvn/loss_function"
FAILED_STATUS = "FAILURE"

_NS_PER_HOUR = 3_600_000_000_000
_NS_PER_SECOND = 1_000_000_000


class BuyProbaQuantiles(TypedDict):
    """p05..p95 of buy_proba (probabilities in [0, 1]; NaN when ``n == 0``) and the count."""

    p05: float
    p25: float
    p50: float
    p75: float
    p95: float
    n: int


class LatencySummary(TypedDict):
    """Median and 99th percentile latency in milliseconds (NaN when ``n == 0``), count."""

    p50: float
    p99: float
    n: int


# --------------------------------------------------------------------------- validation


def _finite_1d(name: str, values: ArrayLike, *, allow_empty: bool) -> NDArray[np.float64]:
    """1-D finite float64 array, or a ValueError naming ``name`` and the first bad element."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be an array of real numbers: {exc}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0 and not allow_empty:
        raise ValueError(f"{name} is empty")
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name} must be finite, got {name}[{i}] = {float(arr[i])!r}")
    return arr


def _check_probabilities(name: str, arr: NDArray[np.float64]) -> None:
    bad = (arr < 0.0) | (arr > 1.0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name} must be in [0, 1], got {name}[{i}] = {float(arr[i])!r}")


def _check_edges(edges: ArrayLike) -> NDArray[np.float64]:
    e = _finite_1d("edges", edges, allow_empty=False)
    if (np.diff(e) < 0).any():
        i = int(np.flatnonzero(np.diff(e) < 0)[0])
        raise ValueError(
            f"edges must be non-decreasing, got edges[{i}] = {float(e[i])!r} > edges[{i + 1}] = "
            f"{float(e[i + 1])!r}"
        )
    return e


def _positive_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _positive_hours(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a positive number of hours, got {value!r}")
    f = float(value)
    if not (math.isfinite(f) and f > 0.0):
        raise ValueError(f"{name} must be a positive number of hours, got {value!r}")
    return f


def _utc_ns(name: str, value: object) -> int:
    """A point in time as integer nanoseconds since the Unix epoch (UTC).

    Accepts an aware ``datetime`` / ``pd.Timestamp`` (any zone), or an ``int``/``float`` of
    Unix seconds. Naive datetimes, strings without a zone and NaN are rejected.
    """
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a timezone-aware datetime or Unix seconds, got {value!r}")
    if isinstance(value, numbers.Real):
        f = float(value)
        if not math.isfinite(f):
            raise ValueError(f"{name} must be finite Unix seconds, got {value!r}")
        return round(f * _NS_PER_SECOND)
    if isinstance(value, dt.datetime | str | np.datetime64):
        try:
            ts = pd.Timestamp(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} is not a point in time ({value!r}): {exc}") from None
        if ts is pd.NaT:
            raise ValueError(f"{name} is NaT")
        if ts.tzinfo is None:
            raise ValueError(
                f"{name} must be timezone-aware (UTC), got naive {value!r}; attach a zone, "
                f"e.g. datetime(..., tzinfo=timezone.utc)"
            )
        return int(ts.tz_convert("UTC").as_unit("ns").value)
    raise ValueError(
        f"{name} must be a timezone-aware datetime or Unix seconds, got {type(value).__name__}"
    )


def _window_ns(end_name: str, end: object, hours_name: str, hours: object) -> tuple[int, int]:
    """(lo, hi) in ns for the window (end - hours, end]."""
    hi = _utc_ns(end_name, end)
    h = _positive_hours(hours_name, hours)
    return hi - round(h * _NS_PER_HOUR), hi


# --------------------------------------------------------------------------- PSI


def decile_edges(values: ArrayLike) -> NDArray[np.float64]:
    """The 9 interior decile edges of the training values, shape ``(9,)``, float64.

    ``values``: 1-D, at least one element, all finite (the training buy_proba; any unit, the
    edges are in the same unit). Edges are ``np.quantile(values, [0.1, ..., 0.9])`` with
    numpy's default linear method; they are non-decreasing and equal where the training data
    has a mass point (then the bins between equal edges are empty, see :func:`psi`).
    Raises ``ValueError`` on empty, non-1-D or non-finite input (naming the element).
    """
    arr = _finite_1d("values", values, allow_empty=False)
    return np.asarray(np.quantile(arr, DECILE_LEVELS), dtype=np.float64)


def bin_counts(values: ArrayLike, edges: ArrayLike) -> NDArray[np.int64]:
    """Counts per bin, shape ``(len(edges) + 1,)``, by the module's side rule.

    Bin ``k`` holds ``edges[k-1] <= x < edges[k]`` (outer bins open), i.e. the bin index of
    ``x`` is ``np.searchsorted(edges, x, side="right")``. ``values`` may be empty (all-zero
    counts); non-finite values raise ``ValueError``.
    """
    e = _check_edges(edges)
    x = _finite_1d("values", values, allow_empty=True)
    idx = np.searchsorted(e, x, side="right")
    return np.bincount(idx, minlength=e.size + 1).astype(np.int64)


def _psi_from_shares(
    a: NDArray[np.float64], e: NDArray[np.float64], floor: float
) -> NDArray[np.float64]:
    """PSI along the last axis of floored shares (no renormalisation)."""
    af = np.maximum(a, floor)
    ef = np.maximum(e, floor)
    return np.asarray(np.sum((af - ef) * np.log(af / ef), axis=-1), dtype=np.float64)


def _check_floor(floor: object, n_bins: int) -> float:
    if isinstance(floor, bool) or not isinstance(floor, numbers.Real):
        raise ValueError(f"floor must be a real number, got {floor!r}")
    f = float(floor)
    if not (math.isfinite(f) and 0.0 < f < 1.0 / n_bins):
        raise ValueError(f"floor must be in (0, 1/{n_bins}), got {floor!r}")
    return f


def merged_edges(edges: ArrayLike) -> NDArray[np.float64]:
    """The distinct interior edges, ascending, shape ``(k,)`` with ``1 <= k <= len(edges)``.

    Tied deciles (a mass point in the training values) cut zero-width bins ``[v, v)`` that
    no value can fall into; merging them leaves ``k + 1`` bins, the *merged bins* every PSI
    of this module is computed on when the expected shares are the training sample's own
    (same side rule: a value equal to an edge goes to the bin above it, so a mass point at
    ``v`` fills the bin that starts at ``v``). Raises ``ValueError`` on empty, non-finite
    or decreasing edges.
    """
    return np.unique(_check_edges(edges))


def training_shares(training: ArrayLike, edges: ArrayLike) -> NDArray[np.float64]:
    """The training values' shares in the merged bins of ``edges``, shape ``(k + 1,)``.

    ``training``: 1-D, >= 1 finite values (the sample the edges were cut from);
    ``edges``: its decile edges (:func:`decile_edges`). Bins: :func:`merged_edges`, side rule
    of :func:`bin_counts`. The shares are ``count_b / m`` (each in [0, 1], summing to 1);
    a bin no training value fell into has share 0 (e.g. the bin below a mass point at the
    minimum). This is what ``reference_statistics`` freezes with a model
    (``train_bin_shares``) and what :func:`psi` and :func:`psi_null_quantile` take as
    ``expected``. Raises ``ValueError`` naming the argument on bad input.
    """
    tr = _finite_1d("training", training, allow_empty=False)
    return bin_counts(tr, merged_edges(edges)) / tr.size


def _check_expected(expected: ArrayLike, n_bins: int | None = None) -> NDArray[np.float64]:
    """Expected shares: 1-D, finite, >= 0, summing to 1 (within 1e-6), ``n_bins`` long."""
    e = _finite_1d("expected", expected, allow_empty=False)
    if e.size < 2:
        raise ValueError(f"expected must hold >= 2 shares, got {e.size}")
    if n_bins is not None and e.size != n_bins:
        raise ValueError(
            f"expected holds {e.size} shares but the merged bins of edges are {n_bins}"
        )
    if (e < 0.0).any():
        i = int(np.flatnonzero(e < 0.0)[0])
        raise ValueError(f"expected must be >= 0, got expected[{i}] = {float(e[i])!r}")
    if abs(float(e.sum()) - 1.0) > 1e-6:
        raise ValueError(f"expected must sum to 1, got {float(e.sum())!r}")
    return e


def psi(
    actual: ArrayLike,
    edges: ArrayLike,
    *,
    training: ArrayLike | None = None,
    expected: ArrayLike | None = None,
    floor: float = PSI_FLOOR,
) -> float:
    """Population Stability Index of ``actual`` against the training distribution.

    ``actual``: 1-D, >= 1 finite values (e.g. one window's values). ``edges``: the
    non-decreasing interior edges, normally :func:`decile_edges` of the training values
    (9 edges -> 10 bins, fewer merged bins when deciles are tied). Expected shares, first
    given wins:

    * ``expected``: the training shares in the merged bins (:func:`training_shares`, e.g.
      ``train_bin_shares`` frozen with a model), ``len(merged_edges(edges)) + 1`` values;
    * ``training``: the training values themselves (their shares are computed);
    * neither: every one of the ``len(edges) + 1`` raw bins expects ``1 / (len(edges) + 1)``
      (0.1 for deciles) -- right by construction for continuous training data only; a mass
      point (tied or not) makes it a phantom drift (see the module docstring).

    With training shares the bins are the merged bins (the zero-width bins of tied edges
    would add ``0`` anyway: both shares floored to the same value). Actual share
    ``a_b = count_b / n``; both shares floored at ``floor`` (default ``1e-4``, spec 6.1;
    must be in ``(0, 1/B)``), not renormalised; returns ``sum_b (a_b - e_b) ln(a_b / e_b)``
    >= 0 (dimensionless). Bin side rule: a value equal to an edge belongs to the bin above
    it (``np.searchsorted(edges, x, side="right")``). Compare the result with
    :func:`psi_null_quantile` at the same ``n`` and the same expected shares.

    Raises ``ValueError`` naming the argument on empty ``actual``/``training``, non-finite
    values, decreasing edges, expected shares of the wrong length/sign/sum, or a bad floor.
    """
    e_arr = _check_edges(edges)
    act = _finite_1d("actual", actual, allow_empty=False)
    if expected is None and training is None:
        n_bins = e_arr.size + 1
        fl = _check_floor(floor, n_bins)
        a = bin_counts(act, e_arr) / act.size
        return float(_psi_from_shares(a, np.full(n_bins, 1.0 / n_bins), fl))
    merged = np.unique(e_arr)
    if expected is not None:
        e = _check_expected(expected, merged.size + 1)
    else:
        e = training_shares(training, merged)  # type: ignore[arg-type]
    fl = _check_floor(floor, e.size)
    a = bin_counts(act, merged) / act.size
    return float(_psi_from_shares(a, e, fl))


def psi_null_quantile(
    n: int,
    q: float = 0.95,
    *,
    n_train: int | None = None,
    n_bins: int = 10,
    expected: ArrayLike | None = None,
    floor: float = PSI_FLOOR,
    n_sim: int = 20_000,
    seed: int = 0,
) -> float:
    """The ``q`` quantile of PSI under no drift for ``n`` actual values (Monte Carlo).

    The sample-size-aware threshold for :func:`psi`. PSI depends on the data only through
    the bin counts, so the null is simulated on them. Without ``expected`` the ``n_bins``
    bins are decile bins of continuous data:

    * ``n_train=None`` (deciles known exactly): bin ``b`` has probability ``1/B``; the actual
      counts are ``Multinomial(n, 1/B)``; expected shares ``1/B``.
    * ``n_train=m`` (deciles estimated from ``m`` training values): the edges are
      ``np.quantile`` (linear) of ``m`` uniforms, drawn through the uniform order statistics
      (gamma spacings, exact); the actual counts are multinomial with the edges' bin
      probabilities; the expected shares are the training values' own shares in those bins
      (``ceil((m - 1) k / B)`` values lie below edge ``k``, side rule "right"). This adds the
      ``1/m`` term of Yurdakul (2018).

    With ``expected`` (the training shares in the merged bins, :func:`training_shares`;
    ``n_bins`` is then ignored) -- the null of a PSI taken with those shares, mass points
    included:

    * ``n_train=None``: the true bin probabilities are the shares; counts
      ``Multinomial(n, expected)``. (Uniform shares give exactly the draws of the first
      case.)
    * ``n_train=m``: the true bin probabilities ``pi`` are uncertain around the shares the
      ``m`` training values showed: ``pi ~ Dirichlet(m * expected)`` on the bins with a
      positive share (``0`` on the others: no training value fell there), counts
      ``Multinomial(n, pi)``. For continuous deciles this is the order-statistics case above
      (the probability between two order statistics of ``m`` uniforms is a Dirichlet
      spacing) up to the linear interpolation; for a mass point it is the binomial
      uncertainty of its share.

    A bin with expected share 0 gets no value under the null, so a constant feature
    (shares ``(0, 1)``) has a null of exactly 0. Returns a dimensionless float >= 0. ``n``
    >= 1, ``0 < q < 1``, ``n_train`` >= 2, ``n_bins`` >= 2, ``n_sim`` >= 100 (Monte Carlo
    standard error of the 95th percentile at ``n = 168`` and the default 20 000 draws: about
    0.0008), ``expected`` as in :func:`psi`, else ``ValueError``. Deterministic for a given
    ``seed``; cached.
    """
    n = _positive_int("n", n)
    if isinstance(q, bool) or not isinstance(q, numbers.Real) or not 0.0 < float(q) < 1.0:
        raise ValueError(f"q must be in (0, 1), got {q!r}")
    if n_train is not None:
        n_train = _positive_int("n_train", n_train, minimum=2)
    n_sim = _positive_int("n_sim", n_sim, minimum=100)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if expected is not None:
        e = _check_expected(expected)
        fl = _check_floor(floor, e.size)
        shares = tuple(float(x) for x in e)
        return _psi_null_shares_cached(n, float(q), n_train, shares, fl, n_sim, int(seed))
    n_bins = _positive_int("n_bins", n_bins, minimum=2)
    fl = _check_floor(floor, n_bins)
    return _psi_null_quantile_cached(n, float(q), n_train, n_bins, fl, n_sim, int(seed))


@functools.lru_cache(maxsize=1024)
def _psi_null_shares_cached(
    n: int,
    q: float,
    n_train: int | None,
    shares: tuple[float, ...],
    floor: float,
    n_sim: int,
    seed: int,
) -> float:
    rng = np.random.default_rng(seed)
    expected = np.asarray(shares, dtype=np.float64)
    if n_train is None:
        counts = rng.multinomial(n, expected, size=n_sim)
    else:
        live = expected > 0.0
        probs = np.zeros((n_sim, expected.size))
        if live.sum() == 1:
            probs[:, live] = 1.0
        else:
            probs[:, live] = rng.dirichlet(n_train * expected[live], size=n_sim)
        counts = rng.multinomial(n, probs)
    values = _psi_from_shares(counts / n, expected[np.newaxis, :], floor)
    return float(np.quantile(values, q))


@functools.lru_cache(maxsize=256)
def _psi_null_quantile_cached(
    n: int, q: float, n_train: int | None, n_bins: int, floor: float, n_sim: int, seed: int
) -> float:
    rng = np.random.default_rng(seed)
    if n_train is None:
        counts = rng.multinomial(n, np.full(n_bins, 1.0 / n_bins), size=n_sim)
        expected = np.full(n_bins, 1.0 / n_bins)
    else:
        m = n_train
        # np.quantile's linear method: virtual index h_k = (m - 1) k / B, exactly in integers.
        num = (m - 1) * np.arange(1, n_bins, dtype=np.int64)
        lo_idx = num // n_bins  # 0-based order statistic below the edge
        frac = (num % n_bins) / n_bins
        hi_idx = np.minimum(lo_idx + 1, m - 1)
        needed = np.unique(np.concatenate([lo_idx, hi_idx]))
        # U_(j) (0-based) = G_{j+1} / G_{m+1}, G_i = sum of i Exp(1): gamma spacings.
        pos = needed + 1
        shapes = np.diff(np.concatenate([[0], pos, [m + 1]])).astype(np.float64)
        g = np.cumsum(rng.gamma(shapes, size=(n_sim, shapes.size)), axis=1)
        u = g[:, :-1] / g[:, -1:]
        col = {int(j): c for c, j in enumerate(needed)}
        u_lo = u[:, [col[int(j)] for j in lo_idx]]
        u_hi = u[:, [col[int(j)] for j in hi_idx]]
        edges = u_lo + frac * (u_hi - u_lo)
        cuts = np.concatenate([np.zeros((n_sim, 1)), edges, np.ones((n_sim, 1))], axis=1)
        probs = np.clip(np.diff(cuts, axis=1), 0.0, None)
        probs /= probs.sum(axis=1, keepdims=True)
        counts = rng.multinomial(n, probs)
        below = -(-num // n_bins)  # ceil(h_k): training values strictly below edge k
        expected = np.diff(np.concatenate([[0], below, [m]])) / m
    shares = counts / n
    values = _psi_from_shares(shares, expected[np.newaxis, :], floor)
    return float(np.quantile(values, q))


# --------------------------------------------------------------------------- quantiles


def buy_proba_quantiles(p: ArrayLike) -> BuyProbaQuantiles:
    """p05, p25, p50, p75, p95 of the BUY probabilities and their count ``n``.

    ``p``: 1-D, finite, each in [0, 1] (unitless probabilities), may be empty (then every
    quantile is NaN and ``n = 0``). Quantiles by ``np.quantile`` default (linear) method.
    Raises ``ValueError`` naming ``p`` and the first bad element.
    """
    arr = _finite_1d("p", p, allow_empty=True)
    _check_probabilities("p", arr)
    if arr.size == 0:
        qs = [math.nan] * len(BUY_PROBA_QUANTILES)
    else:
        qs = [float(v) for v in np.quantile(arr, list(BUY_PROBA_QUANTILES.values()))]
    return BuyProbaQuantiles(p05=qs[0], p25=qs[1], p50=qs[2], p75=qs[3], p95=qs[4], n=int(arr.size))


def latency_summary(ms: ArrayLike) -> LatencySummary:
    """Median and 99th percentile inference latency in milliseconds, and the count ``n``.

    ``ms``: 1-D, finite, >= 0 (milliseconds per inference), may be empty (NaN, ``n = 0``).
    Quantiles by ``np.quantile`` default (linear) method -- with fewer than 100 samples the
    p99 interpolates between the two largest values; read it with ``n``.
    Raises ``ValueError`` naming ``ms`` and the first bad element.
    """
    arr = _finite_1d("ms", ms, allow_empty=True)
    neg = arr < 0
    if neg.any():
        i = int(np.flatnonzero(neg)[0])
        raise ValueError(f"ms must be >= 0, got ms[{i}] = {float(arr[i])!r}")
    if arr.size == 0:
        return LatencySummary(p50=math.nan, p99=math.nan, n=0)
    p50, p99 = (float(v) for v in np.quantile(arr, list(LATENCY_QUANTILES.values())))
    return LatencySummary(p50=p50, p99=p99, n=int(arr.size))


# --------------------------------------------------------------------------- expectancy


def _trade_columns(trades: Any) -> tuple[Sequence[Any] | pd.Series, NDArray[np.float64]]:
    """(exit times, net returns) from a DataFrame/Mapping with columns or from pairs."""
    if isinstance(trades, pd.DataFrame) or isinstance(trades, Mapping):
        missing = [c for c in ("exit_time", "net_return") if c not in trades]
        if missing:
            raise ValueError(f"trades is missing column(s) {missing}; needs exit_time, net_return")
        times = trades["exit_time"]
        nets = trades["net_return"]
    else:
        pairs = list(trades)
        for i, pair in enumerate(pairs):
            if not isinstance(pair, Sequence) or isinstance(pair, str) or len(pair) != 2:
                raise ValueError(
                    f"trades[{i}] must be an (exit_time, net_return) pair, got {pair!r}"
                )
        times = [t for t, _ in pairs]
        nets = [r for _, r in pairs]
    net = _finite_1d("trades.net_return", nets, allow_empty=True)
    if len(times) != net.size:
        raise ValueError(f"trades: {len(times)} exit_time values but {net.size} net_return values")
    return times, net


def _times_ns(name: str, times: Sequence[Any] | pd.Series) -> NDArray[np.int64]:
    if isinstance(times, pd.Series | pd.Index) and isinstance(times.dtype, pd.DatetimeTZDtype):
        return np.asarray(pd.DatetimeIndex(times).tz_convert("UTC").as_unit("ns").asi8)
    if isinstance(times, pd.Series | pd.Index) and pd.api.types.is_datetime64_dtype(times.dtype):
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {times.dtype}")
    return np.array([_utc_ns(f"{name}[{i}]", t) for i, t in enumerate(times)], dtype=np.int64)


def expectancy_window(trades: Any, end: Any, hours: float) -> tuple[float, int]:
    """(mean net return per trade, number of trades) over trades exiting in ``(end - hours, end]``.

    ``trades``: a ``pd.DataFrame`` or mapping with columns ``exit_time`` and ``net_return``,
    or an iterable of ``(exit_time, net_return)`` pairs. ``exit_time``: timezone-aware
    datetimes or Unix seconds. ``net_return``: realised return of the trade as a fraction
    (0.01 = +1 %), already net of fees on both sides (``metrics.trade_returns`` convention).
    ``end``: aware datetime or Unix seconds; ``hours`` > 0. A trade exiting exactly at
    ``end`` counts, one exiting exactly at ``end - hours`` does not.

    Returns ``(nan, 0)`` when no trade exits in the window (not 0.0: no trades is not
    break-even). Raises ``ValueError`` naming the bad column/element.
    """
    times, net = _trade_columns(trades)
    lo, hi = _window_ns("end", end, "hours", hours)
    t = _times_ns("trades.exit_time", times)
    inside = (t > lo) & (t <= hi)
    n = int(np.count_nonzero(inside))
    return (float(net[inside].mean()) if n else math.nan), n


# --------------------------------------------------------------------------- failures


def _record_fields(i: int, record: Any) -> tuple[Any, Any, Mapping[str, Any]]:
    if isinstance(record, Mapping):
        if "status" not in record:
            raise ValueError(f"run_records[{i}] has no 'status'")
        if "end_time" in record:
            end = record["end_time"]
        elif "end_time_utc" in record:
            end = record["end_time_utc"]
        else:
            raise ValueError(f"run_records[{i}] has no 'end_time' (or 'end_time_utc')")
        status, tags = record["status"], record.get("tags") or {}
    elif isinstance(record, Sequence) and not isinstance(record, str) and len(record) == 3:
        status, end, tags = record
        tags = tags or {}
    else:
        raise ValueError(
            f"run_records[{i}] must be a (status, end_time_utc, tags) tuple or a mapping, "
            f"got {record!r}"
        )
    if not isinstance(tags, Mapping):
        raise ValueError(f"run_records[{i}] tags must be a mapping, got {type(tags).__name__}")
    return status, end, tags


def _status_name(i: int, status: Any) -> str:
    value = getattr(status, "value", status)  # DagsterRunStatus.FAILURE.value == "FAILURE"
    if not isinstance(value, str):
        raise ValueError(f"run_records[{i}] status must be a string or enum, got {status!r}")
    return value.upper()


def training_failures(
    run_records: Iterable[Any],
    now: Any,
    *,
    loss_functions: Iterable[str] = LOSS_FUNCTIONS,
    windows_h: Mapping[str, float] = FAILURE_WINDOWS_H,
) -> dict[str, dict[str, int]]:
    """Failed training runs per ``cvn/loss_function`` tag value and window.

    ``run_records``: plain records, each either a tuple ``(status, end_time_utc, tags)`` or a
    mapping with keys ``status``, ``end_time`` (or ``end_time_utc``) and ``tags``. From
    Dagster: ``(r.dagster_run.status.value, r.end_time, r.dagster_run.tags)`` for each
    ``RunRecord``. ``status``: ``"FAILURE"`` (case-insensitive, or an enum whose ``.value``
    it is) counts as failed; every other status (``SUCCESS``, ``CANCELED``, ...) does not.
    ``end_time_utc``: aware datetime or Unix seconds; ``None`` (run not ended) is skipped.
    ``tags``: mapping; records without ``cvn/loss_function`` are not training runs and are
    skipped. ``now``: aware datetime or Unix seconds.

    Windows (default ``{"1h": 1, "24h": 24}``) are ``(now - h, now]``. Returns
    ``{loss_function: {window_label: count}}`` with every loss function of
    ``loss_functions`` present (zeros included) plus any other tag value met with a failure
    in a window. Raises ``ValueError`` naming the record index on a malformed record.
    """
    hi = _utc_ns("now", now)
    los = {
        label: hi - round(_positive_hours(f"windows_h[{label!r}]", h) * _NS_PER_HOUR)
        for label, h in windows_h.items()
    }
    out: dict[str, dict[str, int]] = {lf: dict.fromkeys(los, 0) for lf in loss_functions}
    for i, record in enumerate(run_records):
        status, end, tags = _record_fields(i, record)
        if _status_name(i, status) != FAILED_STATUS or end is None:
            continue
        lf = tags.get(LOSS_FUNCTION_TAG)
        if lf is None:
            continue
        t = _utc_ns(f"run_records[{i}].end_time", end)
        for label, lo in los.items():
            if lo < t <= hi:
                out.setdefault(str(lf), dict.fromkeys(los, 0))[label] += 1
    return out


# --------------------------------------------------------------------------- the row


@dataclasses.dataclass(frozen=True)
class MonitoringRow:
    """One ``monitoring_metrics`` row: the five metrics for one crypto and one UTC day.

    Keys (stable; :data:`MONITORING_COLUMNS` in this order). ``None`` = not defined (SQL NULL).

    * ``crypto`` (str), ``day`` (ISO date ``YYYY-MM-DD``, UTC), ``as_of_utc`` (ISO-8601
      timestamp with ``+00:00``: the end of every window).
    * ``training_failed_<lf>_<w>`` (int) for ``lf`` in ``binary_logistic``, ``focal``,
      ``other`` (any other tag value) and ``w`` in ``1h``, ``24h``: failed training runs.
      These are global (not per crypto): every crypto's row repeats them.
    * ``loss_function`` (str, ``binary:logistic`` | ``focal``), ``focal_loss_active`` (int
      0/1), ``focal_gamma``, ``focal_alpha`` (float, ``None`` for the baseline).
    * ``buy_proba_p05`` .. ``buy_proba_p95`` (float in [0, 1]), ``buy_proba_n`` (int).
    * ``buy_proba_psi`` (float >= 0), ``buy_proba_psi_null_p95`` (float: the no-drift 95th
      percentile at this ``n`` and training size; alarm only above it),
      ``buy_proba_psi_expected`` (``"training"`` | ``"uniform"``: where the expected shares
      came from; ``None`` without PSI).
    * ``expectancy_net_24h``, ``expectancy_net_48h`` (float: mean net return per trade as a
      fraction), ``expectancy_trades_24h``, ``expectancy_trades_48h`` (int).
    * ``latency_p50_ms``, ``latency_p99_ms`` (float, milliseconds), ``latency_n`` (int).
    """

    crypto: str
    day: str
    as_of_utc: str
    training_failed_binary_logistic_1h: int
    training_failed_binary_logistic_24h: int
    training_failed_focal_1h: int
    training_failed_focal_24h: int
    training_failed_other_1h: int
    training_failed_other_24h: int
    loss_function: str
    focal_loss_active: int
    focal_gamma: float | None
    focal_alpha: float | None
    buy_proba_p05: float | None
    buy_proba_p25: float | None
    buy_proba_p50: float | None
    buy_proba_p75: float | None
    buy_proba_p95: float | None
    buy_proba_n: int
    buy_proba_psi: float | None
    buy_proba_psi_null_p95: float | None
    buy_proba_psi_expected: str | None
    expectancy_net_24h: float | None
    expectancy_trades_24h: int
    expectancy_net_48h: float | None
    expectancy_trades_48h: int
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    latency_n: int

    def as_dict(self) -> dict[str, Any]:
        """The flat row, keys in :data:`MONITORING_COLUMNS` order."""
        return dataclasses.asdict(self)


#: The row's keys, in order (also the ``monitoring_metrics`` table's metric columns).
MONITORING_COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(MonitoringRow))


def _none_if_nan(x: float) -> float | None:
    return None if math.isnan(x) else x


def _parse_day(day: Any) -> dt.date:
    if isinstance(day, dt.datetime):
        raise ValueError(f"day must be a date or 'YYYY-MM-DD', got datetime {day!r}")
    if isinstance(day, dt.date):
        return day
    if isinstance(day, str):
        try:
            return dt.date.fromisoformat(day)
        except ValueError:
            raise ValueError(f"day must be 'YYYY-MM-DD', got {day!r}") from None
    raise ValueError(f"day must be a date or 'YYYY-MM-DD', got {day!r}")


def metrics_row(
    *,
    crypto: str,
    day: dt.date | str,
    loss_function: str,
    gamma: float | None,
    alpha: float | None,
    buy_proba: ArrayLike,
    trades: Any,
    latency_ms: ArrayLike,
    run_records: Iterable[Any] = (),
    training_proba: ArrayLike | None = None,
    psi_edges: ArrayLike | None = None,
    now: Any = None,
) -> dict[str, Any]:
    """Assemble the five metrics for one crypto and day into a flat dict (see MonitoringRow).

    ``now`` (aware datetime or Unix seconds) ends every window; default: the end of ``day``
    (``day + 1`` at 00:00 UTC). ``buy_proba`` and ``latency_ms`` are the day's predictions
    and latencies (any length, may be empty); ``trades`` as in :func:`expectancy_window`
    (it should hold at least the last 48 h); ``run_records`` as in
    :func:`training_failures`; ``loss_function``/``gamma``/``alpha`` describe the active
    model and are checked by ``guardrails.validate_focal_config``.

    PSI: with ``training_proba`` (the training/calibration buy_proba) the edges are its
    deciles and the expected shares its own shares in the merged bins
    (``buy_proba_psi_expected="training"``), and the threshold is ``psi_null_quantile(n,
    0.95, n_train=len(training_proba), expected=those shares)`` (same bins); with
    only ``psi_edges`` the expected shares are ``1/B`` (``"uniform"``) and the threshold
    assumes known deciles; with neither, or no ``buy_proba``, the PSI fields are ``None``.
    Raises ``ValueError`` (``GuardrailError`` for the loss config) naming the bad argument.
    """
    if not isinstance(crypto, str) or not crypto:
        raise ValueError(f"crypto must be a non-empty string, got {crypto!r}")
    d = _parse_day(day)
    validate_focal_config(loss_function, gamma, alpha)
    if now is None:
        end = dt.datetime.combine(d + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    else:
        end = pd.Timestamp(_utc_ns("now", now), unit="ns", tz="UTC").to_pydatetime()
    failed = _failure_fields(training_failures(run_records, end))
    focal = loss_function == FOCAL
    bq = buy_proba_quantiles(buy_proba)
    p = _finite_1d("buy_proba", buy_proba, allow_empty=True)
    psi_fields = _psi_fields(p, bq["n"], training_proba, psi_edges)
    exp = {w: expectancy_window(trades, end, h) for w, h in EXPECTANCY_WINDOWS_H.items()}
    lat = latency_summary(latency_ms)
    row = MonitoringRow(
        crypto=crypto,
        day=d.isoformat(),
        as_of_utc=end.astimezone(dt.UTC).isoformat(),
        **failed,
        loss_function=loss_function,
        focal_loss_active=int(focal),
        focal_gamma=float(gamma) if focal and gamma is not None else None,
        focal_alpha=float(alpha) if focal and alpha is not None else None,
        **_quantile_fields(bq),
        buy_proba_n=bq["n"],
        **psi_fields,
        expectancy_net_24h=_none_if_nan(exp["24h"][0]),
        expectancy_trades_24h=exp["24h"][1],
        expectancy_net_48h=_none_if_nan(exp["48h"][0]),
        expectancy_trades_48h=exp["48h"][1],
        latency_p50_ms=_none_if_nan(lat["p50"]),
        latency_p99_ms=_none_if_nan(lat["p99"]),
        latency_n=lat["n"],
    )
    return row.as_dict()


def _quantile_fields(bq: BuyProbaQuantiles) -> dict[str, Any]:
    """``buy_proba_p05`` .. ``buy_proba_p95`` (None where NaN: no prediction)."""
    q: Mapping[str, Any] = bq
    return {f"buy_proba_{k}": _none_if_nan(q[k]) for k in BUY_PROBA_QUANTILES}


def _failure_fields(failures: Mapping[str, Mapping[str, int]]) -> dict[str, Any]:
    """``training_failed_<key>_<window>`` for every loss key (any other tag value counted
    under ``other``) and window, from :func:`training_failures`'s counts (0 where none)."""
    keys = (*LOSS_FUNCTION_KEYS.values(), OTHER_LOSS_KEY)
    failed = {(key, w): 0 for key in keys for w in FAILURE_WINDOWS_H}
    for lf, counts in failures.items():
        key = LOSS_FUNCTION_KEYS.get(lf, OTHER_LOSS_KEY)
        for w, c in counts.items():
            failed[(key, w)] += c
    return {f"training_failed_{key}_{w}": n for (key, w), n in failed.items()}


def _psi_fields(
    p: NDArray[np.float64],
    n: int,
    training_proba: ArrayLike | None,
    psi_edges: ArrayLike | None,
) -> dict[str, Any]:
    """``buy_proba_psi``, ``buy_proba_psi_null_p95``, ``buy_proba_psi_expected`` of the
    day's ``p`` (``n`` values) against the training buy_proba's deciles and shares, else the
    given edges with uniform shares, else None (see :func:`metrics_row`)."""
    psi_value: float | None = None
    psi_null: float | None = None
    psi_expected: str | None = None
    if n > 0 and training_proba is not None:
        tr = _finite_1d("training_proba", training_proba, allow_empty=False)
        _check_probabilities("training_proba", tr)
        edges = decile_edges(tr)
        shares = training_shares(tr, edges)
        psi_value = psi(p, edges, expected=shares)
        psi_null = psi_null_quantile(n, 0.95, n_train=max(int(tr.size), 2), expected=shares)
        psi_expected = "training"
    elif n > 0 and psi_edges is not None:
        edges = _check_edges(psi_edges)
        psi_value = psi(p, edges)
        psi_null = psi_null_quantile(n, 0.95, n_bins=edges.size + 1)
        psi_expected = "uniform"
    return {
        "buy_proba_psi": psi_value,
        "buy_proba_psi_null_p95": psi_null,
        "buy_proba_psi_expected": psi_expected,
    }


# --------------------------------------------------------------------------- window shape

#: rows of a data-drift window (7 days of hourly rows)
SHAPE_WINDOW_ROWS = 168


def window_standardize(values: ArrayLike) -> NDArray[np.float64]:
    """``(x - median) / IQR`` of a window's own values (issue 23: inputs comparable across
    volatility regimes): a volatility feature's level and a return's scale move with the
    market's regime for weeks, so a 7-day window of them covers one or two training deciles
    and its PSI against the training deciles sits at its ceiling in any regime but the
    training's. Standardised by the window itself, only the **shape** of the week's
    distribution is left (skew, tails, clumps, a stuck or constant stretch). ``IQR = 0``
    (more than half the values equal): ``x - median`` (the clump stays a clump). Finite 1-D
    values (``ValueError`` otherwise); empty in, empty out."""
    x = _finite_1d("values", values, allow_empty=True)
    if x.size == 0:
        return x
    q25, med, q75 = np.quantile(x, [0.25, 0.5, 0.75])
    iqr = float(q75 - q25)
    return (x - med) / iqr if iqr > 0 else x - med


def shape_reference(
    train_values: ArrayLike, window: int = SHAPE_WINDOW_ROWS, q: float = 0.99
) -> dict[str, Any] | None:
    """The data-drift reference of one feature on window-standardised values: the training
    series cut into consecutive ``window``-row blocks, each standardised by itself
    (:func:`window_standardize`) and pooled; ``shape_edges`` (its decile edges),
    ``shape_shares`` (its shares in their merged bins) and ``shape_window_psi_q99`` (the
    ``q`` quantile of the blocks' own PSI against them: the no-drift spread of a week's shape,
    with the feature's autocorrelation). None with fewer than 20 blocks."""
    x = _finite_1d("train_values", train_values, allow_empty=True)
    nb = x.size // window
    if nb < 20:
        return None
    blocks = [window_standardize(x[i * window : (i + 1) * window]) for i in range(nb)]
    pooled = np.concatenate(blocks)
    edges = decile_edges(pooled)
    shares = training_shares(pooled, edges)
    psis = [psi(b, edges, expected=shares) for b in blocks]
    return {
        "shape_edges": edges.tolist(),
        "shape_shares": shares.tolist(),
        "shape_window_psi_q99": float(np.quantile(psis, q)),
    }
