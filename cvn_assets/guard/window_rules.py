"""The drift rules on a live model's journal windows (pure: no Dagster, no database).

:func:`drift_windows` cuts the prediction rows a sensor read for ``as_of`` into the 7-day
window and the matured-label rows; :func:`drift_verdicts` judges them against the model's
registry statistics with the rules of :mod:`cvn_assets.guard.drift`. The ``model_drift``
sensor (:func:`sensors.evaluation.evaluate_drift`) and the detector benchmark
(``bench/bench_detectors.py``, :mod:`cvn_assets.guard.detector_bench`) both call these, so
the benchmark measures the rules the sensor runs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from cvn_assets.ablation.guardrails import FOCAL
from cvn_assets.ablation.metrics import classification_metrics
from cvn_assets.guard.drift import Verdict, concept_drift, data_drift, sharpness_drift
from cvn_assets.guard.integrity import INTEGRITY_RECENT, data_integrity, is_calendar
from cvn_assets.guard.live_model import N_TOP_FEATURES
from cvn_assets.guard.monitoring import window_standardize

__all__ = [
    "CONCEPT_DAYS",
    "DATA_DRIFT_DAYS",
    "SHARPNESS_DAYS",
    "drift_verdicts",
    "drift_windows",
    "integrity_verdict",
]

DATA_DRIFT_DAYS = 7
CONCEPT_DAYS = 14
SHARPNESS_DAYS = 7
#: the data-drift floor on window shapes: this many times the training weeks' own q99 shape
#: PSI (chosen on the real 2021-2023 nulls of ``bench/bench_detectors.py``: 2.5x left 1.7
#: and 3.2 alerts per 30 days over the 5 cryptos, 3x 0.5 and 1.2, 4x 0.1 and 0.7)
SHAPE_FLOOR_FACTOR = 4.0
#: concept drift: windows whose BUY rate is below this share of the calibration block's are
#: not judged, and the no-drift gap floor is this many times the calibration windows' q95
#: (both chosen on the real 2021-2023 nulls: without them 21.8 and 21.2 alerts per 30 days
#: over the 5 cryptos; gate 0.75 with 2x: 1.0 and 0.2; 37 % of crypto-days not judged)
CONCEPT_RATE_GATE = 0.75
CONCEPT_FLOOR_FACTOR = 2.0


def _data_drift(week: pd.DataFrame, ref: Mapping[str, Any]) -> Verdict:
    top = list(ref.get("top_features") or [])[:N_TOP_FEATURES]
    if not top:
        return Verdict(
            "insufficient", math.nan, math.nan, 0, "the live model has no top features recorded"
        )
    cols = {f["name"]: f"feature_{i}" for i, f in enumerate(top, start=1)}
    top = [f for f in top if not is_calendar(f["name"])]
    if not top:
        return Verdict(
            "insufficient", math.nan, math.nan, 0, "only calendar features among the top ones"
        )
    windows = {f["name"]: week[cols[f["name"]]].dropna().to_numpy(np.float64) for f in top}
    edges = {f["name"]: f["train_decile_edges"] for f in top}
    floors = {f["name"]: f.get("window_psi_q99") for f in top}
    shares = {f["name"]: f.get("train_bin_shares") for f in top}  # absent: older stats
    spec = data_drift(
        windows, edges, n_train=ref.get("n_train"), null_floor=floors, expected_shares=shares
    )
    if not all(f.get("shape_edges") for f in top):  # stats frozen before issue 23
        return spec
    v = data_drift(
        {k: window_standardize(x) for k, x in windows.items()},
        {f["name"]: f["shape_edges"] for f in top},
        n_train=ref.get("n_train"),
        null_floor={f["name"]: SHAPE_FLOOR_FACTOR * f["shape_window_psi_q99"] for f in top},
        expected_shares={f["name"]: f["shape_shares"] for f in top},
    )
    details = {
        k: {**d, "spec_psi": spec.details[k]["psi"], "spec_level": spec.details[k]["level"]}
        for k, d in v.details.items()
    }
    reason = (
        f"window shape: {v.reason}; spec 6.3 (PSI against the training deciles, not used: "
        f"it follows the volatility regime): {spec.level}, max {spec.value:.4f}"
    )
    return dataclasses.replace(v, reason=reason, details=details)


def _concept_drift(matured: pd.DataFrame, ref: Mapping[str, Any]) -> Verdict:
    oos = ref.get("oos_f1_buy")
    f1_threshold = ref.get("f1_threshold")
    if oos is None or f1_threshold is None:
        return Verdict(
            "insufficient",
            math.nan,
            math.nan,
            len(matured),
            "the live model has no OOS f1_buy or f1 threshold recorded",
        )
    label = matured["label"].to_numpy(np.int64)
    ref_rate = ref.get("calibration_buy_rate")
    if ref_rate is not None and len(label) and label.mean() < CONCEPT_RATE_GATE * ref_rate:
        return Verdict(
            "insufficient", math.nan, math.nan, len(matured),
            f"BUY rate {label.mean():.3f} of the matured window < {CONCEPT_RATE_GATE} x the "
            f"calibration block's {ref_rate:.3f}: a quiet market, where f1_buy falls with the "
            "base rate whatever the model's skill (not comparable with the OOS f1_buy)",
            {"buy_rate": float(label.mean()), "calibration_buy_rate": float(ref_rate)},
        )  # fmt: skip
    pred = matured["buy_proba"].to_numpy(np.float64) >= f1_threshold
    m = classification_metrics(label, pred.astype(np.int8))
    relevant = m["tp"] + m["fp"] + m["fn"]
    v = concept_drift(
        m["f1_buy"],
        float(oos),
        len(matured),
        n_positives=m["n_true_buy"],
        n_relevant=max(relevant, m["n_true_buy"]),
        gap_floor=_scaled(ref.get("f1_window_gap_q95"), CONCEPT_FLOOR_FACTOR),
    )
    details = {**v.details, "live_f1": float(m["f1_buy"]), "oos_f1": float(oos)}
    return dataclasses.replace(v, details=details)


def _scaled(x: float | None, k: float) -> float | None:
    return None if x is None else k * float(x)


def _sharpness(week: pd.DataFrame, ref: Mapping[str, Any], loss_function: str | None) -> Verdict:
    if loss_function is not None and loss_function != FOCAL:
        return Verdict(
            "ok", math.nan, math.nan, len(week),
            f"not judged: the champion is {loss_function} (output sharpness and its revert to "
            "the baseline watch focal champions only)",
        )  # fmt: skip
    mean_conf = ref.get("train_mean_confidence")
    if mean_conf is None:
        return Verdict("insufficient", math.nan, math.nan, len(week), "no training mean confidence")
    return sharpness_drift(week["buy_proba"].to_numpy(np.float64), float(mean_conf))


def drift_windows(rows: pd.DataFrame, as_of: datetime) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(week, matured)`` of a live model's prediction rows read for ``as_of`` (hours in
    ``[as_of - 14 d, as_of - 1 h]``, :func:`resources.journal.read_model_predictions`'s
    columns): the rows of the last 7 days, and the rows whose label had matured by ``as_of``
    (``label_known_at <= as_of``)."""
    week = rows[rows["hour"] >= as_of - timedelta(days=DATA_DRIFT_DAYS)]
    matured = rows[rows["label"].notna() & (rows["label_known_at"] <= pd.Timestamp(as_of))]
    return week, matured


def drift_verdicts(
    week: pd.DataFrame,
    matured: pd.DataFrame,
    ref: Mapping[str, Any],
    loss_function: str | None = None,
) -> dict[str, Verdict]:
    """The drift rules on the windows of :func:`drift_windows` against the live model's
    registry statistics ``ref`` (pure: what :func:`evaluate_drift` judges, and what
    ``bench/bench_detectors.py`` measures): ``data_drift`` (calendar features left out),
    ``concept_drift``, ``output_sharpness`` (judged only when ``loss_function`` is focal or
    not given; else ``ok``, "not judged")."""
    return {
        "data_drift": _data_drift(week, ref),
        "concept_drift": _concept_drift(matured, ref),
        "output_sharpness": _sharpness(week, ref, loss_function),
    }


def integrity_verdict(
    rows: pd.DataFrame,
    ref: Mapping[str, Any],
    as_of: datetime,
    recomputed: pd.DataFrame | None = None,
) -> Verdict:
    """:func:`cvn_assets.guard.integrity.data_integrity` on the top features of the prediction
    rows of the hours ``[as_of - recent h, as_of - 1 h]`` (their candles closed by ``as_of``),
    in time order, missing values kept. ``recomputed`` (optional): the features recomputed
    from the candles (:func:`cvn_assets.guard.integrity.recompute_features`; index = open
    time, columns = feature names), matched to the rows by hour; a top feature it lacks is not
    compared."""
    top = list(ref.get("top_features") or [])[:N_TOP_FEATURES]
    if not top:
        return Verdict(
            "insufficient", math.nan, math.nan, 0, "the live model has no top features recorded"
        )
    lo = pd.Timestamp(as_of) - pd.Timedelta(hours=INTEGRITY_RECENT)
    h = rows["hour"]
    recent = rows[(h >= lo) & (h <= pd.Timestamp(as_of) - pd.Timedelta(hours=1))]
    recent = recent.sort_values("hour")
    windows = {f["name"]: recent[f"feature_{i}"].to_numpy(np.float64)
               for i, f in enumerate(top, start=1)}  # fmt: skip
    edges = {f["name"]: f["train_decile_edges"] for f in top}
    again = None
    if recomputed is not None:
        at = recomputed.reindex(pd.DatetimeIndex(recent["hour"]))
        again = {k: at[k].to_numpy(np.float64) for k in windows if k in recomputed.columns}
    return data_integrity(windows, edges, recomputed=again)
