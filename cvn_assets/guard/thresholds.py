"""Spec 6.1's warn / crit thresholds on the monitoring metrics, judged per crypto x day (pure: no
Dagster; the asset checks of ``monitoring_metrics`` in :mod:`cvn_assets.assets.monitoring_checks`
call these).

Four checks, one per thresholded metric of spec 6.1 (``focal_loss_active`` is informational):

=========================  ====================================  =================================
check                      spec 6.1 (warn / crit)                what is compared (per crypto-day)
=========================  ====================================  =================================
``training_failures_per_   ``xgboost_training_failed{loss_       the day's peak count of failed
hour``                     function=focal}`` warn 1/h, crit 5/h  focal training runs in one clock
                                                                 hour ``(h, h + 1 h]``: warn >= 1,
                                                                 crit >= 5 (global: the day, not
                                                                 a crypto; 6.2's P2 pages at > 5)
``buy_proba_drift``        warn if drift > 0.10 vs training      the day's buy_proba PSI against
                           (no crit level)                       the live model's training deciles:
                                                                 warn when ``psi > max(0.10,
                                                                 null_p95)`` (the PSI's no-drift
                                                                 95th percentile at the day's
                                                                 ``n``; :mod:`cvn_assets.guard.
                                                                 monitoring`)
``net_expectancy``         warn < 0 over 24 h, crit < 0 over     the P1's per-crypto test
                           48 h                                  (:func:`cvn_assets.guard.drift.
                                                                 expectancy_alert`) on the trades
                                                                 exiting in the 48 h / 24 h before
                                                                 the day's end: crit when the 48 h
                                                                 mean is significantly < 0
                                                                 (one-sided t, alpha 0.01, >= 10
                                                                 trades), warn when the 24 h mean is
``inference_latency_p99``  warn > 100 ms, crit > 500 ms          the day's p99 latency (ms)
=========================  ====================================  =================================

Why not the bare spec numbers everywhere: a PSI of 0.10 is the no-drift 95th percentile at
168 rows (one week) and far below it at 24 rows (one day: 1.73), so ``psi > 0.10`` alone would
warn on most drift-free days; a mean below 0 over 3 trades is noise (a single stop loss). The
spec's value is kept beside the one used in every result (``spec`` / ``rule`` fields).

A :class:`Crossing` is one crypto-day over a threshold; :func:`summarize` turns the crossings
of a run into one result: passed when none, severity ``crit`` (ERROR) when any is crit else
``warn``, the worst crossing first (level, then how far past its bound).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from cvn_assets.ablation.guardrails import FOCAL
from cvn_assets.guard.drift import (
    EXPECTANCY_ALPHA,
    EXPECTANCY_MIN_TRADES,
    Verdict,
    expectancy_alert,
)
from cvn_assets.guard.monitoring import training_failures

__all__ = [
    "BUY_PROBA_DRIFT",
    "CHECKS",
    "CHECK_ASSET",
    "FAILURES_PER_HOUR",
    "INFERENCE_LATENCY",
    "LATENCY_MS",
    "NET_EXPECTANCY",
    "PSI_SPEC",
    "TRAINING_FAILURES",
    "CheckSummary",
    "Crossing",
    "judge_expectancy",
    "judge_failures",
    "judge_latency",
    "judge_psi",
    "peak_focal_failures",
    "summarize",
]

CHECK_ASSET = "monitoring_metrics"
TRAINING_FAILURES = "training_failures_per_hour"
BUY_PROBA_DRIFT = "buy_proba_drift"
NET_EXPECTANCY = "net_expectancy"
INFERENCE_LATENCY = "inference_latency_p99"
CHECKS = (TRAINING_FAILURES, BUY_PROBA_DRIFT, NET_EXPECTANCY, INFERENCE_LATENCY)

#: spec 6.1: focal training failures per hour, warn / crit (reached: >=)
FAILURES_PER_HOUR = (1, 5)
#: spec 6.1: buy_proba drift warn level (no crit in the spec)
PSI_SPEC = 0.10
#: spec 6.1: inference latency p99 in ms, warn / crit (exceeded: >)
LATENCY_MS = (100.0, 500.0)

Level = Literal["warn", "crit"]
_RANK = {"warn": 1, "crit": 2}

#: what each check compares, as stated in its results (the spec's value beside the rule used)
SPEC = {
    TRAINING_FAILURES: "xgboost_training_failed{loss_function=focal}: warn 1/h, crit 5/h",
    BUY_PROBA_DRIFT: "buy_proba drift vs training: warn > 0.10 (no crit level)",
    NET_EXPECTANCY: "expectancy_net_realized: warn < 0 over 24 h, crit < 0 over 48 h",
    INFERENCE_LATENCY: "inference_latency_p99: warn > 100 ms, crit > 500 ms",
}
RULE = {
    TRAINING_FAILURES: "peak failed focal training runs in one clock hour of the day: warn >= 1, "
    "crit >= 5 (global: every crypto shares them)",
    BUY_PROBA_DRIFT: "warn when PSI > max(0.10, PSI's no-drift 95th percentile at the day's n)",
    NET_EXPECTANCY: f"one-sided t-test of mean < 0 at alpha {EXPECTANCY_ALPHA} on >= "
    f"{EXPECTANCY_MIN_TRADES} trades: crit on the 48 h window, warn on the 24 h window (the P1's "
    "per-crypto test)",
    INFERENCE_LATENCY: "p99 of the day's latencies: warn > 100 ms, crit > 500 ms",
}


@dataclasses.dataclass(frozen=True)
class Crossing:
    """One crypto-day over a threshold: ``check``, ``crypto`` (``"*"`` for a global metric),
    ``day`` (ISO date), ``level``, ``value`` (the metric, in the check's unit), ``threshold``
    (the bound it crossed), ``score`` (how far past it, for ranking; larger is worse) and
    ``detail`` (one sentence)."""

    check: str
    crypto: str
    day: str
    level: Level
    value: float
    threshold: float
    score: float
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "crypto": self.crypto,
            "day": self.day,
            "level": self.level,
            "value": _round(self.value),
            "threshold": _round(self.threshold),
            "detail": self.detail,
        }


def _round(x: float) -> float | None:
    return round(float(x), 6) if math.isfinite(x) else None


def _day(day: Any) -> str:
    return pd.Timestamp(day).strftime("%Y-%m-%d")


# ------------------------------------------------------------------------- training failures
def peak_focal_failures(run_records: Iterable[Any], day: Any) -> tuple[int, dt.datetime]:
    """``(count, hour)``: the most failed focal training runs (tag ``cvn/loss_function=focal``)
    ending in one clock hour ``(hour, hour + 1 h]`` of the UTC ``day``, and the first such
    hour (the day's start when none failed). ``run_records`` as in
    :func:`cvn_assets.guard.monitoring.training_failures` (read once per run)."""
    records = list(run_records)
    start = pd.Timestamp(_day(day), tz="UTC").to_pydatetime()
    best, best_hour = 0, start
    for k in range(24):
        hour = start + dt.timedelta(hours=k)
        counts = training_failures(records, hour + dt.timedelta(hours=1), windows_h={"1h": 1.0})
        n = counts.get(FOCAL, {}).get("1h", 0)
        if n > best:
            best, best_hour = n, hour
    return best, best_hour


def judge_failures(day: Any, count: int, hour: dt.datetime) -> Crossing | None:
    """The failures check of ``day``: crit at >= 5 focal failures in one hour, warn at >= 1."""
    warn, crit = FAILURES_PER_HOUR
    if count < warn:
        return None
    level: Level = "crit" if count >= crit else "warn"
    bound = crit if level == "crit" else warn
    detail = (
        f"{count} failed focal training runs in the hour {hour:%Y-%m-%dT%H}:00Z-"
        f"{hour + dt.timedelta(hours=1):%H}:00Z (>= {bound}/h)"
    )
    return Crossing(TRAINING_FAILURES, "*", _day(day), level, float(count), bound, count, detail)


# ------------------------------------------------------------------------------ buy_proba PSI
def judge_psi(crypto: str, day: Any, psi: float | None, null_p95: float | None) -> Crossing | None:
    """The drift check: warn when ``psi > max(0.10, null_p95)``; None when no PSI (no
    predictions or no training deciles) or not above."""
    if psi is None:
        return None
    bound = max(PSI_SPEC, null_p95 if null_p95 is not None else PSI_SPEC)
    if not psi > bound:
        return None
    detail = (
        f"buy_proba PSI {psi:.4f} > {bound:.4f} (spec 0.10, no-drift 95th percentile "
        f"{'-' if null_p95 is None else f'{null_p95:.4f}'})"
    )
    return Crossing(BUY_PROBA_DRIFT, crypto, _day(day), "warn", psi, bound, psi - bound, detail)


# ---------------------------------------------------------------------------- net expectancy
def _window(trades: pd.DataFrame, end: pd.Timestamp, hours: int) -> np.ndarray:
    t = pd.to_datetime(trades["exit_time"], utc=True)
    inside = (t > end - pd.Timedelta(hours=hours)) & (t <= end)
    return trades.loc[inside, "net_return"].to_numpy(np.float64)


def judge_expectancy(
    crypto: str, day: Any, trades: pd.DataFrame, end: Any
) -> tuple[Verdict, Crossing | None]:
    """The expectancy check of a crypto-day: :func:`cvn_assets.guard.drift.expectancy_alert`
    on the net returns of ``trades`` (columns ``exit_time``, ``net_return``) exiting in the
    48 h and 24 h windows ``(end - h, end]`` (``end``: the day's end). Returns the verdict and
    its crossing (crit / warn), or None for ok / insufficient."""
    e = pd.Timestamp(end)
    v = expectancy_alert(_window(trades, e, 48), _window(trades, e, 24))
    if v.level not in _RANK:
        return v, None
    w = "48" if v.level == "crit" else "24"
    detail = (
        f"{w} h mean net return {100 * v.value:+.3f} % < critical {100 * v.threshold:+.3f} % "
        f"(one-sided t, n {v.n})"
    )
    level: Level = "crit" if v.level == "crit" else "warn"
    return v, Crossing(NET_EXPECTANCY, crypto, _day(day), level, v.value, v.threshold, -v.value,
                       detail)  # fmt: skip


# ----------------------------------------------------------------------------------- latency
def judge_latency(crypto: str, day: Any, p99_ms: float | None) -> Crossing | None:
    """The latency check: crit when the day's p99 > 500 ms, warn when > 100 ms."""
    warn, crit = LATENCY_MS
    if p99_ms is None or not p99_ms > warn:
        return None
    level: Level = "crit" if p99_ms > crit else "warn"
    bound = crit if level == "crit" else warn
    detail = f"inference latency p99 {p99_ms:.1f} ms > {bound:g} ms"
    return Crossing(INFERENCE_LATENCY, crypto, _day(day), level, p99_ms, bound, p99_ms, detail)


# ----------------------------------------------------------------------------------- summary
@dataclasses.dataclass(frozen=True)
class CheckSummary:
    """One check over a run: ``passed`` (no crossing), ``level`` (``crit`` / ``warn`` /
    None), ``crossings`` (worst first), ``evaluated`` (crypto-days judged), ``skipped``
    (crypto-days without the metric, e.g. no latency or too few trades) and a one-line
    ``description``."""

    check: str
    passed: bool
    level: Level | None
    crossings: tuple[Crossing, ...]
    evaluated: int
    skipped: int
    description: str

    @property
    def worst(self) -> Crossing | None:
        return self.crossings[0] if self.crossings else None


def summarize(
    check: str,
    crossings: Sequence[Crossing],
    evaluated: int,
    skipped: int = 0,
    unit: str = "crypto-day",
) -> CheckSummary:
    """The run's result of ``check``: its crossings sorted worst first (level, then
    ``score``, then crypto and day), the severity of the worst, and a description naming it
    (or how many of ``unit``: crypto-days; days for the global failures -- were judged
    within the thresholds)."""
    if check not in CHECKS:
        raise ValueError(f"check must be one of {CHECKS}, got {check!r}")
    ranked = tuple(sorted(crossings, key=lambda c: (-_RANK[c.level], -c.score, c.crypto, c.day)))
    if not ranked:
        what = f"{evaluated} {unit}(s) within the thresholds"
        if skipped:
            what += f", {skipped} without enough data to judge"
        return CheckSummary(check, True, None, (), evaluated, skipped, what)
    w = ranked[0]
    where = "all cryptos" if w.crypto == "*" else w.crypto
    n_crit = sum(c.level == "crit" for c in ranked)
    text = (
        f"{w.level.upper()}: {where} {w.day}: {w.detail}; {len(ranked)} crossing(s) "
        f"({n_crit} crit) in {evaluated} {unit}(s) judged"
    )
    return CheckSummary(check, False, w.level, ranked, evaluated, skipped, text)
