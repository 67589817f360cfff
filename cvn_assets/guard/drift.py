"""Decision rules of the drift and expectancy sensors (issue "Production guard, part 2").

Pure functions (no Dagster): the sensors feed them windows of live data and the reference
statistics of the model that is live, and act on the returned :class:`Verdict`. Every rule
has a minimum sample size below which it answers ``"insufficient"`` (never ``"ok"``: too few
rows is not "no drift"), and a sample-size-aware threshold, so its false-alarm rate under
no drift is bounded at every window size. The numbers below were measured with
:func:`false_alarm_rate` in ``tests/unit/test_drift.py`` (seeded); the tests
re-measure them and fail when they leave the stated tolerance.

Verdict
-------
``Verdict(level, value, threshold, n, reason, details)``: ``level`` is ``"ok"``,
``"warn"``, ``"crit"``, ``"insufficient"`` or ``"stale"`` (section 5: the window stops
short of the evaluation time; never an alarm); ``value`` the statistic that decided,
``threshold`` the bound it was compared with (for the level reached, or the warn bound
when ``ok``), ``n`` the sample size behind it, ``reason`` one human sentence, ``details``
per-item numbers (per feature, per window, per crypto). NaN ``value``/``threshold`` when
not computable.

1. Net expectancy (``expectancy_negative_focal``, P1)
-----------------------------------------------------
Per crypto, :func:`expectancy_alert` on the net returns per trade (fractions, after fees;
:func:`cvn_assets.guard.monitoring.expectancy_window` conventions) of the last 48 h and 24 h:

* ``n_48h < min_trades`` (default **10**) -> ``insufficient`` (the 24 h window is a subset,
  so it has even fewer).
* **crit** when the one-sided Student t-test of ``H0: mean >= 0`` against ``mean < 0``
  rejects at ``alpha`` (default **0.01**, :data:`EXPECTANCY_ALPHA`; the spec 6.2 names only
  "< 0 over 48 h", kept visible as ``mean_48h`` in the details) on the 48 h window;
  equivalently the mean is below the critical mean ``-t_{1-alpha, n-1} s / sqrt(n)`` (the
  Verdict's ``threshold``), i.e. the upper ``1 - alpha`` confidence bound of the mean is
  below 0. A constant negative series (``s = 0``) is crit, a constant zero series is not.
* **warn** (issue: "< 0 over 24 h") when not crit and the same test rejects on the 24 h
  window, which must itself hold ``min_trades`` trades.
* otherwise **ok**.

Why a t-test and 10 trades: a window mean of a handful of trades is noise (one stop-loss of
-1 % in 3 trades is a mean of -0.33 %); the test scales the bar with the window's own
dispersion and size. Below ~10 trades the t quantile is large (1.83 at 9 d.o.f.) and the
normal approximation of skewed TP/SL returns is poor.

:func:`expectancy_negative_focal` combines the per-crypto verdicts: not focal active ->
``ok``; ``>= 2`` cryptos crit -> **crit (P1)**; ``>= 2`` cryptos warn-or-crit -> **warn**;
a focal crypto ``stale`` (its journal stops short, section 5) -> ``stale`` (naming each
such crypto's journal end; never an alarm, never a rollback); fewer than 2 cryptos with
enough trades -> ``insufficient`` (the rule cannot fire); else ``ok``.
:func:`auto_kill_switch`: True when at least 2 distinct P1 alert times lie in the last hour
``[now - 1 h, now]`` (so the two latest alerts are at most 1 h apart, the latter not after
``now``; closed at both ends because the sensor evaluates once per hour, so two consecutive
P1 evaluations are exactly 1 h apart; a duplicated record of one alert -- same timestamp --
counts once).

The P1 judges only the 48 h window the spec names: a crypto with fewer than ``min_trades``
trades in it is ``insufficient``, never crit, whatever its older trades did. Sparse traders
have a separate rule, :func:`expectancy_last_trades` (alert ``expectancy_negative_sparse``,
P2): the same test on the live model's last ``min_trades`` trades within 7 days; it never
counts towards the P1 or the automatic rollback.

Measured false-alarm rates (zero true mean, iid trades; ``tests/unit/test_drift.py``):

* normal returns, sd 1 % per trade, 20 trades in 48 h (the last 10 in 24 h), 20 000
  windows, seed 1: crit **0.955 %** (exact t-test: alpha), warn-or-crit **1.67 %**;
* skewed TP/SL returns (+2 % w.p. 1/3, -1 % w.p. 2/3, mean 0), same sizes, seed 2: crit
  **1.61 %** -- the t-test is anti-conservative for right-skewed returns at small n (the
  left tail of t is heavier; 1.6 alpha here, 1.16 alpha at alpha 0.05; tested <= 2 alpha);
  the P1 still needs two cryptos;
* P1 (``>= 2`` of 5 independent cryptos crit, normal returns; 10 000 draws, seed 3):
  **0.12 %** per evaluation (binomial: ``1 - 0.99^5 - 5 * 0.01 * 0.99^4 = 0.098 %``).
  Consecutive hourly evaluations share 47/48 of their window, so a false P1 tends to repeat
  and :func:`auto_kill_switch` adds little protection against it.

Why 0.01 and not 0.05 (issue 23): on the real 2021-2023 candles, with champions forced to
trade half the hours at fee 0 (a zero-edge book, ``bench/bench_detectors.py --real --fee 0
--force-share 0.5``), alpha 0.05 raised **3.8 / 3.1** P1s per 30 days on the held-out / the
week-shuffled nulls (the hourly rejections cluster: overlapping windows, losing streaks in
volatile hours, cryptos that move together), alpha 0.01 **0.94 / 0.94**, within the target of
1, while still detecting an injected edge reversal in 100 % of runs within 7 days (README,
*Detectors measured on real markets*).

1b. Every live champion (``expectancy_negative_any``, P2; issue 21)
-----------------------------------------------------------------
The P1 watches focal champions only (spec 6.2), so after a rollback to the baseline nothing
judged the champions that trade. :func:`expectancy_negative_any` combines the same
per-crypto :func:`expectancy_alert` verdicts (same 48 h / 24 h windows, >= 10 trades,
one-sided t-test at :data:`EXPECTANCY_ALPHA`, same stale handling) over **every** live
champion whatever its loss: **crit** (the P2) when >= :data:`EXPECTANCY_ANY_MIN_CRYPTOS`
(**2**) champions are crit, warn when >= 2 are warn-or-crit. It never requests a rollback:
rolling back to the baseline does not help when the baseline loses (its runbook's answer is
the system-wide halt, an operator's decision).

Why 2 and not 1: the same breadth as the P1 gives the same per-evaluation false-alarm rate
(**2.26 %** for 5 independent cryptos under zero mean, binomial as above), where 1 of 5
would page on **22.6 %** of hourly evaluations (``1 - 0.95^5``); and the decision it serves,
halting all trading (spec 6.4's system-wide kill switch), is about the edge being gone across
the book ("halt if the cross-entropy cryptos lose too"), not one crypto. One crypto losing
alone is shown by the ``net_expectancy`` asset check of ``monitoring_metrics`` (WARN / ERROR
per crypto-day), not paged.

2. Data drift (spec 6.3)
------------------------
:func:`data_drift`: per top-5 feature (by gain), the PSI of the 7-day window against the
training bins frozen with the model: the decile edges (``train_decile_edges``) merged where
they tie, and the training sample's own shares in those bins (``train_bin_shares``;
:func:`cvn_assets.guard.monitoring.psi` with ``expected=``), compared with ``max(rule_of_thumb,
psi_null_quantile(n, q, expected=shares))`` (warn 0.2, crit 0.5, ``q = 0.95``; with
``n_train`` the null includes the estimation error of the bins). So a level is reached only
when the PSI exceeds both the rule of thumb and the no-drift ``q`` quantile at this
window's ``n`` on the same bins. Features with fewer than ``min_rows`` (default **100**)
values are ``insufficient``; the worst evaluable feature decides; all features
insufficient -> ``insufficient``. ``min_rows = 100`` is where the null 95th percentile
(0.186-0.190 for 10 bins) falls below the 0.2 warn bound, i.e. the smallest window where
the detector can warn at its nominal threshold; below it PSI is dominated by the share
floor of empty bins.

Mass points (issue 18, kind 4): a feature that is exactly 0 in 30 % of its training rows
ties its first deciles; with every expected share taken as 1/10 a window from the training
distribution itself scored PSI ~1.6 (crit) -- two empty bins at 0.69 each through the floor
-- where the training shares give a median of ~0.04 (quartiles 0.026-0.058; 30 % zeros,
the rest normal, 4 380 training rows, 2 000 windows of 168). Reference statistics frozen before
``train_bin_shares`` existed have only the edges: a feature with untied edges is scored
with ``1/10`` as before (right for continuous data), a feature with tied edges is
``insufficient`` (named in the reason: retrain the champion to freeze the shares), rather
than paging on a phantom.

Measured (no drift, 168 hourly rows drawn from the training distribution):

* the sample-size-aware part alone (``warn = crit = 0``: alarm iff PSI > null q95), one
  feature, 20 000 windows, seed 4: **4.68 %** (true exceedance of the seed-0 quantile of
  this discrete statistic: 4.8 %, 400 000 draws) -- ``psi_null_quantile`` is calibrated;
* the full rule at defaults, one feature, same draws: **0.05 %** (at ``n = 168`` the 0.2
  rule of thumb binds over the null q95 0.106, so the rate is far below ``1 - q``);
* 5 independent features (the max decides), 10 000 windows, seed 5: null part alone
  **22.1 %** (``1 - 0.95^5 = 22.6 %``), full rule **0.13 %**;
* a mass-point feature (30 % exactly 0, the rest continuous; 8 merged bins), 168 rows,
  expected shares = the population's, 20 000 windows, seed 8: null part alone
  **5.19 %** (nominal 5 %), full rule **0.01 %**; scored with ``1/10`` shares
  (untied edges 0, 0.001, 0.002, 1, .., 6; 2 000 windows): **100 %** crit
  (``tests/unit/test_psi_mass_points.py``).

3. Concept drift (spec 6.3)
---------------------------
:func:`concept_drift`: ``gap = oos_f1 - live_f1``, live f1_buy over 14 days on matured
labels only, against the sweep's OOS f1_buy of the live model (treated as fixed).
``insufficient`` when fewer than ``min_rows`` (default **168**, 7 days of matured hourly
rows) or fewer than ``min_positives`` (default **30**) true BUY labels. Level ``L`` (warn
0.05, crit 0.10) when ``gap > max(L, z_{1-alpha} * se)`` with ``alpha = 0.05`` and the
delta-method standard error of F1, ``se = 2 / (1 + a)^2 * sqrt(a (1 - a) / N)`` with
``a = F1 / (2 - F1)`` = TP / (TP + FP + FN) and ``N = n_relevant`` (TP + FP + FN) when
given, else ``n_positives`` (TP + FN <= TP + FP + FN, so the se is an upper bound and the
rule conservative). Evaluated at the OOS F1 (the null hypothesis), so ``live_f1 = 0``
cannot shrink the se to 0.

Measured (no drift: live F1 equal to OOS 0.50 in expectation, 336 matured rows, 30 % BUY
labels, precision = recall = 0.5; 20 000 windows, seed 6): warn-or-crit **2.25 %** with the
default ``n_positives`` se; **5.67 %** with the exact ``n_relevant`` (the delta method is
slightly anti-conservative for F1's skewed estimator; tested <= 1.25 alpha).

4. Output sharpness (spec 6.3)
------------------------------
:func:`sharpness_drift`: ``s = mean(max(p, 1 - p))`` over the 7-day window of buy_proba;
**warn** (a trigger) when ``s > training_mean + margin`` (margin **0.10**); fewer than
``min_rows`` (default **48**) probabilities -> ``insufficient``. Why 48: ``max(p, 1-p)``
lies in ``[0.5, 1]``, so by Hoeffding's inequality the no-drift probability of a trigger is
at most ``exp(-2 n margin^2 / 0.25) = exp(-0.08 n)`` = 2.1 % at ``n = 48`` for any iid
distribution of ``p`` (0.0001 % at 168). :class:`SharpnessState` counts consecutive
triggers (ok resets, insufficient leaves the count unchanged: no evidence either way, and a
data gap must not wipe a pending trigger); :func:`sharpness_revert` is True from **2**
consecutive triggers: revert that crypto to the baseline model.

Measured (no drift, 48 rows of p ~ Beta(2, 5); 20 000 windows, seed 7): **0 %** (no
trigger in 20 000; bound 2.1 %).

5. Stale journals (issue 20, "silence is an alert")
---------------------------------------------------
A crypto's journal ends where its last journaled hour's candle closed (``last_hour + 1 h``;
an hour is a candle's open time), or, with no hour journaled at all, where its first
champion went live. :func:`journal_lag` is ``as_of - end``; the journal is **stale**
(:func:`journal_stale`) when that exceeds :data:`STALE_AFTER` (**2 h**: exactly 2 h is not
stale). A window judged on a stale journal is not complete, so :func:`stale_verdict` turns
an ``ok`` or ``insufficient`` verdict into ``stale`` (its reason names where the journal
stops and how far behind it is; ``value``, ``threshold``, ``n`` and ``details`` are kept,
``details`` gains ``journal_end`` and ``hours_behind``). ``warn`` and ``crit`` are kept: the
trades already journaled are evidence of losses whatever the missing hours hold, and a kill
switch must not wait for a feed to come back. ``stale`` is not an alarm, and for
:class:`SharpnessState` it counts like ``insufficient`` (no evidence either way).

6. What the sensors feed these rules since issue 23 (``cvn_assets/guard/window_rules.py``)
------------------------------------------------------------------------------------------
Measured on real candles with ``bench/bench_detectors.py`` (README, *Detectors measured on real
markets*), the rules above raised about 60 (data drift) and 22 (concept drift) false alerts per
30 days over 5 cryptos on no-change nulls. The sensors now call them with: data drift on
window-standardised values (:func:`cvn_assets.guard.monitoring.window_standardize`) against the
champion's window-shape reference (``shape_edges`` / ``shape_shares``), floor 4x its
``shape_window_psi_q99``, calendar features left out, the spec's PSI in the details; concept
drift ``insufficient`` in windows whose BUY rate is < 0.75x the calibration block's, floor 2x
``f1_window_gap_q95``; sharpness for focal champions only; and a separate hourly
:func:`cvn_assets.guard.integrity.data_integrity` (missing, stuck, out of range). The rules of
this module are unchanged.

All bounds assume independent rows; hourly predictions and overlapping trades are
autocorrelated, which widens the null spread -- read the rates as per-evaluation rates
under independence.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from cvn_assets.guard.monitoring import (
    _check_edges,
    _check_expected,
    _finite_1d,
    _utc_ns,
    psi,
    psi_null_quantile,
)

__all__ = [
    "ALARM_LEVELS",
    "CONCEPT_MIN_POSITIVES",
    "CONCEPT_MIN_ROWS",
    "DATA_DRIFT_MIN_ROWS",
    "EXPECTANCY_ALPHA",
    "EXPECTANCY_ANY_MIN_CRYPTOS",
    "EXPECTANCY_MIN_TRADES",
    "SHARPNESS_MIN_ROWS",
    "STALE_AFTER",
    "FalseAlarmRate",
    "Level",
    "SharpnessState",
    "Verdict",
    "auto_kill_switch",
    "concept_drift",
    "data_drift",
    "expectancy_alert",
    "expectancy_last_trades",
    "expectancy_negative_any",
    "expectancy_negative_focal",
    "false_alarm_rate",
    "journal_lag",
    "journal_stale",
    "sharpness_drift",
    "sharpness_revert",
    "stale_verdict",
]

Level = Literal["ok", "warn", "crit", "insufficient", "stale"]
#: Levels that count as an alarm in :func:`false_alarm_rate`.
ALARM_LEVELS: tuple[Level, ...] = ("warn", "crit")
_RANK: dict[str, int] = {"stale": -2, "insufficient": -1, "ok": 0, "warn": 1, "crit": 2}

EXPECTANCY_MIN_TRADES = 10
EXPECTANCY_ALPHA = 0.01
#: ``expectancy_negative_any`` (P2) pages from this many significantly negative champions
EXPECTANCY_ANY_MIN_CRYPTOS = 2
DATA_DRIFT_MIN_ROWS = 100
CONCEPT_MIN_ROWS = 168
CONCEPT_MIN_POSITIVES = 30
SHARPNESS_MIN_ROWS = 48
KILL_SWITCH_WINDOW_H = 1.0
KILL_SWITCH_ALERTS = 2
SHARPNESS_REVERT_AFTER = 2
#: a journal whose end (last candle close) is more than this before the evaluation is stale
STALE_AFTER = timedelta(hours=2)
_NS_PER_HOUR = 3_600_000_000_000


@dataclasses.dataclass(frozen=True)
class Verdict:
    """One decision: level, the deciding statistic, its bound, the sample size, why."""

    level: Level
    value: float
    threshold: float
    n: int
    reason: str
    details: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False, hash=False)

    @property
    def alarm(self) -> bool:
        """True for ``warn`` and ``crit``."""
        return self.level in ALARM_LEVELS


# --------------------------------------------------------------------------- validation


def _real(name: str, value: object, *, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    f = float(value)
    if not math.isfinite(f) or (lo is not None and f < lo) or (hi is not None and f > hi):
        raise ValueError(f"{name} must be a finite number in [{lo}, {hi}], got {value!r}")
    return f


def _count(name: str, value: object, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _alpha(value: object) -> float:
    a = _real("alpha", value)
    if not 0.0 < a < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {value!r}")
    return a


def _warn_crit(warn: object, crit: object) -> tuple[float, float]:
    w = _real("warn", warn, lo=0.0)
    c = _real("crit", crit, lo=0.0)
    if c < w:
        raise ValueError(f"crit must be >= warn, got warn={warn!r}, crit={crit!r}")
    return w, c


# --------------------------------------------------------------------------- expectancy


@functools.lru_cache(maxsize=1024)
def _t_quantile(level: float, dof: int) -> float:
    return float(stats.t.ppf(level, dof))


def _mean_negative_test(r: np.ndarray, alpha: float) -> tuple[float, float]:
    """(mean, critical mean): reject ``mean >= 0`` when ``mean < critical`` (one-sided t)."""
    n = r.size
    mean = float(r.mean())
    sd = float(r.std(ddof=1))
    critical = -_t_quantile(1.0 - alpha, n - 1) * sd / math.sqrt(n)
    return mean, critical


def expectancy_alert(
    net_returns_48h: ArrayLike,
    net_returns_24h: ArrayLike,
    *,
    min_trades: int = EXPECTANCY_MIN_TRADES,
    alpha: float = EXPECTANCY_ALPHA,
) -> Verdict:
    """Per-crypto expectancy verdict: crit (48 h), warn (24 h), ok or insufficient.

    ``net_returns_48h`` / ``net_returns_24h``: net return per trade (fraction, after fees)
    of the trades exiting in the last 48 h / 24 h (the 24 h trades are a subset of the 48 h
    ones). ``min_trades`` >= 2; ``alpha`` in (0, 1). Rule in the module docstring.
    ``value`` is the window mean, ``threshold`` the critical mean of the t-test,
    ``details`` holds ``mean_48h``, ``n_48h``, ``critical_48h`` and the same for 24 h.
    """
    r48 = _finite_1d("net_returns_48h", net_returns_48h, allow_empty=True)
    r24 = _finite_1d("net_returns_24h", net_returns_24h, allow_empty=True)
    k = _count("min_trades", min_trades, minimum=2)
    a = _alpha(alpha)
    details: dict[str, Any] = {"n_48h": int(r48.size), "n_24h": int(r24.size)}
    if r48.size < k:
        return Verdict(
            "insufficient",
            float(r48.mean()) if r48.size else math.nan,
            math.nan,
            int(r48.size),
            f"{r48.size} trades in 48 h < min_trades {k}",
            details,
        )
    m48, c48 = _mean_negative_test(r48, a)
    details.update(mean_48h=m48, critical_48h=c48)
    if m48 < c48:
        return Verdict(
            "crit",
            m48,
            c48,
            int(r48.size),
            f"48 h mean {m48:.5f} < critical {c48:.5f} (one-sided t, alpha {a}, n {r48.size})",
            details,
        )
    if r24.size >= k:
        m24, c24 = _mean_negative_test(r24, a)
        details.update(mean_24h=m24, critical_24h=c24)
        if m24 < c24:
            return Verdict(
                "warn",
                m24,
                c24,
                int(r24.size),
                f"24 h mean {m24:.5f} < critical {c24:.5f} (one-sided t, alpha {a}, n {r24.size})",
                details,
            )
    return Verdict(
        "ok",
        m48,
        c48,
        int(r48.size),
        f"48 h mean {m48:.5f} not significantly < 0 (critical {c48:.5f})",
        details,
    )


def expectancy_last_trades(
    net_returns: ArrayLike,
    *,
    min_trades: int = EXPECTANCY_MIN_TRADES,
    alpha: float = EXPECTANCY_ALPHA,
) -> Verdict:
    """Sparse-trader expectancy (``expectancy_negative_sparse``, P2; never the P1).

    ``net_returns``: the net returns per trade (fractions, after fees) of the live model's
    last trades, oldest first; the caller chooses them (:mod:`sensors.evaluation`: the last
    ``min_trades`` exiting within 7 days, for a crypto whose 48 h window is too thin for the
    P1). Fewer than ``min_trades`` -> ``insufficient``; **crit** when the one-sided t-test of
    :func:`expectancy_alert` rejects ``mean >= 0`` at ``alpha``; else ``ok``. ``value`` is the
    mean, ``threshold`` the critical mean, ``details`` ``mean``, ``critical`` and ``n``.
    """
    r = _finite_1d("net_returns", net_returns, allow_empty=True)
    k = _count("min_trades", min_trades, minimum=2)
    a = _alpha(alpha)
    if r.size < k:
        return Verdict(
            "insufficient",
            float(r.mean()) if r.size else math.nan,
            math.nan,
            int(r.size),
            f"{r.size} trades < min_trades {k}",
            {"n": int(r.size)},
        )
    mean, critical = _mean_negative_test(r, a)
    details = {"mean": mean, "critical": critical, "n": int(r.size)}
    if mean < critical:
        return Verdict(
            "crit",
            mean,
            critical,
            int(r.size),
            f"mean of the last {r.size} trades {mean:.5f} < critical {critical:.5f} "
            f"(one-sided t, alpha {a})",
            details,
        )
    return Verdict(
        "ok",
        mean,
        critical,
        int(r.size),
        f"mean of the last {r.size} trades {mean:.5f} not significantly < 0 "
        f"(critical {critical:.5f})",
        details,
    )


def _count_levels(
    per_crypto_verdicts: Mapping[str, Verdict],
) -> tuple[dict[str, list[str]], int]:
    """``(cryptos per level, number evaluable)`` of per-crypto expectancy verdicts (evaluable:
    neither ``insufficient`` nor ``stale``); raises ``ValueError`` on a non-Verdict."""
    by_level: dict[str, list[str]] = {lv: [] for lv in _RANK}
    for crypto, v in per_crypto_verdicts.items():
        if not isinstance(v, Verdict):
            raise ValueError(f"per_crypto_verdicts[{crypto!r}] must be a Verdict, got {v!r}")
        by_level[v.level].append(crypto)
    details = {lv: sorted(c) for lv, c in by_level.items()}
    n_eval = len(per_crypto_verdicts) - len(by_level["insufficient"]) - len(by_level["stale"])
    return details, n_eval


def _combine_expectancy(
    per_crypto_verdicts: Mapping[str, Verdict],
    k: int,
    *,
    crit_reason: str,
    warn_reason: str,
    stale_what: str,
) -> Verdict:
    """Crit when >= ``k`` cryptos crit, warn when >= ``k`` warn-or-crit, stale when any is
    stale, insufficient when fewer than ``k`` evaluable, else ok (shared by the P1 and
    ``expectancy_negative_any``). ``crit_reason`` / ``warn_reason`` are formatted with
    ``n`` (the count) and ``cryptos`` (the crit list); ``stale_what`` names the cryptos."""
    details, n_eval = _count_levels(per_crypto_verdicts)
    n_crit = len(details["crit"])
    n_neg = n_crit + len(details["warn"])
    if n_crit >= k:
        why = crit_reason.format(n=n_crit, cryptos=details["crit"])
        return Verdict("crit", float(n_crit), float(k), n_eval, why, details)
    if n_neg >= k:
        return Verdict("warn", float(n_neg), float(k), n_eval, warn_reason.format(n=n_neg), details)
    if details["stale"]:
        stale = details["stale"]
        return Verdict(
            "stale",
            float(n_crit),
            float(k),
            n_eval,
            f"journal stale on {len(stale)} {stale_what}, their 48 h window is not complete: "
            + "; ".join(f"{c}: {per_crypto_verdicts[c].reason}" for c in stale),
            details,
        )
    if n_eval < k:
        return Verdict(
            "insufficient",
            float(n_crit),
            float(k),
            n_eval,
            f"only {n_eval} cryptos with enough trades (< {k}): the rule cannot fire",
            details,
        )
    return Verdict("ok", float(n_crit), float(k), n_eval, f"{n_crit} cryptos crit < {k}", details)


def expectancy_negative_focal(
    per_crypto_verdicts: Mapping[str, Verdict],
    focal_active: bool,
    *,
    min_cryptos: int = 2,
) -> Verdict:
    """The P1 rule over cryptos: crit when >= ``min_cryptos`` cryptos are crit and focal is on.

    ``per_crypto_verdicts``: crypto -> :func:`expectancy_alert` verdict. ``value`` is the
    number of crit cryptos (warn-or-crit for ``warn``), ``threshold`` ``min_cryptos``,
    ``n`` the number of cryptos with enough trades (and a journal that is not stale);
    ``details`` lists the cryptos per level. Order: crit, warn, stale (any crypto stale: its
    reason is each stale crypto's), insufficient, ok.
    """
    k = _count("min_cryptos", min_cryptos, minimum=1)
    if not isinstance(focal_active, bool | np.bool_):
        raise ValueError(f"focal_active must be a bool, got {focal_active!r}")
    if not focal_active:
        details, n_eval = _count_levels(per_crypto_verdicts)
        n_crit = float(len(details["crit"]))
        return Verdict("ok", n_crit, float(k), n_eval, "focal not active", details)
    return _combine_expectancy(
        per_crypto_verdicts,
        k,
        crit_reason="P1: net expectancy < 0 over 48 h on {n} cryptos {cryptos} "
        "while focal is active",
        warn_reason="net expectancy < 0 on {n} cryptos (24 h or 48 h) while focal is active",
        stale_what="focal cryptos",
    )


def expectancy_negative_any(
    per_crypto_verdicts: Mapping[str, Verdict],
    *,
    min_cryptos: int = EXPECTANCY_ANY_MIN_CRYPTOS,
) -> Verdict:
    """``expectancy_negative_any`` (P2, section 1b): the P1's combination over **every** live
    champion, whatever its loss (no "focal active" condition).

    ``per_crypto_verdicts``: crypto -> :func:`expectancy_alert` verdict of its live champion
    (every crypto that has one). Crit when >= ``min_cryptos`` (default 2) are crit; warn when
    >= ``min_cryptos`` are warn-or-crit; then stale, insufficient, ok as the P1. No live
    champion at all: ``ok`` ("no live champion"). ``value``, ``threshold``, ``n`` and
    ``details`` as :func:`expectancy_negative_focal`. Never a rollback (the caller's rule).
    """
    k = _count("min_cryptos", min_cryptos, minimum=1)
    if not per_crypto_verdicts:
        return Verdict("ok", 0.0, float(k), 0, "no live champion", _count_levels({})[0])
    return _combine_expectancy(
        per_crypto_verdicts,
        k,
        crit_reason="P2: net expectancy < 0 over 48 h on {n} live champions {cryptos}, "
        "whatever their loss",
        warn_reason="net expectancy < 0 on {n} live champions (24 h or 48 h), whatever their loss",
        stale_what="cryptos",
    )


def auto_kill_switch(
    p1_alert_times: Iterable[Any],
    now: Any,
    *,
    window_h: float = KILL_SWITCH_WINDOW_H,
    n_alerts: int = KILL_SWITCH_ALERTS,
) -> bool:
    """True when >= ``n_alerts`` distinct P1 alert times lie in ``[now - window_h, now]``.

    Times: timezone-aware datetimes or Unix seconds (naive datetimes raise ``ValueError``).
    Alerts after ``now`` are ignored; equal timestamps count once.
    """
    hi = _utc_ns("now", now)
    h = _real("window_h", window_h)
    if h <= 0:
        raise ValueError(f"window_h must be > 0, got {window_h!r}")
    k = _count("n_alerts", n_alerts, minimum=1)
    lo = hi - round(h * _NS_PER_HOUR)
    times = {_utc_ns(f"p1_alert_times[{i}]", t) for i, t in enumerate(p1_alert_times)}
    return sum(1 for t in times if lo <= t <= hi) >= k


# --------------------------------------------------------------------------- stale journal


def _aware(name: str, t: datetime) -> datetime:
    if not isinstance(t, datetime) or t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {t!r}")
    return t


def journal_lag(
    last_hour: datetime | None, live_since: datetime | None, as_of: datetime
) -> timedelta | None:
    """How far a crypto's journal is behind ``as_of``: ``as_of - (last_hour + 1 h)``
    (``last_hour``: the last journaled hour, a candle's open time), or ``as_of - live_since``
    when no hour is journaled (``live_since``: when its first champion went live); None when
    neither is known. Negative when the journal reaches past ``as_of`` (a replay). Times are
    aware datetimes (naive: ValueError naming the argument)."""
    now = _aware("as_of", as_of)
    if last_hour is not None:
        return now - (_aware("last_hour", last_hour) + timedelta(hours=1))
    if live_since is not None:
        return now - _aware("live_since", live_since)
    return None


def journal_stale(
    last_hour: datetime | None,
    live_since: datetime | None,
    as_of: datetime,
    *,
    after: timedelta = STALE_AFTER,
) -> bool:
    """Whether the journal is stale at ``as_of``: :func:`journal_lag` > ``after`` (2 h;
    exactly ``after`` is not stale; an unknown lag is not)."""
    lag = journal_lag(last_hour, live_since, as_of)
    return lag is not None and lag > after


def _behind(lag: timedelta) -> str:
    minutes = int(lag.total_seconds() // 60)
    return f"{minutes // 60} h {minutes % 60:02d} min"


def stale_verdict(
    verdict: Verdict,
    last_hour: datetime | None,
    live_since: datetime | None,
    as_of: datetime,
    *,
    after: timedelta = STALE_AFTER,
) -> Verdict:
    """``verdict`` of a window ending at ``as_of``, made ``stale`` when the journal it read is
    (:func:`journal_lag` > ``after``) and the verdict is ``ok`` or ``insufficient``; else
    ``verdict`` itself. The stale reason names the journal's last hour (or, with none, the
    first champion's start) and how far behind it is, then the verdict it replaces; its
    ``details`` add ``journal_end`` (ISO) and ``hours_behind``."""
    if verdict.level not in ("ok", "insufficient"):
        return verdict
    if not journal_stale(last_hour, live_since, as_of, after=after):
        return verdict
    if last_hour is not None:
        end = last_hour + timedelta(hours=1)
        where = f"journal stops at the hour {last_hour:%Y-%m-%dT%H}:00Z (closed {end:%H:%M}Z)"
    elif live_since is not None:
        end = live_since
        where = f"no hour journaled since the first champion went live at {end:%Y-%m-%dT%H:%M}Z"
    else:  # journal_stale is False without either; kept for the type checker
        return verdict
    lag = as_of - end
    reason = (
        f"{where}, {_behind(lag)} before {as_of:%Y-%m-%dT%H:%M}Z (> {_behind(after)}): the "
        f"window is not complete; on the rows there: {verdict.level}: {verdict.reason}"
    )
    details = {
        **verdict.details,
        "journal_end": end.isoformat(),
        "hours_behind": lag / timedelta(hours=1),
    }
    return dataclasses.replace(verdict, level="stale", reason=reason, details=details)


# --------------------------------------------------------------------------- data drift


def data_drift(
    feature_windows: Mapping[str, ArrayLike],
    edges: Mapping[str, ArrayLike],
    *,
    warn: float = 0.2,
    crit: float = 0.5,
    min_rows: int = DATA_DRIFT_MIN_ROWS,
    q: float = 0.95,
    n_train: int | None = None,
    null_floor: Mapping[str, float | None] | None = None,
    expected_shares: Mapping[str, ArrayLike | None] | None = None,
) -> Verdict:
    """PSI of each feature's window against its frozen training bins; the max decides.

    ``feature_windows``: feature -> the window's values (e.g. 168 hourly rows, finite);
    ``edges``: feature -> the training decile edges from the artifact (must cover every
    feature of ``feature_windows``); ``expected_shares``: feature -> the training shares in
    the merged bins of those edges (``train_bin_shares``,
    :func:`cvn_assets.guard.monitoring.training_shares`), ``len(unique(edges)) + 1`` values.
    Level per feature: crit if ``psi > max(crit, null)``, warn if ``psi > max(warn, null)``,
    with ``null = psi_null_quantile(n, q, n_train=..., expected=shares)`` (same bins, same
    shares); fewer than ``min_rows`` values -> insufficient. Without shares for a feature
    (reference statistics frozen before they were stored): untied edges -> expected ``1/B``
    and the ``1/B`` null, as before; tied edges -> ``insufficient`` (a mass point: ``1/B``
    would page on phantom drift; retrain the champion to freeze the shares).
    ``null_floor``: feature -> a no-drift PSI quantile measured on the training series
    itself (consecutive windows of the same length, with the same shares:
    :func:`cvn_assets.guard.champion.window_psi_quantile`), which raises ``null`` for
    autocorrelated features. ``details[feature]`` is a dict with ``psi``, ``null_q``, ``n``,
    ``level``, ``expected`` (``"training"`` | ``"uniform"`` | ``"missing"``). The returned
    verdict is the worst evaluable feature's (ties: the larger PSI). Raises ``ValueError``
    naming the feature on missing edges, non-finite values or shares that do not fit.
    """
    w, c = _warn_crit(warn, crit)
    k = _count("min_rows", min_rows, minimum=1)
    qq = _real("q", q)
    if not 0.0 < qq < 1.0:
        raise ValueError(f"q must be in (0, 1), got {q!r}")
    if not feature_windows:
        raise ValueError("feature_windows is empty")
    missing = [f for f in feature_windows if f not in edges]
    if missing:
        raise ValueError(f"edges missing for feature(s) {missing}")
    details: dict[str, dict[str, Any]] = {}
    best: tuple[int, float, str] | None = None
    for name, values in feature_windows.items():
        details[name] = _feature_psi(
            name, values, edges[name], (expected_shares or {}).get(name),
            (null_floor or {}).get(name), warn=w, crit=c, min_rows=k, q=qq, n_train=n_train,
        )  # fmt: skip
        if details[name]["level"] == "insufficient":
            continue
        key = (_RANK[details[name]["level"]], details[name]["psi"], name)
        if best is None or key[:2] > best[:2]:
            best = key
    if best is None:
        return _data_drift_insufficient(details, k)
    name = best[2]
    d = details[name]
    lvl: Level = d["level"]
    bound = max(c if lvl == "crit" else w, d["null_q"])
    word = {"crit": ">", "warn": ">", "ok": "<="}[lvl]
    return Verdict(
        lvl,
        d["psi"],
        bound,
        d["n"],
        f"max PSI {d['psi']:.4f} on {name!r} {word} {bound:.4f} "
        f"(rule {c if lvl == 'crit' else w}, no-drift null {d['null_q']:.4f} at n {d['n']}: "
        f"max of the iid q{qq} and the training windows' floor)",
        details,
    )


def _feature_psi(
    name: str,
    values: ArrayLike,
    edges: ArrayLike,
    raw_shares: ArrayLike | None,
    floor: float | None,
    *,
    warn: float,
    crit: float,
    min_rows: int,
    q: float,
    n_train: int | None,
) -> dict[str, Any]:
    """One feature's ``details`` entry of :func:`data_drift`: ``psi``, ``null_q``, ``n``,
    ``level``, ``expected``; ``ValueError`` naming the feature for shares that do not fit."""
    x = _finite_1d(f"feature_windows[{name!r}]", values, allow_empty=True)
    e = _check_edges(edges)
    shares = None
    if raw_shares is not None:
        try:
            shares = _check_expected(raw_shares, np.unique(e).size + 1)
        except ValueError as exc:
            raise ValueError(f"expected_shares[{name!r}]: {exc}") from None
    kind = "training" if shares is not None else "uniform"
    if shares is None and (np.diff(e) == 0).any():
        kind = "missing"
    if x.size < min_rows or kind == "missing":
        out: dict[str, Any] = {"psi": math.nan, "null_q": math.nan, "n": int(x.size)}
        out.update(level="insufficient", expected=kind)
        return out
    if shares is not None:
        value = psi(x, e, expected=shares)
        null = psi_null_quantile(int(x.size), q, n_train=n_train, expected=shares)
    else:
        value = psi(x, e)
        null = psi_null_quantile(int(x.size), q, n_train=n_train, n_bins=e.size + 1)
    if floor is not None:  # the training series' own window-PSI quantile (autocorrelation)
        null = max(null, _real(f"null_floor[{name!r}]", floor, lo=0.0))
    level: Level = (
        "crit" if value > max(crit, null) else "warn" if value > max(warn, null) else "ok"
    )
    return {"psi": value, "null_q": null, "n": int(x.size), "level": level, "expected": kind}


def _data_drift_insufficient(details: dict[str, dict[str, Any]], k: int) -> Verdict:
    """No feature evaluable: too few rows, or tied deciles without stored shares."""
    tied = sorted(n for n, d in details.items() if d["expected"] == "missing")
    why = f"every feature has < min_rows {k} values" + (
        f" or tied deciles without stored training shares ({tied}: retrain the champion)"
        if tied
        else ""
    )
    return Verdict(
        "insufficient",
        math.nan,
        math.nan,
        max(d["n"] for d in details.values()),
        why,
        details,
    )


# --------------------------------------------------------------------------- concept drift


def _f1_se(f1: float, n_relevant: int) -> float:
    """Delta-method standard error of F1 = 2a / (1 + a), a = TP / (TP + FP + FN)."""
    a = f1 / (2.0 - f1)
    return 2.0 / (1.0 + a) ** 2 * math.sqrt(a * (1.0 - a) / n_relevant)


def concept_drift(
    live_f1: float,
    oos_f1: float,
    n_matured: int,
    *,
    n_positives: int,
    n_relevant: int | None = None,
    warn: float = 0.05,
    crit: float = 0.10,
    min_rows: int = CONCEPT_MIN_ROWS,
    min_positives: int = CONCEPT_MIN_POSITIVES,
    alpha: float = 0.05,
    gap_floor: float | None = None,
) -> Verdict:
    """Gap ``oos_f1 - live_f1`` against warn/crit, guarded by sample size and an F1 se.

    ``gap_floor``: the no-drift gap of a window measured on held-out data
    (:func:`cvn_assets.guard.champion.window_f1_gap_quantile`); both bounds are raised to it.

    ``live_f1``: f1_buy over the window's matured rows; ``oos_f1``: the sweep's OOS f1_buy
    of the live model; ``n_matured``: matured rows; ``n_positives``: true BUY labels among
    them (TP + FN); ``n_relevant``: TP + FP + FN if known (tighter se). Rule in the module
    docstring; ``details`` holds ``gap``, ``se``, ``z_se``.
    """
    live = _real("live_f1", live_f1, lo=0.0, hi=1.0)
    oos = _real("oos_f1", oos_f1, lo=0.0, hi=1.0)
    n = _count("n_matured", n_matured)
    pos = _count("n_positives", n_positives)
    if pos > n:
        raise ValueError(f"n_positives ({pos}) > n_matured ({n})")
    w, c = _warn_crit(warn, crit)
    a = _alpha(alpha)
    k_rows = _count("min_rows", min_rows, minimum=1)
    k_pos = _count("min_positives", min_positives, minimum=1)
    gap = oos - live
    if n < k_rows or pos < k_pos:
        return Verdict(
            "insufficient",
            gap,
            math.nan,
            n,
            f"{n} matured rows (min {k_rows}), {pos} positives (min {k_pos})",
            {"gap": gap, "n_positives": pos},
        )
    n_rel = pos if n_relevant is None else _count("n_relevant", n_relevant, minimum=pos)
    se = _f1_se(oos, n_rel)
    z_se = float(stats.norm.ppf(1.0 - a)) * se
    details = {"gap": gap, "se": se, "z_se": z_se, "n_positives": pos, "n_relevant": n_rel}
    floor = 0.0 if gap_floor is None else _real("gap_floor", gap_floor, lo=0.0)
    details["gap_floor"] = floor
    bounds: tuple[tuple[Level, float], ...] = (
        ("crit", max(c, z_se, floor)),
        ("warn", max(w, z_se, floor)),
    )
    for lvl, bound in bounds:
        if gap > bound:
            return Verdict(
                lvl,
                gap,
                bound,
                n,
                f"f1 gap {gap:.4f} (oos {oos:.4f} - live {live:.4f}) > {bound:.4f} "
                f"(rule {c if lvl == 'crit' else w}, z se {z_se:.4f})",
                details,
            )
    bound = max(w, z_se)
    return Verdict("ok", gap, bound, n, f"f1 gap {gap:.4f} <= {bound:.4f}", details)


# --------------------------------------------------------------------------- sharpness


def sharpness_drift(
    proba_window: ArrayLike,
    training_mean: float,
    *,
    margin: float = 0.10,
    min_rows: int = SHARPNESS_MIN_ROWS,
) -> Verdict:
    """Trigger (``warn``) when ``mean(max(p, 1 - p)) > training_mean + margin``.

    ``proba_window``: the window's buy_proba in [0, 1]; ``training_mean``: the training
    mean of ``max(p, 1 - p)`` (in [0.5, 1]); fewer than ``min_rows`` values ->
    insufficient.
    """
    p = _finite_1d("proba_window", proba_window, allow_empty=True)
    if ((p < 0.0) | (p > 1.0)).any():
        i = int(np.flatnonzero((p < 0.0) | (p > 1.0))[0])
        raise ValueError(f"proba_window must be in [0, 1], got proba_window[{i}] = {p[i]!r}")
    ref = _real("training_mean", training_mean, lo=0.5, hi=1.0)
    m = _real("margin", margin, lo=0.0)
    k = _count("min_rows", min_rows, minimum=1)
    bound = ref + m
    if p.size < k:
        return Verdict(
            "insufficient", math.nan, bound, int(p.size), f"{p.size} rows < min_rows {k}"
        )
    s = float(np.maximum(p, 1.0 - p).mean())
    if s > bound:
        return Verdict(
            "warn", s, bound, int(p.size), f"sharpness {s:.4f} > {ref:.4f} + {m} = {bound:.4f}"
        )
    return Verdict("ok", s, bound, int(p.size), f"sharpness {s:.4f} <= {bound:.4f}")


@dataclasses.dataclass(frozen=True)
class SharpnessState:
    """Consecutive sharpness triggers of one crypto (immutable; ``update`` returns a new one)."""

    consecutive: int = 0

    def update(self, verdict: Verdict) -> SharpnessState:
        """Trigger -> +1; ok -> 0; insufficient or stale -> unchanged."""
        if verdict.alarm:
            return SharpnessState(self.consecutive + 1)
        if verdict.level == "ok":
            return SharpnessState(0)
        return self

    @property
    def revert(self) -> bool:
        """True when this crypto must revert to the baseline."""
        return sharpness_revert(self.consecutive)


def sharpness_revert(consecutive_triggers: int, *, after: int = SHARPNESS_REVERT_AFTER) -> bool:
    """True from ``after`` (default 2) consecutive sharpness triggers."""
    return _count("consecutive_triggers", consecutive_triggers) >= _count("after", after, minimum=1)


# --------------------------------------------------------------------------- false alarms

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class FalseAlarmRate:
    """Share of simulated no-drift windows that alarmed, with its Monte Carlo error."""

    rate: float
    se: float
    n_alarms: int
    n_insufficient: int
    n_sim: int


def false_alarm_rate(
    rule: Callable[[T], Verdict],
    sampler: Callable[[np.random.Generator], T],
    n_sim: int,
    seed: int,
    *,
    levels: Iterable[str] = ALARM_LEVELS,
) -> FalseAlarmRate:
    """Monte Carlo rate of ``rule(sampler(rng))`` landing in ``levels`` (default warn, crit).

    ``sampler`` draws one no-drift input from ``np.random.default_rng(seed)`` (shared across
    draws); the rate is over all ``n_sim`` draws (insufficient ones count as no alarm and are
    reported); ``se = sqrt(rate (1 - rate) / n_sim)``.
    """
    n = _count("n_sim", n_sim, minimum=1)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    alarm_levels = frozenset(levels)
    rng = np.random.default_rng(int(seed))
    alarms = insufficient = 0
    for _ in range(n):
        v = rule(sampler(rng))
        alarms += v.level in alarm_levels
        insufficient += v.level == "insufficient"
    rate = alarms / n
    return FalseAlarmRate(rate, math.sqrt(rate * (1.0 - rate) / n), alarms, insufficient, n)
