"""Set-up of the detector benchmark (issue 23): a champion trained by the champion's own path
on the first part of a crypto's history, its OOS f1_buy on the next block, the rest monitored
(pure: no Dagster; :mod:`cvn_assets.guard.detector_bench` runs the benchmark on it)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from cvn_assets.guard.detector_bench import Monitored

__all__ = ["Predictor", "Split", "prepare"]


@dataclasses.dataclass(frozen=True)
class Predictor:
    """A calibrated champion as a picklable ``features -> buy_proba`` function."""

    model: Any
    columns: tuple[str, ...]

    def __call__(self, x: pd.DataFrame) -> NDArray[np.float64]:
        p = self.model.predict_proba(x.loc[:, list(self.columns)])[:, 1]
        return np.asarray(p, dtype=np.float64)


@dataclasses.dataclass(frozen=True)
class Split:
    """Where a crypto's history is cut (row counts of the model dataset, oldest first):
    ``train`` rows for the champion (its own early-stopping and calibration blocks at their
    end, :func:`cvn_assets.guard.training.history_plan`), then ``test`` rows that give its
    out-of-sample f1_buy (the sweep's role), then the monitored rest."""

    train: int
    test: int


def prepare(
    crypto: str,
    candles: pd.DataFrame,
    split: Split,
    *,
    variant: Any,
    label: Any,
    settings: Mapping[str, Any],
    fee_per_side: float,
    min_trade_share: float,
    force_share: float | None = None,
) -> tuple[Monitored, dict[str, Any]]:
    """Train ``variant`` as a champion on the first ``split.train`` rows of ``candles``'s
    model dataset (the champion's own path: :func:`cvn_assets.guard.training.
    train_whole_history`), measure its f1_buy on the next ``split.test`` rows (its OOS
    f1_buy), and return the monitored rest with the registry statistics, plus a summary
    (sizes, f1, trading threshold, BUY rate). ``settings``: ``xgb_params``,
    ``num_boost_round``, ``early_stopping_rounds``, ``seed``, ``primary_calibration``,
    ``early_stopping_frac``, ``calibration_frac``, ``embargo_pct``. ``force_share``: set the
    trading threshold to the ``1 - force_share`` quantile of the calibration block's buy_proba
    (the champion trades in that share of hours whatever its expectancy: the way to exercise
    the expectancy rules where no threshold has a positive net expectancy)."""
    from cvn_assets.ablation.metrics import classification_metrics
    from cvn_assets.guard.training import (
        dataset_through,
        history_plan,
        registry_stats,
        train_whole_history,
    )
    from cvn_assets.market.features import FEATURE_NAMES
    from cvn_assets.market.trading import simulate_long_trades

    ds = dataset_through(candles, label)
    n = len(ds)
    if split.train + split.test >= n - 24 * 28:
        raise ValueError(f"{crypto}: split {split} leaves < 28 days to monitor of {n} rows")
    train = ds.iloc[: split.train]
    plan = history_plan(
        train,
        early_stopping_frac=settings["early_stopping_frac"],
        calibration_frac=settings["calibration_frac"],
        embargo_pct=settings["embargo_pct"],
    )
    test = ds.iloc[split.train + label.horizon : split.train + split.test]  # purged
    model, stats = train_whole_history(
        variant, train, plan,
        xgb_params=dict(settings["xgb_params"]),
        num_boost_round=settings["num_boost_round"],
        early_stopping_rounds=settings["early_stopping_rounds"],
        seed=settings["seed"],
        primary_calibration=settings["primary_calibration"],
        fee_per_side=fee_per_side,
        oos_f1_buy=None,
        min_trade_share=min_trade_share,
    )  # fmt: skip
    p_test = model.predict_proba(test.loc[:, list(FEATURE_NAMES)])[:, 1]
    y_test = test["label"].to_numpy(np.int8)
    oos = classification_metrics(y_test, (p_test >= model.threshold).astype(np.int8))["f1_buy"]
    stats["oos_f1_buy"] = float(oos)
    ref = registry_stats(model, stats)
    if force_share is not None:  # trade the top force_share of the calibration block's hours
        cal = train.iloc[plan.calibration].loc[:, list(FEATURE_NAMES)]
        p_cal = model.predict_proba(cal)[:, 1]
        ref["trading_threshold"] = float(np.quantile(p_cal, 1.0 - force_share))
        ref["forced_trade_share"] = force_share
    mon = ds.iloc[split.train + split.test :]
    c = candles.loc[mon.index[0] :]
    out = simulate_long_trades(
        c["open"].to_numpy(), c["high"].to_numpy(), c["low"].to_numpy(), c["close"].to_numpy(),
        take_profit=label.take_profit, stop_loss=label.stop_loss, horizon=label.horizon,
    )  # fmt: skip
    k = len(mon)
    if len(out.ret) < k:  # the dataset's last rows have labels from candles past them
        k = len(out.ret)
    mon = mon.iloc[:k]

    m = Monitored(
        crypto=crypto,
        features=mon.loc[:, list(FEATURE_NAMES)],
        take_profit=out.take_profit[:k],
        gross_return=out.ret[:k],
        exit_offset=out.exit_offset[:k].astype(np.int64),
        predict=Predictor(model, tuple(FEATURE_NAMES)),
        ref=ref,
        loss_function=variant.loss_function,
        fee_per_side=fee_per_side,
    )
    summary = {
        "crypto": crypto,
        "train_rows": split.train,
        "test_rows": len(test),
        "monitored_rows": k,
        "monitored": f"{mon.index[0]:%Y-%m-%d}..{mon.index[-1]:%Y-%m-%d}",
        "first_hour": mon.index[0].isoformat(),
        "last_hour": mon.index[k - 1].isoformat(),
        "oos_f1_buy": round(float(oos), 4),
        "f1_threshold": round(float(model.threshold), 4),
        "trading_threshold": ref["trading_threshold"],
        "buy_rate": round(float(mon["label"].mean()), 4),
        "top_features": [f["name"] for f in ref["top_features"]],
    }
    return m, summary
