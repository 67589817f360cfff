"""The asset checks of ``monitoring_metrics``: spec 6.1's warn / crit thresholds (issue 21, item 8).

Four checks (:mod:`cvn_assets.guard.thresholds` holds the rules and says what each compares),
declared in the asset's ``check_specs`` and evaluated inside the step that materializes it, on
the rows just computed. A run covers many crypto-days (``single_run`` backfills, the live loop's
rectangles), and Dagster 1.13 records a check result for a partitioned step only when the run
targets one partition (and a check spec's own ``partitions_def`` is a preview feature), so each
check yields **one** result per run: passed when no crypto-day of the run crossed, else
severity ERROR (a crit crossing) or WARN, the description naming the worst crypto-day, and the
metadata listing every crossing (``crossings``: crypto, day, level, value, threshold) beside
the spec's threshold and the rule used. The UI shows them under *Assets -> monitoring_metrics ->
Checks*; the guard's alerts name the check that shows their metric (``ALERT_CHECKS``).
"""

from collections.abc import Iterable
from typing import Any

import pandas as pd
from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, MetadataValue

from cvn_assets.guard.thresholds import (
    BUY_PROBA_DRIFT,
    CHECK_ASSET,
    INFERENCE_LATENCY,
    NET_EXPECTANCY,
    RULE,
    SPEC,
    TRAINING_FAILURES,
    CheckSummary,
    Crossing,
    judge_expectancy,
    judge_failures,
    judge_latency,
    judge_psi,
    peak_focal_failures,
    summarize,
)

_DESCRIPTIONS = {
    TRAINING_FAILURES: "Spec 6.1: failed focal training runs per clock hour, warn >= 1/h "
    "(WARN), crit >= 5/h (ERROR); the worst day of the run and every crossing.",
    BUY_PROBA_DRIFT: "Spec 6.1: buy_proba drift (PSI vs the live model's training deciles) "
    "> 0.10, and above the PSI's no-drift 95th percentile at the day's n (WARN; the spec has "
    "no crit level); the worst crypto-day of the run and every crossing.",
    NET_EXPECTANCY: "Spec 6.1: net expectancy < 0 over 24 h (WARN) / 48 h (ERROR), by the "
    "P1's one-sided t-test (>= 10 trades); the worst crypto-day of the run and every crossing.",
    INFERENCE_LATENCY: "Spec 6.1: inference latency p99 > 100 ms (WARN) / > 500 ms (ERROR); "
    "the worst crypto-day of the run and every crossing.",
}


def monitoring_check_specs() -> list[AssetCheckSpec]:
    """The four checks' specs (``check_specs`` of ``monitoring_metrics``)."""
    return [
        AssetCheckSpec(name, asset=CHECK_ASSET, description=text)
        for name, text in _DESCRIPTIONS.items()
    ]


def check_link(name: str) -> str:
    """``monitoring_metrics:<check>`` (asset key and check name, as alerts carry it)."""
    return f"{CHECK_ASSET}:{name}"


class MonitoringJudge:
    """Collects the crossings of one ``monitoring_metrics`` run: :meth:`add` per crypto-day
    (its row and its 48 h of trades), the global failures once per day; :meth:`results` gives
    the four :class:`AssetCheckResult`."""

    def __init__(self, run_records: Iterable[Any]):
        self.records = list(run_records)
        self.crossings: dict[str, list[Crossing]] = {name: [] for name in _DESCRIPTIONS}
        self.evaluated = dict.fromkeys(_DESCRIPTIONS, 0)
        self.skipped = dict.fromkeys(_DESCRIPTIONS, 0)
        self.days: set[str] = set()

    def _note(self, name: str, crossing: Crossing | None, judged: bool = True) -> None:
        if not judged:
            self.skipped[name] += 1
            return
        self.evaluated[name] += 1
        if crossing is not None:
            self.crossings[name].append(crossing)

    def add(self, crypto: str, day: pd.Timestamp, row: dict[str, Any], trades: pd.DataFrame):
        """Judge one crypto-day: its row of :func:`cvn_assets.guard.monitoring.metrics_row` and
        the trades of the 48 h before its end (all of the crypto's, as the row's expectancy)."""
        end = day + pd.Timedelta(days=1)
        key = f"{day:%Y-%m-%d}"
        if key not in self.days:  # failures are global: judged once per day
            self.days.add(key)
            count, hour = peak_focal_failures(self.records, day)
            self._note(TRAINING_FAILURES, judge_failures(day, count, hour))
        psi = row.get("buy_proba_psi")
        self._note(
            BUY_PROBA_DRIFT,
            judge_psi(crypto, day, psi, row.get("buy_proba_psi_null_p95")),
            psi is not None,
        )
        verdict, crossing = judge_expectancy(crypto, day, trades, end)
        self._note(NET_EXPECTANCY, crossing, verdict.level != "insufficient")
        p99 = row.get("latency_p99_ms")
        self._note(INFERENCE_LATENCY, judge_latency(crypto, day, p99), p99 is not None)

    def results(self) -> list[AssetCheckResult]:
        """One result per check (every check always yields one: a run that judged nothing
        passes, saying so)."""
        out = []
        for name in _DESCRIPTIONS:
            unit = "day" if name == TRAINING_FAILURES else "crypto-day"
            s = summarize(
                name, self.crossings[name], self.evaluated[name], self.skipped[name], unit
            )
            out.append(_result(s, sorted(self.days)))
        return out


def _result(s: CheckSummary, days: list[str]) -> AssetCheckResult:
    meta: dict[str, Any] = {
        "spec": SPEC[s.check],
        "rule": RULE[s.check],
        "days": f"{days[0]}..{days[-1]}" if days else "-",
        "n_evaluated": s.evaluated,
        "n_skipped": s.skipped,
        "n_crossings": len(s.crossings),
        "crossings": MetadataValue.json([c.as_dict() for c in s.crossings]),
    }
    w = s.worst
    if w is not None:
        meta.update(
            {
                "worst_level": w.level,
                "worst_crypto": w.crypto,
                "worst_day": w.day,
                "worst_value": float(w.value),
                "worst_threshold": float(w.threshold),
                "worst": w.detail,
            }
        )
    severity = AssetCheckSeverity.ERROR if s.level == "crit" else AssetCheckSeverity.WARN
    return AssetCheckResult(
        check_name=s.check,
        asset_key=CHECK_ASSET,
        passed=s.passed,
        severity=severity,
        description=s.description,
        metadata=meta,
    )
