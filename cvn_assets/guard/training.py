"""One whole-history training for the guard: a champion, or a shadow candidate.

The same code path as a sweep cell (:func:`cvn_assets.ablation.evaluation.train_cell`: early
stopping on the last slice of train), then calibrators and both thresholds (f1 and trading) on the
calibration block at the end of the history (:func:`cvn_assets.guard.champion.
calibrate_whole_history`), then the drift detectors' references
(:func:`cvn_assets.guard.champion.reference_statistics`). ``champion_models`` trains on the sweep's
``model_dataset``; ``shadow_retrain_job`` on :func:`dataset_through`, the same features and
labels built from the candles up to a later time (the recent window included).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from cvn_assets.ablation.calibrated_model import CalibratedModel
from cvn_assets.ablation.evaluation import train_cell
from cvn_assets.ablation.metrics import MIN_TRADE_SHARE
from cvn_assets.ablation.variants import Variant
from cvn_assets.guard.champion import (
    calibrate_whole_history,
    reference_statistics,
    whole_history_plan,
)
from cvn_assets.market.dataset import assemble_dataset, label_times
from cvn_assets.market.features import build_features
from cvn_assets.market.folds import FoldPlan
from cvn_assets.market.labels import LabelStrategy, triple_barrier_labels

__all__ = [
    "calibration_share",
    "dataset_through",
    "history_plan",
    "registry_stats",
    "train_whole_history",
    "training_window",
]


def dataset_through(candles: pd.DataFrame, strategy: LabelStrategy) -> pd.DataFrame:
    """The model dataset (features joined to labels, warm-up dropped) of ``candles``: what
    ``model_dataset`` builds for the sweep, here for candles up to a later time. Rows whose
    label needs candles after the last one are dropped (their outcome is not known yet)."""
    labels = triple_barrier_labels(
        candles,
        take_profit=strategy.take_profit,
        stop_loss=strategy.stop_loss,
        horizon=strategy.horizon,
    )
    return assemble_dataset(build_features(candles), labels)


def calibration_share(n_folds: int) -> float:
    """The share of a whole history (at its end) a champion or candidate calibrates on: that
    of a sweep cell, ``1 / n_folds`` (rounded to 6 decimals, as it enters fingerprints)."""
    return round(1.0 / n_folds, 6)


def history_plan(
    dataset: pd.DataFrame,
    *,
    early_stopping_frac: float,
    calibration_frac: float,
    embargo_pct: float,
) -> FoldPlan:
    """Train / early-stopping / calibration positions over the whole of ``dataset``
    (:func:`cvn_assets.guard.champion.whole_history_plan` on its label times). Raises ValueError
    when the history is too short for the three blocks."""
    t0, t1 = label_times(dataset)
    return whole_history_plan(
        t0,
        t1,
        early_stopping_frac=early_stopping_frac,
        calibration_frac=calibration_frac,
        embargo_pct=embargo_pct,
        labels=dataset["label"].to_numpy(),
    )


def training_window(dataset: pd.DataFrame) -> tuple[pd.Timestamp, pd.Timestamp]:
    """(first row's open time, end of the last label + 1 h): the window the model saw; the
    end is exclusive (an hour before it is in the training data)."""
    return pd.Timestamp(dataset.index[0]), pd.Timestamp(dataset["t1"].max()) + pd.Timedelta(hours=1)


def train_whole_history(
    variant: Variant,
    dataset: pd.DataFrame,
    plan: FoldPlan,
    *,
    xgb_params: dict[str, Any],
    num_boost_round: int,
    early_stopping_rounds: int,
    seed: int,
    primary_calibration: str,
    fee_per_side: float,
    oos_f1_buy: float | None,
    min_trade_share: float = MIN_TRADE_SHARE,
) -> tuple[CalibratedModel, dict[str, Any]]:
    """Train ``variant`` on ``plan`` over ``dataset`` (rows x features + label, t1 columns),
    calibrate on its calibration block (the trading threshold trades in at least
    ``min_trade_share`` of its hours); returns the model and its reference statistics
    (:func:`cvn_assets.guard.champion.reference_statistics`)."""
    res = train_cell(
        variant,
        dataset,
        plan,
        params=xgb_params,
        num_boost_round=num_boost_round,
        early_stopping_rounds=early_stopping_rounds,
        seed=seed,
    )
    cal = calibrate_whole_history(
        res,
        variant,
        dataset,
        plan,
        primary=primary_calibration,
        fee_per_side=fee_per_side,
        min_trade_share=min_trade_share,
    )
    return cal, reference_statistics(cal, dataset, plan, oos_f1_buy=oos_f1_buy)


def registry_stats(model: CalibratedModel, stats: dict[str, Any]) -> dict[str, Any]:
    """What the registry records of a version: its reference statistics plus the f1 and the
    trading threshold (what paper trading and the concept-drift detector read)."""
    return {
        **stats,
        "f1_threshold": model.threshold,
        "trading_threshold": model.info["trading_threshold"],
        "min_trade_share": model.info.get("min_trade_share", MIN_TRADE_SHARE),
    }
