"""Classification and trading metrics for the BUY class (spec: "Theta calibrated OOS", 7.2-7.3).

Why: the sweep's primary figure is ``f1_buy`` (F1 of the positive/BUY class) on the test
block, the BUY threshold is fitted on a separate calibration block (ADR-15), and the
production guard watches ``expectancy_net_realized`` (spec 6.1). These are pure NumPy
functions so the gates and the monitoring can share them and the tests can check them
against hand counts.

Conventions
-----------
* Labels and predictions are 0/1 (BUY = 1). A ratio whose denominator is zero is reported
  as 0.0 *and* flagged in the result dict (``*_zero_division``), never as NaN.
* Probabilities are clipped to ``[eps, 1 - eps]`` before any logarithm.
* A BUY pays ``fee_per_side`` twice (entry and exit): ``net = realized_return - 2 fee``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "classification_metrics",
    "fit_buy_threshold",
    "fit_trading_threshold",
    "MIN_TRADES_TRADING",
    "MIN_TRADE_SHARE",
    "trading_min_trades",
    "log_loss",
    "logit",
    "sigmoid",
    "trade_expectancy",
    "trade_returns",
]


def _binary(name: str, values: ArrayLike) -> NDArray[np.int8]:
    """1-D 0/1 array or a ValueError naming the field and the first bad value."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.dtype == np.bool_:
        return arr.astype(np.int8)
    if not (np.issubdtype(arr.dtype, np.number)):
        raise ValueError(f"{name} must be numeric 0/1, got dtype {arr.dtype}")
    bad = (arr != 0) & (arr != 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name} must contain only 0 and 1, got {name}[{i}] = {arr[i].item()!r}")
    return arr.astype(np.int8)


def _probabilities(name: str, values: ArrayLike) -> NDArray[np.float64]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    bad = ~((arr >= 0.0) & (arr <= 1.0))  # also catches NaN
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name} must be probabilities in [0, 1], got {name}[{i}] = {arr[i].item()!r}"
        )
    return arr


def _same_length(**arrays: NDArray[Any]) -> None:
    lengths = {k: v.shape[0] for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"length mismatch: {lengths}")


def sigmoid(margin: ArrayLike) -> NDArray[np.float64]:
    """Numerically stable logistic function, in float64, consistent with ``margin >= 0``.

    Uses one ``exp(-|m|)`` (no overflow for any finite or infinite margin). For the few
    negative margins so close to 0 that the sigmoid rounds to exactly 0.5 the result is
    nudged to the float just below 0.5, so that ``sigmoid(m) >= 0.5`` if and only if
    ``m >= 0``: the wrapper's logit-threshold ``predict`` and ``predict_proba`` can never
    disagree (spec "predict() path audit").
    """
    m = np.asarray(margin, dtype=np.float64)
    e = np.exp(-np.abs(m))
    r = 1.0 / (1.0 + e)
    p = np.where(m >= 0, r, e * r)
    return np.where((m < 0) & (p >= 0.5), np.nextafter(0.5, 0.0), p)


def logit(prob: ArrayLike, eps: float = 1e-7) -> NDArray[np.float64]:
    """``log(p / (1 - p))`` of ``p`` clipped to ``[eps, 1 - eps]`` (finite for p in {0, 1})."""
    p = np.clip(np.asarray(prob, dtype=np.float64), eps, 1.0 - eps)
    return np.log(p) - np.log1p(-p)


def classification_metrics(y: ArrayLike, y_pred: ArrayLike) -> dict[str, Any]:
    """Precision, recall and F1 of the BUY class (label 1), with raw counts.

    Zero denominators give 0.0 and set ``precision_zero_division`` / ``recall_zero_division``
    / ``f1_zero_division`` to True (sklearn's ``zero_division=0`` convention, but reported).
    """
    yt = _binary("y", y)
    yp = _binary("y_pred", y_pred)
    _same_length(y=yt, y_pred=yp)
    tp = int(np.count_nonzero((yt == 1) & (yp == 1)))
    fp = int(np.count_nonzero((yt == 0) & (yp == 1)))
    fn = int(np.count_nonzero((yt == 1) & (yp == 0)))
    n_pred = tp + fp
    n_true = tp + fn
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    f1_den = 2 * tp + fp + fn
    f1 = 2 * tp / f1_den if f1_den else 0.0
    return {
        "f1_buy": float(f1),
        "precision_buy": float(precision),
        "recall_buy": float(recall),
        "n_pred_buy": n_pred,
        "n_true_buy": n_true,
        "n": int(yt.shape[0]),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision_zero_division": n_pred == 0,
        "recall_zero_division": n_true == 0,
        "f1_zero_division": f1_den == 0,
    }


def fit_buy_threshold(prob: ArrayLike, y: ArrayLike, grid: ArrayLike | None = None) -> float:
    """BUY threshold ``t`` (predict BUY when ``prob >= t``) maximising f1_buy (spec 7.2).

    Fit on the calibration block, never on the test block (ADR-15). Candidates are the
    distinct values of ``prob`` (every achievable split of the rows) unless ``grid`` is
    given. Ties go to the **higher** threshold: among equally good cut-offs the one that
    trades less is preferred (fewer fees, and more conservative out of sample). With no
    positive in ``y`` every candidate scores 0 and the highest candidate is returned.
    Exact for all candidates at once: O(n log n) via a sort and cumulative counts.
    """
    p = _probabilities("prob", prob)
    yt = _binary("y", y)
    _same_length(prob=p, y=yt)
    if p.shape[0] == 0:
        raise ValueError("prob must not be empty")
    if grid is None:
        candidates = np.unique(p)
    else:
        candidates = np.unique(np.asarray(grid, dtype=np.float64))
        if candidates.size == 0 or not np.isfinite(candidates).all():
            raise ValueError(f"grid must be a non-empty array of finite values, got {grid!r}")
    order = np.argsort(p, kind="stable")
    sorted_p = p[order]
    # positives with prob >= t: total minus positives strictly below t
    cum_pos = np.concatenate(([0], np.cumsum(yt[order], dtype=np.int64)))
    below = np.searchsorted(sorted_p, candidates, side="left")
    n_pos = int(cum_pos[-1])
    tp = n_pos - cum_pos[below]
    n_pred = p.shape[0] - below
    f1 = np.divide(
        2.0 * tp, n_pred + n_pos, out=np.zeros(candidates.shape), where=n_pred + n_pos > 0
    )
    best = np.flatnonzero(f1 == f1.max())
    return float(candidates[best[-1]])


#: fewest calibration-block trades a trading threshold may rest on: below ~30 trades the mean
#: net return per trade is too noisy to tell a positive edge from luck (its standard error is
#: about 1/sqrt(30) = 18% of the per-trade volatility)
MIN_TRADES_TRADING = 30
#: smallest share of the calibration block's hours a trading threshold must trade in. Two
#: reasons. (1) Maximising the mean net return per trade favours the fewest trades the floor
#: allows: with 30 trades on a 4,346-hour calibration block (a champion's, 20 % of the
#: history) the champions traded in 0.7 % of hours, ~0.2 trades a day. (2) The production
#: guard judges a live model on its trades (the P1 rule needs >= 10 trades within 48 h, or
#: its last 10 within 7 days: :mod:`cvn_assets.guard.drift`); a model trading 0.2 times a day could
#: lose money for weeks before any rule had the trades to see it. At 10 % of hours (~2.4
#: signals a day) its last 10 trades fit in about 5 days. Measured on the drill's market
#: (edge 2.0): the focal champions then trade 51-73 times in 20 days per crypto, mean net
#: +0.1 to +0.3 % on four cryptos of five.
MIN_TRADE_SHARE = 0.10


def trading_min_trades(n_rows: int, share: float = MIN_TRADE_SHARE) -> int:
    """Fewest trades a trading threshold fitted on ``n_rows`` calibration rows may rest on:
    ``max(MIN_TRADES_TRADING, ceil(share * n_rows))`` (see :data:`MIN_TRADE_SHARE`).
    Raises ``ValueError`` for a negative ``n_rows`` or a ``share`` outside [0, 1]."""
    if isinstance(n_rows, bool) or int(n_rows) != n_rows or n_rows < 0:
        raise ValueError(f"n_rows must be an integer >= 0, got {n_rows!r}")
    if not (isinstance(share, (int, float)) and 0.0 <= share <= 1.0):
        raise ValueError(f"share must be a number in [0, 1], got {share!r}")
    return max(MIN_TRADES_TRADING, math.ceil(share * int(n_rows)))


def fit_trading_threshold(
    prob: ArrayLike,
    realized_return: ArrayLike,
    fee_per_side: float,
    min_trades: int = MIN_TRADES_TRADING,
) -> float | None:
    """BUY threshold maximising the mean **net** return per trade after fees, or ``None``.

    A second threshold beside :func:`fit_buy_threshold` (which maximises f1_buy and trades in
    most hours): this one is for trading. Fit on the calibration block. For a candidate
    ``t`` (every distinct value of ``prob``), the trades are the rows with ``prob >= t`` and
    their mean net return is ``mean(realized_return - 2 * fee_per_side)``; only candidates
    with at least ``min_trades`` trades count. Ties go to the higher threshold (fewer trades).
    Returns ``None`` -- do not trade -- when no candidate has a positive mean net return (or
    none has ``min_trades`` trades). O(n log n) via a sort and cumulative sums.

    Raises ``ValueError`` naming the field for mismatched lengths, probabilities outside
    [0, 1], non-finite returns, a negative fee or ``min_trades < 1``.
    """
    p = _probabilities("prob", prob)
    r = np.asarray(realized_return, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError(f"realized_return must be 1-D, got shape {r.shape}")
    _same_length(prob=p, realized_return=r)
    if not np.isfinite(r).all():
        i = int(np.flatnonzero(~np.isfinite(r))[0])
        raise ValueError(f"realized_return[{i}] = {r[i].item()!r} is not finite")
    fee = float(fee_per_side)
    if not (np.isfinite(fee) and fee >= 0):
        raise ValueError(f"fee_per_side must be a finite number >= 0, got {fee_per_side!r}")
    if isinstance(min_trades, bool) or int(min_trades) != min_trades or min_trades < 1:
        raise ValueError(f"min_trades must be an integer >= 1, got {min_trades!r}")
    if p.shape[0] == 0:
        return None
    order = np.argsort(-p, kind="stable")  # descending probability
    sp, net = p[order], r[order] - 2.0 * fee
    cum_net = np.cumsum(net)
    # the trades of threshold sp[k] are every row with prob >= sp[k]: up to the last index of
    # sp[k]'s tie group in descending order
    last_of_group = np.flatnonzero(np.concatenate((sp[1:] != sp[:-1], [True])))
    n = last_of_group + 1
    mean_net = cum_net[last_of_group] / n
    ok = n >= min_trades
    if not ok.any():
        return None
    best = np.max(mean_net[ok])
    if not best > 0.0:
        return None
    # ties: the highest threshold, i.e. the first group in descending order
    k = int(np.flatnonzero(ok & (mean_net == best))[0])
    return float(sp[last_of_group[k]])


def log_loss(prob: ArrayLike, y: ArrayLike, eps: float = 1e-15) -> float:
    """Mean binary cross-entropy of P(BUY) with probabilities clipped to ``[eps, 1 - eps]``."""
    p = _probabilities("prob", prob)
    yt = _binary("y", y)
    _same_length(prob=p, y=yt)
    if p.shape[0] == 0:
        raise ValueError("prob must not be empty")
    if not 0.0 < eps < 0.5:
        raise ValueError(f"eps must be in (0, 0.5), got {eps!r}")
    pc = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(np.where(yt == 1, np.log(pc), np.log1p(-pc))))


def trade_returns(
    y_pred: ArrayLike, realized_return: ArrayLike, fee_per_side: float
) -> NDArray[np.float64]:
    """Net return per row: ``realized_return - 2 * fee_per_side`` where BUY, 0 elsewhere.

    ``realized_return`` is the gross return of a long entered at the row's close (the
    label's ``ret`` column: +take-profit, -stop-loss or the time-out return).
    """
    yp = _binary("y_pred", y_pred)
    r = np.asarray(realized_return, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError(f"realized_return must be 1-D, got shape {r.shape}")
    _same_length(y_pred=yp, realized_return=r)
    fee = float(fee_per_side)
    if not (np.isfinite(fee) and fee >= 0):
        raise ValueError(f"fee_per_side must be a finite number >= 0, got {fee_per_side!r}")
    traded = yp == 1
    if not np.isfinite(r[traded]).all():
        i = int(np.flatnonzero(traded & ~np.isfinite(r))[0])
        raise ValueError(f"realized_return[{i}] = {r[i].item()!r} is not finite on a BUY row")
    return np.where(traded, r - 2.0 * fee, 0.0)


def trade_expectancy(
    y_pred: ArrayLike, realized_return: ArrayLike, fee_per_side: float
) -> tuple[float, int]:
    """(mean net return per trade, number of trades); (0.0, 0) when nothing is traded."""
    net = trade_returns(y_pred, realized_return, fee_per_side)
    traded = _binary("y_pred", y_pred) == 1
    n = int(np.count_nonzero(traded))
    return (float(net[traded].mean()) if n else 0.0), n
