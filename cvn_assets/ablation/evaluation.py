"""One cell of the FTF sweep, Dagster-free: train, calibrate on the calibration block, score the
test block once.

The same functions run inside the Dagster assets and in the plain-Python reference loop of
``bench/bench_sweep.py``, so the benchmark compares orchestration cost and nothing else.

Protocol (spec 7.1-7.2, ADR-14/15):
- the booster is fitted on the fold's train rows, early-stopped on its early-stopping slice;
- every calibrator (none / temperature / Platt / isotonic) and the BUY threshold are fitted on
  the calibration block only, which is neither train nor test;
- the test block is scored once; f1_buy, precision, recall, log loss and the trade expectancy
  use the primary calibrator and the fitted threshold, ECE_HOLD is reported per method.
"""

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from cvn_assets.ablation.calibrated_model import CalibratedModel
from cvn_assets.ablation.calibration import (
    CALIBRATION_METHODS,
    expected_calibration_error,
    fit_calibrator,
)
from cvn_assets.ablation.metrics import (
    MIN_TRADE_SHARE,
    classification_metrics,
    fit_buy_threshold,
    fit_trading_threshold,
    log_loss,
    trade_returns,
    trading_min_trades,
)
from cvn_assets.ablation.stats import cscv_logits, trim_for_cscv
from cvn_assets.ablation.training import TrainResult, train_variant
from cvn_assets.ablation.variants import Variant
from cvn_assets.market.features import FEATURE_NAMES
from cvn_assets.market.folds import FoldPlan


def cell_arrays(dataset: pd.DataFrame, rows: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    """Features and labels of the given row positions (positions into ``dataset``)."""
    part = dataset.iloc[np.asarray(rows, dtype=np.int64)]
    return part.loc[:, list(FEATURE_NAMES)], part["label"].to_numpy(dtype=np.int8)


def train_cell(
    variant: Variant,
    dataset: pd.DataFrame,
    plan: FoldPlan,
    *,
    params: dict[str, Any],
    num_boost_round: int,
    early_stopping_rounds: int,
    seed: int,
) -> TrainResult:
    X_tr, y_tr = cell_arrays(dataset, plan.train)
    X_es, y_es = cell_arrays(dataset, plan.early_stopping)
    return train_variant(
        variant,
        X_tr,
        y_tr,
        X_es,
        y_es,
        params=params,
        num_boost_round=num_boost_round,
        early_stopping_rounds=early_stopping_rounds,
        seed=seed,
    )


def fit_on_calibration_block(
    model: Any,
    dataset: pd.DataFrame,
    plan: FoldPlan,
    *,
    primary: str,
    fee_per_side: float,
    min_trade_share: float = MIN_TRADE_SHARE,
) -> tuple[dict[str, Any], float, float | None]:
    """Every calibrator (none / temperature / Platt / isotonic) on the calibration block's
    margins, then, on the ``primary`` calibrator's probabilities, the BUY threshold that
    maximises f1_buy and the trading threshold that maximises the net expectancy per trade
    after fees with at least :func:`cvn_assets.ablation.metrics.trading_min_trades` trades
    (``min_trade_share`` of the block's rows, default 10 %; ``None`` = do not trade;
    information for the sweep, used by paper trading; a champion may set its own share).

    Returns ``(calibrators, f1_threshold, trading_threshold)``. Shared by the sweep's cells
    and the champion (:mod:`cvn_assets.guard.champion`), so both fit them the same way.
    """
    X_cal, y_cal = cell_arrays(dataset, plan.calibration)
    m_cal = model.predict_margin(X_cal)
    calibrators = {m: fit_calibrator(m, m_cal, y_cal) for m in CALIBRATION_METHODS}
    p_cal = np.asarray(calibrators[primary].transform(m_cal), dtype=np.float64)
    threshold = float(fit_buy_threshold(p_cal, y_cal))
    cal_rows = dataset.iloc[np.asarray(plan.calibration, dtype=np.int64)]
    trading = fit_trading_threshold(
        p_cal,
        cal_rows["ret"].to_numpy(dtype=np.float64),
        fee_per_side,
        min_trades=trading_min_trades(len(p_cal), min_trade_share),
    )
    return calibrators, threshold, trading


def calibrate_and_evaluate(
    train: TrainResult,
    variant: Variant,
    dataset: pd.DataFrame,
    plan: FoldPlan,
    *,
    primary: str,
    fee_per_side: float,
) -> CalibratedModel:
    """Fit calibrators + threshold on the calibration block, score the test block once."""
    model = train.model
    X_te, y_te = cell_arrays(dataset, plan.test)
    m_te = model.predict_margin(X_te)
    calibrators, threshold, trading_threshold = fit_on_calibration_block(
        model, dataset, plan, primary=primary, fee_per_side=fee_per_side
    )

    probs = {m: np.asarray(c.transform(m_te), dtype=np.float64) for m, c in calibrators.items()}
    p_te = probs[primary]
    y_pred = (p_te >= threshold).astype(np.int8)
    cls = classification_metrics(y_te, y_pred)
    test_rows = dataset.iloc[np.asarray(plan.test, dtype=np.int64)]
    realized = test_rows["ret"].to_numpy(dtype=np.float64)
    net = trade_returns(y_pred, realized, fee_per_side)

    def net_at(mask: np.ndarray) -> np.ndarray:
        return realized[mask] - 2.0 * fee_per_side

    n_trades = int(y_pred.sum())
    temperature = calibrators["temperature"].to_dict().get("temperature")
    traded = (
        p_te >= trading_threshold if trading_threshold is not None else np.zeros_like(y_pred, bool)
    )
    n_trades_trading = int(traded.sum())

    info: dict[str, Any] = {
        "variant": variant.name,
        "loss_function": variant.loss_function,
        "gamma": variant.gamma,
        "alpha": variant.alpha,
        "primary_calibration": primary,
        "n_train": int(len(plan.train)),
        "n_early_stopping": int(len(plan.early_stopping)),
        "n_calibration": int(len(plan.calibration)),
        "n_test": int(len(plan.test)),
        "n_buy": int(y_te.sum()),
        "n_pred_buy": n_trades,
        "threshold": threshold,
        "f1_buy": float(cls["f1_buy"]),
        "precision_buy": float(cls["precision_buy"]),
        "recall_buy": float(cls["recall_buy"]),
        "log_loss": float(log_loss(p_te, y_te)),
        "temperature": None if temperature is None else float(temperature),
        "expectancy_net": float(net[y_pred == 1].mean()) if n_trades else 0.0,
        "n_trades": n_trades,
        "trading_threshold": trading_threshold,
        "expectancy_trading": float(net_at(traded).mean()) if n_trades_trading else 0.0,
        "n_trades_trading": n_trades_trading,
        "best_iteration": int(train.best_iteration),
        "train_seconds": float(train.train_seconds),
    }
    for m in CALIBRATION_METHODS:
        info[f"ece_hold_{m}"] = float(expected_calibration_error(probs[m], y_te))
    test_eval = {
        "open_time_ns": test_rows.index.to_numpy(dtype="datetime64[ns]").astype(np.int64),
        "y": y_te,
        "margin": m_te.astype(np.float64),
        "realized_return": realized,
        "net_return": net.astype(np.float64),
        "y_pred": y_pred,
        **{f"prob_{m}": p for m, p in probs.items()},
    }
    return CalibratedModel(
        model=model,
        calibrators=calibrators,
        primary=primary,
        threshold=threshold,
        info=info,
        test_eval=test_eval,
    )


def result_row(crypto: str, fold: int, calibrated: CalibratedModel) -> dict[str, Any]:
    """The ``finetune_results`` row of one cell (keys + every metric in ``info``)."""
    return {"crypto": crypto, "fold": int(fold), **calibrated.info}


def daily_oos_returns(
    crypto: str, fold: int, variant: str, calibrated: CalibratedModel
) -> pd.DataFrame:
    """Per-day net return of the strategy on the test block (0 on days without a trade).

    The rows feed PBO/CSCV (Bailey et al. 2014), which needs time-ordered per-period
    performance of every variant over the same periods.
    """
    ev = calibrated.test_eval
    t = pd.to_datetime(ev["open_time_ns"], utc=True)
    frame = pd.DataFrame(
        {"period": t.strftime("%Y-%m-%d"), "net": ev["net_return"], "trade": ev["y_pred"]}
    )
    g = frame.groupby("period", sort=True).agg(net_return=("net", "sum"), n_trades=("trade", "sum"))
    g = g.reset_index()
    g.insert(0, "variant", variant)
    g.insert(0, "fold", int(fold))
    g.insert(0, "crypto", crypto)
    return g


def variant_summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per-variant means over the crypto x fold cells of ``finetune_results`` (display only;
    the decisions are ``gates.evaluate_gates``)."""
    return (
        results.groupby("variant", sort=False)
        .agg(
            cells=("f1_buy", "size"),
            f1_buy_mean=("f1_buy", "mean"),
            f1_buy_median=("f1_buy", "median"),
            f1_buy_sd=("f1_buy", "std"),
            precision=("precision_buy", "mean"),
            recall=("recall_buy", "mean"),
            ece_temp=("ece_hold_temperature", "mean"),
            ece_platt=("ece_hold_platt", "mean"),
            expectancy_net=("expectancy_net", "mean"),
            trades=("n_trades", "sum"),
            exp_trading=("expectancy_trading", "mean"),
            trades_trading=("n_trades_trading", "sum"),
        )
        .round(4)
    )


def portfolio_daily_returns(oos: pd.DataFrame) -> pd.DataFrame:
    """Equal-weight (over cryptos) daily net return per variant: the T x N input of PBO."""
    return oos.groupby(["period", "variant"], sort=True)["net_return"].mean().reset_index()


def pbo_logits(daily: pd.DataFrame, n_blocks: int = 8) -> np.ndarray:
    """CSCV logits (Bailey et al. 2014) of the daily matrix, oldest T mod n_blocks days dropped."""
    matrix = daily.pivot(index="period", columns="variant", values="net_return").sort_index()
    return cscv_logits(trim_for_cscv(matrix.to_numpy(), n_blocks)[0], n_blocks=n_blocks)


def pooled_reliability(
    test_evals: Iterable[Mapping[str, np.ndarray]],
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Test-block (prob, y) per calibration method, pooled over cells, for reliability plots."""
    evals = list(test_evals)
    y = np.concatenate([e["y"] for e in evals])
    return {m: (np.concatenate([e[f"prob_{m}"] for e in evals]), y) for m in CALIBRATION_METHODS}
