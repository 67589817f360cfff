"""One whole-history training for the guard: a champion, or a shadow candidate.

The same code path as a sweep cell (:func:`cvn_assets.evaluation.train_cell`: early stopping
on the last slice of train), then calibrators and both thresholds (f1 and trading) on the
calibration block at the end of the history (:func:`cvn_assets.champion.
calibrate_whole_history`), then the drift detectors' references
(:func:`cvn_assets.champion.reference_statistics`). ``champion_models`` trains on the sweep's
``model_dataset``; ``shadow_retrain_job`` on :func:`dataset_through`, the same features and
labels built from the candles up to a later time (the recent window included).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pandas as pd

from cvn_assets.ablation import Variant
from cvn_assets.calibrated_model import CalibratedModel
from cvn_assets.champion import calibrate_whole_history, reference_statistics, whole_history_plan
from cvn_assets.dataset import assemble_dataset, label_times
from cvn_assets.evaluation import train_cell
from cvn_assets.features import build_features
from cvn_assets.labels import LabelStrategy, triple_barrier_labels

__all__ = ["WholeHistoryModel", "dataset_through", "train_whole_history"]


@dataclasses.dataclass(frozen=True)
class WholeHistoryModel:
    """A trained, calibrated whole-history model and what the registry records of it."""

    model: CalibratedModel
    stats: dict[str, Any]  # reference statistics + f1 and trading thresholds
    train_start: pd.Timestamp  # first row's open time (UTC)
    train_end: pd.Timestamp  # exclusive: one hour after the last label's end
    n_train: int
    n_early_stopping: int
    n_calibration: int


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


def train_whole_history(
    variant: Variant,
    dataset: pd.DataFrame,
    *,
    xgb_params: dict[str, Any],
    num_boost_round: int,
    early_stopping_rounds: int,
    seed: int,
    early_stopping_frac: float,
    calibration_frac: float,
    embargo_pct: float,
    primary_calibration: str,
    fee_per_side: float,
    oos_f1_buy: float | None,
) -> WholeHistoryModel:
    """Train ``variant`` on the whole of ``dataset`` (rows x features + label, t1 columns).

    Raises ValueError (from the plan) when the history is too short for the three blocks.
    """
    t0, t1 = label_times(dataset)
    plan = whole_history_plan(
        t0,
        t1,
        early_stopping_frac=early_stopping_frac,
        calibration_frac=calibration_frac,
        embargo_pct=embargo_pct,
        labels=dataset["label"].to_numpy(),
    )
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
        res, variant, dataset, plan, primary=primary_calibration, fee_per_side=fee_per_side
    )
    stats = reference_statistics(cal, dataset, plan, oos_f1_buy=oos_f1_buy)
    stats = {
        **stats,
        "f1_threshold": cal.threshold,
        "trading_threshold": cal.info["trading_threshold"],
    }
    return WholeHistoryModel(
        model=cal,
        stats=stats,
        train_start=pd.Timestamp(dataset.index[0]),
        train_end=pd.Timestamp(dataset["t1"].max()) + pd.Timedelta(hours=1),
        n_train=len(plan.train),
        n_early_stopping=len(plan.early_stopping),
        n_calibration=len(plan.calibration),
    )
