"""The pure statistical procedures behind the ablation gates (spec 7.3-7.5).

Benjamini-Hochberg FDR adjustment, one-sided paired tests (t-test, Wilcoxon as a robustness
figure), the paired percentile-bootstrap CI, paired Cohen's d, and CSCV / PBO. Each takes plain
arrays (or a T x N performance matrix), validates them before any work (ValueError naming the
argument and the value) and knows nothing of ``finetune_results``; the gate decisions built
on them are in :mod:`cvn_assets.ablation.gates`.

Why a t-test and not Wilcoxon: with n = 5 cryptos the exact Wilcoxon signed-rank null
distribution has 2^5 = 32 equally likely sign patterns, so its smallest p is 1/32 = 0.03125
one-sided and 0.0625 two-sided (Wilcoxon 1945).  Two-sided it can never reach 0.05; one-sided,
after BH over 20 tests the k-th smallest p must satisfy p_(k) <= 0.05 k / 20, so 0.03125 passes
only if at least 13 of the 20 tests sit at the floor -- the gate would be nearly powerless.  The
paired t-test has a continuous null (Student 1908) and can reach any p with 4 df; its normality
assumption is the price, which is why gates 2 and 3 (distribution-free bootstrap, effect size)
are required as well.  BH stays valid under the positive dependence created by the shared
baseline and shared cryptos (PRDS, Benjamini & Yekutieli 2001).

References
----------
- Benjamini, Hochberg (1995), "Controlling the false discovery rate", JRSS B 57(1):289-300.
- Benjamini, Yekutieli (2001), "The control of the FDR under dependency", Ann. Stat. 29(4).
- Student (1908), "The probable error of a mean", Biometrika 6(1).
- Wilcoxon (1945), "Individual comparisons by ranking methods", Biometrics Bulletin 1(6).
- Efron, Tibshirani (1993), *An Introduction to the Bootstrap*, ch. 13 (percentile interval).
- Cohen (1988), *Statistical Power Analysis for the Behavioral Sciences*, 2nd ed.
- Lakens (2013), "Calculating and reporting effect sizes", Front. Psychol. 4:863 (d_z, d_av).
- Bailey, Borwein, Lopez de Prado, Zhu (2014/2017), "The probability of backtest overfitting",
  J. Computational Finance 20(4) (CSCV, PBO).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from itertools import combinations
from typing import Literal, TypedDict

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy import stats

__all__ = [
    "CohensD",
    "OneSidedTest",
    "PboMetric",
    "benjamini_hochberg",
    "check_probability",
    "cohens_d",
    "cscv_logits",
    "effect_size_label",
    "paired_bootstrap_ci",
    "paired_t_test_greater",
    "performance_array",
    "probability_of_backtest_overfitting",
    "trim_for_cscv",
    "trim_to_blocks",
    "wilcoxon_greater",
]

PboMetric = Literal["mean", "sharpe"]

# Relative spread below which a vector of deltas is treated as constant: f1 deltas are
# differences of floats, so "all equal" deltas can differ in the last bits.
_ZERO_SPREAD_RTOL = 1e-12


# --------------------------------------------------------------------------------------------
# small validated-array helpers
# --------------------------------------------------------------------------------------------
def _as_1d_finite(values: ArrayLike, name: str, *, min_size: int) -> NDArray[np.float64]:
    """Return ``values`` as a finite 1-D float array or raise a ValueError naming ``name``."""
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric; got {values!r}") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {arr.shape}")
    if arr.size < min_size:
        raise ValueError(f"{name} needs at least {min_size} values; got {arr.size}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{name}[{i}] is not finite: {arr[i]!r}")
    return arr


def _is_constant(arr: NDArray[np.float64]) -> bool:
    scale = max(1.0, float(np.max(np.abs(arr))))
    return float(np.ptp(arr)) <= _ZERO_SPREAD_RTOL * scale


def check_probability(value: float, name: str, *, inclusive_high: bool = False) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is a number in (0, 1) or (0, 1]."""
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    ok = numeric and math.isfinite(value) and (value <= 1.0 if inclusive_high else value < 1.0)
    if not (ok and value > 0.0):
        upper = "1]" if inclusive_high else "1)"
        raise ValueError(f"{name} must be in (0, {upper}; got {value!r}")


# --------------------------------------------------------------------------------------------
# multiple testing
# --------------------------------------------------------------------------------------------
def benjamini_hochberg(pvalues: ArrayLike) -> NDArray[np.float64]:
    """Benjamini-Hochberg (1995) step-up adjusted p-values, same shape as ``pvalues``.

    Rejecting every hypothesis whose adjusted p is <= q controls the false discovery rate at q
    for independent or positively dependent (PRDS) tests (Benjamini & Yekutieli 2001).  The
    sweep applies it to the family "non-baseline variants x folds" (spec 7.3: 4 x 5 = 20).
    Adjusted p_(k) = min_{j >= k} min(1, m p_(j) / j), identical to
    ``statsmodels.stats.multitest.multipletests(method="fdr_bh")[1]``.
    """
    p = np.asarray(pvalues, dtype=float)
    flat = p.ravel()
    if flat.size == 0:
        raise ValueError("pvalues is empty; BH needs at least one p-value")
    bad = np.flatnonzero(~np.isfinite(flat) | (flat < 0.0) | (flat > 1.0))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"pvalues[{i}] must be a finite number in [0, 1]; got {flat[i]!r}")
    m = flat.size
    order = np.argsort(flat, kind="stable")
    scaled = flat[order] * m / np.arange(1, m + 1)
    adjusted_sorted = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    out = np.empty(m, dtype=float)
    out[order] = adjusted_sorted
    return out.reshape(p.shape)


# --------------------------------------------------------------------------------------------
# paired tests
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OneSidedTest:
    """Result of a one-sided paired test of H1: mean delta > 0."""

    statistic: float
    pvalue: float
    df: int
    method: str


def paired_t_test_greater(deltas: ArrayLike) -> OneSidedTest:
    """One-sided paired t-test (Student 1908) of H1: E[delta] > 0 on paired differences.

    ``t = mean(d) / (sd(d) / sqrt(n))`` with ``sd`` at ddof=1 and ``p = P(T_{n-1} >= t)``; the
    same as ``scipy.stats.ttest_rel(treatment, control, alternative="greater")``.  Chosen over
    the Wilcoxon signed-rank test because with n = 5 cryptos the latter cannot go below
    p = 1/32 one-sided (see module docstring), so a BH-corrected Wilcoxon gate could not pass.

    Zero-variance deltas (all equal, up to float noise) make t undefined, handled explicitly:

    * common delta <= 0: ``p = 1`` (no evidence of improvement; ``statistic`` is -inf, or NaN
      when the delta is exactly 0);
    * common delta > 0: t would be +inf and p = 0, which would let a degenerate pipeline (e.g.
      the same constant offset everywhere) pass any threshold.  We instead return the exact
      one-sided **sign-test** p = 2**-n (every one of the n pairs improved; the smallest p any
      distribution-free test of the sign can give), ``statistic`` +inf, and say so in
      ``method``.  With n = 5 that is 0.03125: finite and conservative.
    """
    d = _as_1d_finite(deltas, "deltas", min_size=2)
    n = int(d.size)
    mean = float(d.mean())
    if _is_constant(d):
        if mean <= 0.0:
            stat = float("nan") if mean == 0.0 else float("-inf")
            return OneSidedTest(stat, 1.0, n - 1, "zero-variance deltas <= 0: p = 1")
        return OneSidedTest(
            float("inf"), 0.5**n, n - 1, "zero-variance deltas > 0: exact sign test p = 2^-n"
        )
    sd = float(d.std(ddof=1))
    t = mean / (sd / math.sqrt(n))
    p = float(stats.t.sf(t, df=n - 1))
    return OneSidedTest(t, p, n - 1, "one-sided paired t-test")


def wilcoxon_greater(deltas: NDArray[np.float64]) -> float:
    """One-sided Wilcoxon signed-rank p (robustness figure, not a gate); 1.0 if all zero."""
    if np.all(deltas == 0.0):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.wilcoxon(deltas, alternative="greater", zero_method="wilcox")
    return float(res.pvalue)


# --------------------------------------------------------------------------------------------
# bootstrap CI and effect size
# --------------------------------------------------------------------------------------------
def paired_bootstrap_ci(
    deltas: ArrayLike,
    *,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap CI of the mean of paired differences (Efron & Tibshirani 1993).

    Resampling the per-cell deltas ``treatment - control`` with replacement resamples whole
    pairs, so the pairing is preserved.  ``scipy.stats.bootstrap`` with ``method="percentile"``
    and a seeded generator makes the interval reproducible.  Percentile rather than BCa: BCa's
    acceleration is 0/0 (NaN) when every delta is equal, which happens with quantised F1 on
    small test blocks; in that case the bootstrap distribution is a point mass and we return
    ``(d, d)`` directly.
    """
    d = _as_1d_finite(deltas, "deltas", min_size=2)
    check_probability(confidence, "confidence")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 100:
        raise ValueError(f"n_resamples must be an integer >= 100; got {n_resamples!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"seed must be an integer; got {seed!r}")
    if _is_constant(d):
        value = float(d.mean())
        return value, value
    res = stats.bootstrap(
        (d,),
        np.mean,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(int(seed)),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


class CohensD(TypedDict):
    """Paired standardized mean differences (Lakens 2013)."""

    mean_delta: float
    d_z: float
    d_av: float
    magnitude: str


def effect_size_label(d: float) -> str:
    """Cohen's (1988) benchmark for |d|: <0.2 negligible, <0.5 small, <0.8 medium, else large."""
    if not isinstance(d, int | float) or math.isnan(d):
        raise ValueError(f"effect size must be a number; got {d!r}")
    a = abs(d)
    if a < 0.2:
        return "negligible"
    if a < 0.5:
        return "small"
    if a < 0.8:
        return "medium"
    return "large"


def _standardize(mean: float, sd: float) -> float:
    if sd > 0.0:
        return mean / sd
    return 0.0 if mean == 0.0 else math.copysign(math.inf, mean)


def cohens_d(treatment: ArrayLike, control: ArrayLike) -> CohensD:
    """Cohen's d for paired samples, both flavours of Lakens (2013).

    * ``d_z = mean(t - c) / sd(t - c)``: the standardizer of the paired test itself; it grows
      with the correlation between arms, so it is not comparable with the 0.2/0.5/0.8 scale.
    * ``d_av = mean(t - c) / ((sd(t) + sd(c)) / 2)``: standardized on the spread of the raw
      f1_buy values, comparable with between-subject d, so Cohen's (1988) 0.2/0.5/0.8
      benchmarks (and ``magnitude``) apply to it.

    Standard deviations use ddof=1.  A zero standardizer gives 0 for a zero mean and +-inf
    otherwise (no noise at all: the effect is infinitely large relative to it).
    """
    t = _as_1d_finite(treatment, "treatment", min_size=2)
    c = _as_1d_finite(control, "control", min_size=2)
    if t.shape != c.shape:
        raise ValueError(
            f"treatment and control must be paired (same length); got {t.size} and {c.size}"
        )
    diff = t - c
    mean = float(diff.mean())
    d_z = _standardize(mean, float(diff.std(ddof=1)))
    sd_av = (float(t.std(ddof=1)) + float(c.std(ddof=1))) / 2.0
    d_av = _standardize(mean, sd_av)
    return CohensD(mean_delta=mean, d_z=d_z, d_av=d_av, magnitude=effect_size_label(d_av))


# --------------------------------------------------------------------------------------------
# PBO by combinatorially symmetric cross-validation
# --------------------------------------------------------------------------------------------
def performance_array(performance: ArrayLike | pd.DataFrame) -> NDArray[np.float64]:
    """The T x N performance matrix as a finite float array (N >= 2), or a ValueError."""
    arr = np.asarray(performance, dtype=float)
    if arr.ndim != 2:
        raise ValueError(f"performance must be 2-D (T x N); got shape {arr.shape}")
    if arr.shape[1] < 2:
        raise ValueError(f"performance needs at least 2 columns (variants); got {arr.shape[1]}")
    bad = np.argwhere(~np.isfinite(arr))
    if bad.size:
        r, c = (int(x) for x in bad[0])
        raise ValueError(f"performance[{r}, {c}] is not finite: {arr[r, c]!r}")
    return arr


def _check_n_blocks(n_blocks: int, n_rows: int) -> None:
    if isinstance(n_blocks, bool) or not isinstance(n_blocks, int | np.integer):
        raise ValueError(f"n_blocks must be an even integer >= 2; got {n_blocks!r}")
    if n_blocks < 2 or n_blocks % 2:
        raise ValueError(f"n_blocks must be an even integer >= 2; got {n_blocks}")
    if n_rows < n_blocks:
        raise ValueError(f"n_blocks={n_blocks} needs at least {n_blocks} rows; got T={n_rows}")


def trim_to_blocks(arr: NDArray[np.float64], n_blocks: int) -> tuple[NDArray[np.float64], int]:
    """:func:`trim_for_cscv` without the warning: (the rows after the first ``T mod n_blocks``,
    how many were dropped)."""
    _check_n_blocks(n_blocks, arr.shape[0])
    n_drop = arr.shape[0] % n_blocks
    return arr[n_drop:], n_drop


def trim_for_cscv(
    performance: ArrayLike | pd.DataFrame, n_blocks: int
) -> tuple[NDArray[np.float64], int]:
    """Drop the first ``T mod n_blocks`` rows so CSCV gets equal blocks; warn when it does.

    The *oldest* rows are dropped so the most recent evidence is kept.  Returns the trimmed
    T' x N array and the number of rows dropped.
    """
    arr = performance_array(performance)
    trimmed, n_drop = trim_to_blocks(arr, n_blocks)
    if n_drop:
        warnings.warn(
            f"CSCV: dropped the first {n_drop} of {arr.shape[0]} rows so that T is divisible "
            f"by n_blocks={n_blocks}",
            UserWarning,
            stacklevel=2,
        )
    return trimmed, n_drop


def _metric(x: NDArray[np.float64], metric: PboMetric) -> NDArray[np.float64]:
    """Column-wise performance over rows: mean, or Sharpe ratio mean / sd (ddof=1)."""
    mean = x.mean(axis=0)
    if metric == "mean":
        return mean
    sd = x.std(axis=0, ddof=1)
    out = np.where(mean == 0.0, 0.0, np.copysign(np.inf, mean))
    np.divide(mean, sd, out=out, where=sd > 0.0)
    return out


def cscv_logits(
    performance: ArrayLike | pd.DataFrame, n_blocks: int, *, metric: PboMetric = "mean"
) -> NDArray[np.float64]:
    """Logits of the out-of-sample relative rank of the in-sample best column, by CSCV.

    Combinatorially symmetric cross-validation (Bailey, Borwein, Lopez de Prado, Zhu 2014):
    split the T time-ordered rows of the T x N ``performance`` matrix (columns = variants)
    into ``n_blocks`` equal contiguous blocks; for each of the C(S, S/2) ways to choose half of
    the blocks as in-sample (IS, the rest out-of-sample, OOS), pick the column with the best IS
    metric, take its OOS rank r in 1..N (higher = better; ties share the average rank), and
    return ``logit(r / (N + 1))``.  A logit <= 0 means the IS winner was at or below the OOS
    median.  ``metric`` is the column-wise mean (default: f1_buy or net returns are already
    comparable levels) or the Sharpe ratio mean/sd (for return series; zero sd gives +-inf, or
    0 for a zero mean).  An IS tie for best goes to the first column (``np.argmax``).

    T must be divisible by ``n_blocks`` (use :func:`trim_for_cscv` otherwise).  Logits come in
    ``itertools.combinations(range(n_blocks), n_blocks // 2)`` order.
    """
    if metric not in ("mean", "sharpe"):
        raise ValueError(f"metric must be 'mean' or 'sharpe'; got {metric!r}")
    arr = performance_array(performance)
    t_rows, n_cols = arr.shape
    _check_n_blocks(n_blocks, t_rows)
    if t_rows % n_blocks:
        raise ValueError(
            f"T={t_rows} rows is not divisible by n_blocks={n_blocks}; "
            "use trim_for_cscv() to drop the oldest rows explicitly"
        )
    blocks = np.split(np.arange(t_rows), n_blocks)
    logits = []
    for is_blocks in combinations(range(n_blocks), n_blocks // 2):
        is_set = set(is_blocks)
        is_rows = np.concatenate([blocks[b] for b in is_blocks])
        oos_rows = np.concatenate([blocks[b] for b in range(n_blocks) if b not in is_set])
        best = int(np.argmax(_metric(arr[is_rows], metric)))
        rank = float(stats.rankdata(_metric(arr[oos_rows], metric), method="average")[best])
        omega = rank / (n_cols + 1)
        logits.append(math.log(omega / (1.0 - omega)))
    return np.asarray(logits, dtype=float)


def probability_of_backtest_overfitting(
    performance: ArrayLike | pd.DataFrame, n_blocks: int, *, metric: PboMetric = "mean"
) -> float:
    """PBO = share of CSCV logits <= 0 (Bailey, Borwein, Lopez de Prado, Zhu 2014).

    The probability that the configuration chosen in-sample ranks at or below the median
    out-of-sample.  See :func:`cscv_logits` for the procedure and its conventions.
    """
    logits = cscv_logits(performance, n_blocks, metric=metric)
    return float(np.mean(logits <= 0.0))
