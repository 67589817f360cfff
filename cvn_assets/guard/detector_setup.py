"""Set-up of the detector benchmark (issue 23): a champion trained by the champion's own path
on the first part of a crypto's history, its OOS f1_buy on the next block, and a monitored
stream -- the rest of the same history (:func:`prepare`) or a later, separate frame of candles
(:func:`prepare_live`: out of sample in time). Pure: no Dagster;
:mod:`cvn_assets.guard.detector_bench` runs the benchmark on it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from cvn_assets.guard.detector_bench import Monitored

__all__ = ["Predictor", "Split", "prepare", "prepare_live"]


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


#: the shortest monitored stream (rows of the model dataset): four 7-day windows
MIN_MONITORED_ROWS = 24 * 28


@dataclasses.dataclass(frozen=True)
class _Champion:
    """A trained champion: the model, its registry statistics, its OOS block's f1_buy."""

    model: Any
    ref: dict[str, Any]
    oos_f1_buy: float
    test_rows: int
    trained: str  # "first..last" hour of the training rows


def _check_split(crypto: str, split: Split, horizon: int, force_share: float | None) -> None:
    """ValueError naming the field and its value for a split or forced share that cannot work."""
    if split.train <= 0:
        raise ValueError(f"{crypto}: split.train must be > 0, got {split.train}")
    if split.test <= horizon:
        raise ValueError(
            f"{crypto}: split.test must exceed the label horizon {horizon} (the purge before "
            f"the OOS block), got {split.test}"
        )
    if force_share is not None and not 0.0 < force_share < 1.0:
        raise ValueError(f"{crypto}: force_share must be in (0, 1), got {force_share}")


def _champion(
    crypto: str,
    ds: pd.DataFrame,
    split: Split,
    *,
    variant: Any,
    label: Any,
    settings: Mapping[str, Any],
    fee_per_side: float,
    min_trade_share: float,
    force_share: float | None,
) -> _Champion:
    """Train ``variant`` on ``ds``'s first ``split.train`` rows (the champion's own path), its
    f1_buy on the next ``split.test`` rows after a ``label.horizon`` purge; ``ds`` rows past
    ``split.train + split.test`` are not read."""
    from cvn_assets.ablation.metrics import classification_metrics
    from cvn_assets.guard.training import history_plan, registry_stats, train_whole_history
    from cvn_assets.market.features import FEATURE_NAMES

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
    trained = f"{train.index[0].isoformat()}..{train.index[-1].isoformat()}"
    return _Champion(model, ref, float(oos), len(test), trained)


def _monitored(
    crypto: str,
    champ: _Champion,
    mon: pd.DataFrame,
    candles: pd.DataFrame,
    *,
    variant: Any,
    label: Any,
    split: Split,
    fee_per_side: float,
) -> tuple[Monitored, dict[str, Any]]:
    """The :class:`Monitored` stream of ``champ`` over the model-dataset rows ``mon`` (their
    trade outcomes simulated on ``candles`` from ``mon``'s first hour on), and the summary."""
    from cvn_assets.market.features import FEATURE_NAMES
    from cvn_assets.market.trading import simulate_long_trades

    c = candles.loc[mon.index[0] :]
    out = simulate_long_trades(
        c["open"].to_numpy(), c["high"].to_numpy(), c["low"].to_numpy(), c["close"].to_numpy(),
        take_profit=label.take_profit, stop_loss=label.stop_loss, horizon=label.horizon,
    )  # fmt: skip
    k = min(len(mon), len(out.ret))  # the dataset's last rows: labels from later candles
    mon = mon.iloc[:k]
    m = Monitored(
        crypto=crypto,
        features=mon.loc[:, list(FEATURE_NAMES)],
        take_profit=out.take_profit[:k],
        gross_return=out.ret[:k],
        exit_offset=out.exit_offset[:k].astype(np.int64),
        predict=Predictor(champ.model, tuple(FEATURE_NAMES)),
        ref=champ.ref,
        loss_function=variant.loss_function,
        fee_per_side=fee_per_side,
    )
    summary = {
        "crypto": crypto,
        "train_rows": split.train,
        "test_rows": champ.test_rows,
        "trained": champ.trained,
        "monitored_rows": k,
        "monitored": f"{mon.index[0]:%Y-%m-%d}..{mon.index[-1]:%Y-%m-%d}",
        "first_hour": mon.index[0].isoformat(),
        "last_hour": mon.index[k - 1].isoformat(),
        "oos_f1_buy": round(champ.oos_f1_buy, 4),
        "f1_threshold": round(float(champ.model.threshold), 4),
        "trading_threshold": champ.ref["trading_threshold"],
        "buy_rate": round(float(mon["label"].mean()), 4),
        "top_features": [f["name"] for f in champ.ref["top_features"]],
    }
    return m, summary


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
    (sizes, training hours, f1, trading threshold, BUY rate). ``settings``: ``xgb_params``,
    ``num_boost_round``, ``early_stopping_rounds``, ``seed``, ``primary_calibration``,
    ``early_stopping_frac``, ``calibration_frac``, ``embargo_pct``. ``force_share``: set the
    trading threshold to the ``1 - force_share`` quantile of the calibration block's buy_proba
    (the champion trades in that share of hours whatever its expectancy: the way to exercise
    the expectancy rules where no threshold has a positive net expectancy).

    Raises ValueError (naming the field and value) for ``split.train <= 0``, ``split.test <=
    label.horizon``, ``force_share`` outside (0, 1), or a split that leaves fewer than
    :data:`MIN_MONITORED_ROWS` rows to monitor."""
    from cvn_assets.guard.training import dataset_through

    _check_split(crypto, split, label.horizon, force_share)
    ds = dataset_through(candles, label)
    n = len(ds)
    if split.train + split.test >= n - MIN_MONITORED_ROWS:
        raise ValueError(f"{crypto}: split {split} leaves < 28 days to monitor of {n} rows")
    champ = _champion(
        crypto, ds, split, variant=variant, label=label, settings=settings,
        fee_per_side=fee_per_side, min_trade_share=min_trade_share, force_share=force_share,
    )  # fmt: skip
    mon = ds.iloc[split.train + split.test :]
    return _monitored(crypto, champ, mon, candles, variant=variant, label=label, split=split,
                      fee_per_side=fee_per_side)  # fmt: skip


def prepare_live(
    crypto: str,
    history: pd.DataFrame,
    live: pd.DataFrame,
    split: Split,
    *,
    variant: Any,
    label: Any,
    settings: Mapping[str, Any],
    fee_per_side: float,
    min_trade_share: float,
    force_share: float | None = None,
) -> tuple[Monitored, dict[str, Any]]:
    """A champion trained on one frame of candles and monitored on a later, separate one (out
    of sample in time). ``history`` and ``live``: hourly candles (``open, high, low, close,
    volume``; aware ascending DatetimeIndex of the open times), ``live`` starting after
    ``history``'s last candle (the frames need not meet).

    The champion is trained exactly as by :func:`prepare` on ``history``'s model dataset: the
    first ``split.train`` rows, its OOS f1_buy on the next ``split.test`` rows (after a
    ``label.horizon`` purge); ``split.train + split.test`` may reach the dataset's last row.
    Nothing of ``live`` reaches the champion. The monitored stream is ``live``'s own model
    dataset -- features and labels built from ``live``'s candles alone, its first
    ``WARMUP_BARS`` (167) hours dropped as warm-up, its last ``label.horizon`` hours dropped
    (outcome unknown) -- with the trade outcomes simulated on ``live``. Returns the
    :class:`Monitored` and a summary as :func:`prepare` does.

    Raises ValueError (naming the field and value) for the split checks of :func:`prepare`,
    ``split.train + split.test`` beyond ``history``'s model-dataset rows, ``live`` starting at
    or before ``history``'s last candle, or ``live`` giving fewer than
    :data:`MIN_MONITORED_ROWS` rows; all before any training."""
    from cvn_assets.guard.training import dataset_through

    _check_split(crypto, split, label.horizon, force_share)
    if len(history) == 0 or len(live) == 0:
        raise ValueError(f"{crypto}: history has {len(history)} candles, live {len(live)}")
    if live.index[0] <= history.index[-1]:
        raise ValueError(
            f"{crypto}: live must start after history's last candle {history.index[-1]}, "
            f"got live starting at {live.index[0]}"
        )
    ds = dataset_through(history, label)
    if split.train + split.test > len(ds):
        raise ValueError(
            f"{crypto}: split.train + split.test = {split.train + split.test} exceeds the "
            f"{len(ds)} rows of history's model dataset"
        )
    mon = dataset_through(live, label)
    if len(mon) < MIN_MONITORED_ROWS:
        raise ValueError(
            f"{crypto}: live gives {len(mon)} monitored rows, fewer than {MIN_MONITORED_ROWS}"
        )
    champ = _champion(
        crypto, ds, split, variant=variant, label=label, settings=settings,
        fee_per_side=fee_per_side, min_trade_share=min_trade_share, force_share=force_share,
    )  # fmt: skip
    return _monitored(crypto, champ, mon, live, variant=variant, label=label, split=split,
                      fee_per_side=fee_per_side)  # fmt: skip
