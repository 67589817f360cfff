"""Triple-barrier labels for the BUY classifier (pure: no Dagster).

The label strategy ``SL<stop %>_TP<take-profit %>_H<horizon candles>`` (default ``SL0.5_TP1_H4``)
is the triple-barrier method of Lopez de Prado, *Advances in Financial Machine Learning* (AFML),
ch. 3.4, restricted to a long entry and with the sides asymmetric: a position entered at the close
of candle ``i`` is marked BUY (1) only when the upper barrier ``entry * (1 + take_profit)`` is
reached (a later candle opens at or above it, or its high touches it) before the lower barrier
``entry * (1 - stop_loss)`` is, within ``horizon`` candles. Fills and realized returns follow the
gap-aware rule of :mod:`cvn_assets.market.trading`: a candle opening beyond a barrier fills at its
open. The vertical barrier ``t1`` (AFML ch. 3.3, 7.4) drives the purging of the cross-validation in
:mod:`cvn_assets.market.folds`.
"""

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cvn_assets.market.trading import TradeOutcomes, check_barriers, simulate_long_trades

LABEL_COLUMNS: tuple[str, ...] = ("label", "t1", "ret", "barrier", "tie")
_PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")

_NUM = r"[0-9]+(?:\.[0-9]+)?"
_STRATEGY_RE = re.compile(rf"SL(?P<sl>{_NUM})_TP(?P<tp>{_NUM})_H(?P<h>[0-9]+)")


@dataclass(frozen=True)
class LabelStrategy:
    """Barriers of a triple-barrier label, as fractions (0.005 is 0.5 %) and candles."""

    stop_loss: float
    take_profit: float
    horizon: int

    @property
    def name(self) -> str:
        """The canonical strategy string, e.g. ``SL0.5_TP1_H4`` (round-trips through parsing)."""
        return f"SL{_pct_text(self.stop_loss)}_TP{_pct_text(self.take_profit)}_H{self.horizon}"


def _pct_text(fraction: float) -> str:
    return f"{round(fraction * 100, 10):g}"


def parse_label_strategy(s: str) -> LabelStrategy:
    """Parse ``"SL0.5_TP1_H4"`` into ``LabelStrategy(0.005, 0.01, 4)`` (stop, take-profit, H).

    SL and TP are percentages of the entry price, H a number of candles. Refused with a message
    quoting the value: anything not matching ``SL<num>_TP<num>_H<int>`` exactly, zero values, and a
    stop-loss of 100 % or more (a long cannot lose more than its stake, so such a barrier could
    never be touched).
    """
    if not isinstance(s, str):
        raise ValueError(f"label strategy must be a string like 'SL0.5_TP1_H4', got {s!r}")
    m = _STRATEGY_RE.fullmatch(s.strip())
    if m is None:
        raise ValueError(
            f"malformed label strategy {s!r}: expected 'SL<stop %>_TP<take-profit %>_H<candles>' "
            f"with positive numbers, e.g. 'SL0.5_TP1_H4'"
        )
    sl_pct, tp_pct, horizon = float(m["sl"]), float(m["tp"]), int(m["h"])
    if sl_pct <= 0:
        raise ValueError(f"label strategy {s!r}: stop-loss SL must be > 0 %, got {m['sl']}")
    if sl_pct >= 100:
        raise ValueError(f"label strategy {s!r}: stop-loss SL must be < 100 %, got {m['sl']}")
    if tp_pct <= 0:
        raise ValueError(f"label strategy {s!r}: take-profit TP must be > 0 %, got {m['tp']}")
    if horizon <= 0:
        raise ValueError(f"label strategy {s!r}: horizon H must be >= 1 candle, got {m['h']}")
    return LabelStrategy(stop_loss=sl_pct / 100.0, take_profit=tp_pct / 100.0, horizon=horizon)


def triple_barrier_labels(
    candles: pd.DataFrame,
    take_profit: float = 0.01,
    stop_loss: float = 0.005,
    horizon: int = 4,
) -> pd.DataFrame:
    """Label every candle with the outcome of a long entered at its close (AFML ch. 3.4).

    ``candles``: a DataFrame indexed by open time with positive finite prices in columns ``open``,
    ``high``, ``low`` and ``close`` (other columns are ignored). ``take_profit`` and ``stop_loss``
    are fractions of the entry price (0.01 is 1 %), ``horizon`` a number of candles.

    For row ``i``: entry ``e = close[i]``, barriers ``up = e * (1 + take_profit)`` and
    ``down = e * (1 - stop_loss)``; candles ``i+1 .. i+horizon`` are scanned in order and the
    first one that fills decides, by the gap-aware rule of :mod:`cvn_assets.market.trading` (the one
    rule shared by everything that simulates a trade):

    * a candle that *opens* at or beyond a barrier fills at its open: ``open <= down`` is a stop
      with ``ret = (open - e) / e <= -stop_loss``, ``open >= up`` a take-profit with
      ``ret = (open - e) / e >= take_profit`` (a gap, e.g. after an exchange outage; never a tie);
    * a candle opening between the barriers fills at the barrier it touches: ``high >= up`` is a
      take-profit at ``ret = +take_profit``, ``low <= down`` a stop at ``ret = -stop_loss``; when
      it touches both, the order inside the candle is unknown and the stop is assumed first
      (pessimistic: a BUY label must be achievable): ``"sl"``, ``ret = -stop_loss``, ``tie = True``;
    * with no fill the vertical barrier ends the trade: ``ret = (close[i+horizon] - e) / e``.

    Returns a DataFrame indexed by the entry candles' open times (the last ``horizon`` candles
    cannot be labelled and are dropped, so ``len(candles) - horizon`` rows) with columns
    ``label`` (int8, 1 = BUY only when the take-profit came first), ``t1`` (open time of candle
    ``i+horizon``: the vertical barrier, a superset of the first touch, so purging on it is never
    too weak -- AFML ch. 7.4.1), ``ret`` (float64, the realized gross return of the long as a
    fraction of ``e``, fees not included: what ``metrics.trade_returns``, the expectancy and the
    PBO returns consume), ``barrier`` (``"tp" | "sl" | "time"``) and ``tie`` (bool). ``attrs``
    carry the barriers, ``buy_rate``, ``n_ties``/``tie_share`` and ``n_gap_fills``/
    ``gap_fill_share`` (trades decided at a gap open).

    Bars are positional: across an exchange gap, "the next 4 candles" are the next 4 rows even if
    they span more than 4 hours (the candles that exist are the trades that could have been made);
    the first candle after the outage fills at its open if that is beyond a barrier.

    Raises ``ValueError`` for bad barriers or horizon, a missing price column, ``horizon`` or
    fewer rows, or a price that is not positive and finite (naming column, row, open time and
    value); ``TypeError`` if ``candles`` is not a DataFrame. Vectorized over rows with a loop over
    the ``horizon`` offsets only: O(n*h).
    """
    check_barriers(take_profit, stop_loss, horizon)
    prices = _checked_prices(candles, horizon)
    trades = simulate_long_trades(
        prices["open"],
        prices["high"],
        prices["low"],
        prices["close"],
        take_profit=take_profit,
        stop_loss=stop_loss,
        horizon=horizon,
    )
    return _label_frame(candles, trades, take_profit, stop_loss, horizon)


def _label_frame(
    candles: pd.DataFrame,
    trades: TradeOutcomes,
    take_profit: float,
    stop_loss: float,
    horizon: int,
) -> pd.DataFrame:
    """The labels of :func:`triple_barrier_labels` from the simulated ``trades`` (one per
    entry candle, :func:`cvn_assets.market.trading.simulate_long_trades`), with its attrs."""
    m = len(candles) - horizon
    is_tp = trades.take_profit
    out = pd.DataFrame(
        {
            "label": is_tp.astype(np.int8),
            "t1": candles.index[horizon:],
            "ret": trades.ret.astype(np.float64),
            "barrier": pd.array(trades.barrier, dtype="str"),
            "tie": trades.tie,
        },
        index=candles.index[:m],
    )
    out.attrs.update(
        {
            "take_profit": float(take_profit),
            "stop_loss": float(stop_loss),
            "horizon": int(horizon),
            "n_labels": int(m),
            "n_dropped_tail": int(horizon),
            "buy_rate": float(is_tp.mean()),
            "n_ties": int(trades.tie.sum()),
            "tie_share": float(trades.tie.mean()),
            "n_gap_fills": int(trades.gap.sum()),
            "gap_fill_share": float(trades.gap.mean()),
        }
    )
    return out


def _checked_prices(candles: pd.DataFrame, horizon: int) -> dict[str, np.ndarray]:
    """The price columns as float64 arrays, after the checks of
    :func:`triple_barrier_labels` (a DataFrame, every price column, more than ``horizon`` rows,
    positive finite prices)."""
    if not isinstance(candles, pd.DataFrame):
        raise TypeError(f"candles must be a DataFrame, got {type(candles).__name__}")
    missing = [c for c in _PRICE_COLUMNS if c not in candles.columns]
    if missing:
        raise ValueError(f"candles are missing column(s) {missing} needed for labels")
    n = len(candles)
    if n <= horizon:
        raise ValueError(
            f"need more than horizon={horizon} candles to produce any label, got {n} rows"
        )
    prices = {name: candles[name].to_numpy(dtype=np.float64) for name in _PRICE_COLUMNS}
    for name, arr in prices.items():
        bad = ~np.isfinite(arr) | (arr <= 0)
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"candles column {name!r} row {pos} (open_time {candles.index[pos]}): "
                f"value {arr[pos]!r} is not a positive finite price"
            )
    return prices


def labels_for_strategy(candles: pd.DataFrame, strategy: str | LabelStrategy) -> pd.DataFrame:
    """:func:`triple_barrier_labels` for a strategy string such as ``"SL0.5_TP1_H4"``."""
    strat = parse_label_strategy(strategy) if isinstance(strategy, str) else strategy
    out = triple_barrier_labels(
        candles,
        take_profit=strat.take_profit,
        stop_loss=strat.stop_loss,
        horizon=strat.horizon,
    )
    out.attrs["strategy"] = strat.name
    return out
