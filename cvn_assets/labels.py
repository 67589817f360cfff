"""Triple-barrier labels for the BUY classifier (pure: no Dagster).

The label strategy ``SL<stop %>_TP<take-profit %>_H<horizon candles>`` (default ``SL0.5_TP1_H4``)
is the triple-barrier method of Lopez de Prado, *Advances in Financial Machine Learning* (AFML),
ch. 3.4, restricted to a long entry and with the sides asymmetric: a position entered at the close
of candle ``i`` is marked BUY (1) only when the upper barrier ``entry * (1 + take_profit)`` is
touched by a later candle's high before the lower barrier ``entry * (1 - stop_loss)`` is touched
by a low, within ``horizon`` candles. The vertical barrier ``t1`` (AFML ch. 3.3, 7.4) drives the
purging of the cross-validation in :mod:`cvn_assets.folds`.
"""

import math
import numbers
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

LABEL_COLUMNS: tuple[str, ...] = ("label", "t1", "ret", "barrier", "tie")

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


def _is_real(x: object) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(float(x))


def _check_barriers(take_profit: float, stop_loss: float, horizon: int) -> None:
    if not (_is_real(take_profit) and take_profit > 0):
        raise ValueError(f"take_profit must be a finite fraction > 0, got {take_profit!r}")
    if not (_is_real(stop_loss) and 0 < stop_loss < 1):
        raise ValueError(f"stop_loss must be a fraction in (0, 1), got {stop_loss!r}")
    if isinstance(horizon, bool) or not isinstance(horizon, numbers.Integral) or horizon < 1:
        raise ValueError(f"horizon must be an integer >= 1 (candles), got {horizon!r}")


def triple_barrier_labels(
    candles: pd.DataFrame,
    take_profit: float = 0.01,
    stop_loss: float = 0.005,
    horizon: int = 4,
) -> pd.DataFrame:
    """Label every candle with the outcome of a long entered at its close (AFML ch. 3.4).

    For row ``i``: entry ``e = close[i]``; candles ``i+1 .. i+horizon`` are scanned in order;
    the take-profit is touched when ``high >= e * (1 + take_profit)``, the stop when
    ``low <= e * (1 - stop_loss)``. The first candle touching either decides. When one candle
    touches both, the order inside the candle is unknown and the stop is assumed first
    (pessimistic: a BUY label must be achievable); such rows have ``tie = True`` and their share is
    in ``attrs["tie_share"]``. With no touch the vertical barrier ends the trade (label 0).

    Columns: ``label`` (int8, 1 = BUY only when the take-profit came first), ``t1`` (open time of
    candle ``i+horizon``: the vertical barrier, a superset of the first touch, so purging on it is
    never too weak -- AFML ch. 7.4.1), ``ret`` (gross return of the long: ``+take_profit``,
    ``-stop_loss``, or ``close[i+horizon]/close[i] - 1`` at the time-out), ``barrier``
    (``"tp" | "sl" | "time"``) and ``tie`` (bool). The last ``horizon`` candles cannot be labelled
    and are dropped.

    Bars are positional: across an exchange gap, "the next 4 candles" are the next 4 rows even if
    they span more than 4 hours (the candles that exist are the trades that could have been made).
    The computation is vectorized over rows with a loop over the ``horizon`` offsets only: O(n*h).
    """
    _check_barriers(take_profit, stop_loss, horizon)
    if not isinstance(candles, pd.DataFrame):
        raise TypeError(f"candles must be a DataFrame, got {type(candles).__name__}")
    missing = [c for c in ("high", "low", "close") if c not in candles.columns]
    if missing:
        raise ValueError(f"candles are missing column(s) {missing} needed for labels")
    n = len(candles)
    if n <= horizon:
        raise ValueError(
            f"need more than horizon={horizon} candles to produce any label, got {n} rows"
        )
    high = candles["high"].to_numpy(dtype=np.float64)
    low = candles["low"].to_numpy(dtype=np.float64)
    close = candles["close"].to_numpy(dtype=np.float64)
    for name, arr in (("high", high), ("low", low), ("close", close)):
        bad = ~np.isfinite(arr) | (arr <= 0)
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"candles column {name!r} row {pos} (open_time {candles.index[pos]}): "
                f"value {arr[pos]!r} is not a positive finite price"
            )

    m = n - horizon
    entry = close[:m]
    up = entry * (1.0 + take_profit)
    down = entry * (1.0 - stop_loss)
    decided = np.zeros(m, dtype=bool)
    is_tp = np.zeros(m, dtype=bool)
    is_sl = np.zeros(m, dtype=bool)
    tie = np.zeros(m, dtype=bool)
    for k in range(1, horizon + 1):
        hit_tp = high[k : k + m] >= up
        hit_sl = low[k : k + m] <= down
        new_sl = ~decided & hit_sl
        new_tp = ~decided & hit_tp & ~hit_sl
        tie |= new_sl & hit_tp
        is_sl |= new_sl
        is_tp |= new_tp
        decided |= new_sl | new_tp

    timeout_ret = close[horizon:] / entry - 1.0
    ret = np.where(is_tp, take_profit, np.where(is_sl, -stop_loss, timeout_ret))
    barrier = np.where(is_tp, "tp", np.where(is_sl, "sl", "time"))
    out = pd.DataFrame(
        {
            "label": is_tp.astype(np.int8),
            "t1": candles.index[horizon:],
            "ret": ret.astype(np.float64),
            "barrier": pd.array(barrier, dtype="str"),
            "tie": tie,
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
            "n_ties": int(tie.sum()),
            "tie_share": float(tie.mean()),
        }
    )
    return out


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
