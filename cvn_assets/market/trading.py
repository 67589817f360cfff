"""Trade simulation with gap-aware fills, shared by labels' returns and (later) paper trading.

Pure: no Dagster, NumPy in and out. This module holds the one rule by which a long position
with a take-profit and a stop-loss barrier is filled on a candle -- the triple-barrier method of
Lopez de Prado, *Advances in Financial Machine Learning* (AFML), ch. 3.4, restricted to a long
entry with asymmetric horizontal barriers. Every place in the code base that simulates a trade
(today :func:`cvn_assets.market.labels.triple_barrier_labels`, whose ``ret`` column feeds
``metrics.trade_returns``, the expectancy and the PBO returns) goes through
:func:`bar_fills` / :func:`simulate_long_trades`, so all of them agree.

The fill rule, for a long entered at price ``e`` with barriers ``up = e * (1 + take_profit)`` and
``down = e * (1 - stop_loss)``, on one candle ``(open, high, low)``:

1. **Gap beyond a barrier.** A candle that *opens* at or beyond a barrier decides the trade at
   its open, and the order fills at the open (a resting stop or take-profit order is triggered by
   the first trade, which is the open). ``open <= down`` is a stop (``"sl"``) with gross return
   ``(open - e) / e <= -stop_loss``; ``open >= up`` is a take-profit (``"tp"``) with
   ``(open - e) / e >= take_profit``. Nothing later in the candle matters, so this is never a tie.
   This happens after an exchange outage, but also between two consecutive hourly candles whose
   open differs from the previous close.
2. **Open between the barriers.** The barrier price is reached intra-candle and the order fills
   at the barrier: ``high >= up`` only is a take-profit at exactly ``+take_profit``; ``low <= down``
   only is a stop at exactly ``-stop_loss``. When the candle touches both, the order inside it is
   unknown and the stop is assumed first (pessimistic: a BUY must be achievable): ``"sl"`` at
   ``-stop_loss`` with ``tie = True``.
3. **No touch.** The candle leaves the trade open; after ``horizon`` candles the vertical barrier
   closes it at the close of the last candle, return ``(close - e) / e`` (``"time"``).

Returns are gross (no fees; :func:`cvn_assets.ablation.metrics.trade_returns` applies them) and
computed as ``(exit - e) / e`` rather than ``exit / e - 1``: the subtraction is exact for nearby
prices, so an entry of 100 filled at 97 gives exactly ``-0.03``. A gap fill's return is clamped to
at least the barrier's size (``max(take_profit, .)`` / ``min(-stop_loss, .)``) so that an open
exactly at the barrier price returns exactly the barrier, as the intra-candle fill at that price
would.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "BarFills",
    "TradeOutcomes",
    "bar_fills",
    "check_barriers",
    "simulate_long_trades",
]


def _is_real(x: object) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(float(x))


def check_barriers(take_profit: float, stop_loss: float, horizon: int | None = None) -> None:
    """Validate barrier sizes (fractions: 0.01 is 1 %) and, if given, a horizon in candles.

    Raises ``ValueError`` naming the parameter and quoting the value: ``take_profit`` not a finite
    number > 0, ``stop_loss`` not in the open interval (0, 1) (a long cannot lose more than its
    stake, so a stop at 100 % or more could never be touched), ``horizon`` not an integer >= 1.
    """
    if not (_is_real(take_profit) and take_profit > 0):
        raise ValueError(f"take_profit must be a finite fraction > 0, got {take_profit!r}")
    if not (_is_real(stop_loss) and 0 < stop_loss < 1):
        raise ValueError(f"stop_loss must be a fraction in (0, 1), got {stop_loss!r}")
    if horizon is not None and (
        isinstance(horizon, bool) or not isinstance(horizon, numbers.Integral) or horizon < 1
    ):
        raise ValueError(f"horizon must be an integer >= 1 (candles), got {horizon!r}")


def _prices(name: str, values: ArrayLike) -> NDArray[np.float64]:
    """1-D float64 array of positive finite prices, or a ValueError naming the array and index."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    bad = ~(np.isfinite(arr) & (arr > 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name}[{i}] = {float(arr[i])!r} is not a positive finite price")
    return arr


@dataclass(frozen=True)
class BarFills:
    """What one candle does to open long positions; every array has the entries' shape ``(m,)``.

    ``take_profit`` / ``stop_loss``: the candle closes the position at that barrier (mutually
    exclusive). ``gap``: it did so at its open because it opened at or beyond the barrier.
    ``tie``: it opened between the barriers and touched both (counted as a stop, never with
    ``gap``). ``ret``: the gross return of the fill as a fraction of the entry price, NaN where the
    candle leaves the position open.
    """

    take_profit: NDArray[np.bool_]
    stop_loss: NDArray[np.bool_]
    gap: NDArray[np.bool_]
    tie: NDArray[np.bool_]
    ret: NDArray[np.float64]

    @property
    def filled(self) -> NDArray[np.bool_]:
        """Positions this candle closes (``take_profit | stop_loss``)."""
        return self.take_profit | self.stop_loss


def bar_fills(
    entry: ArrayLike,
    open_: ArrayLike,
    high: ArrayLike,
    low: ArrayLike,
    take_profit: float,
    stop_loss: float,
) -> BarFills:
    """Apply the gap-aware fill rule (module docstring; AFML ch. 3.4) to one candle per position.

    ``entry``, ``open_``, ``high``, ``low``: prices (any unit, the same for all four), arrays of
    one common shape ``(m,)`` or scalars broadcast to it; element ``j`` is position ``j``'s entry
    price and the candle it is tested against. ``take_profit`` and ``stop_loss`` are fractions of
    the entry (0.01 is 1 %). The candle is assumed consistent (``low <= open <= high``, as
    :mod:`cvn_assets.market.candles_io` guarantees); it is not re-checked here, so the caller
    decides which positions are still open.

    Raises ``ValueError`` for bad barriers (see :func:`check_barriers`) or arrays that do not
    broadcast to one 1-D shape. Vectorized: O(m).
    """
    check_barriers(take_profit, stop_loss)
    try:
        e, o, h, lo = np.broadcast_arrays(
            *(np.atleast_1d(np.asarray(a, dtype=np.float64)) for a in (entry, open_, high, low))
        )
    except ValueError as exc:
        raise ValueError(f"entry, open, high and low must have one common shape: {exc}") from None
    if e.ndim != 1:
        raise ValueError(f"entry, open, high and low must be 1-D, got shape {e.shape}")
    up = e * (1.0 + take_profit)
    down = e * (1.0 - stop_loss)
    gap_sl = o <= down
    gap_tp = o >= up  # disjoint from gap_sl: down < e < up for positive prices
    inside = ~(gap_sl | gap_tp)
    touch_tp = inside & (h >= up)
    touch_sl = inside & (lo <= down)
    is_sl = gap_sl | touch_sl
    is_tp = gap_tp | (touch_tp & ~touch_sl)
    gap_ret = (o - e) / e
    ret = np.where(
        gap_tp,
        np.maximum(gap_ret, take_profit),
        np.where(
            gap_sl,
            np.minimum(gap_ret, -stop_loss),
            np.where(touch_sl, -stop_loss, np.where(is_tp, take_profit, np.nan)),
        ),
    )
    return BarFills(
        take_profit=is_tp,
        stop_loss=is_sl,
        gap=gap_sl | gap_tp,
        tie=touch_sl & touch_tp,
        ret=ret,
    )


@dataclass(frozen=True)
class TradeOutcomes:
    """Outcome of one long per entry candle; every array has shape ``(m,)``, ``m = n - horizon``.

    ``take_profit`` / ``stop_loss``: closed at that barrier (mutually exclusive; neither means the
    vertical barrier closed it). ``gap``: the closing candle opened at or beyond the barrier and
    the fill was at its open. ``tie``: the closing candle touched both barriers (stop assumed
    first). ``ret``: gross return as a fraction of the entry price. ``exit_offset``: candles after
    the entry at which the trade closed, in ``1 .. horizon`` (``horizon`` for a time-out).
    """

    take_profit: NDArray[np.bool_]
    stop_loss: NDArray[np.bool_]
    gap: NDArray[np.bool_]
    tie: NDArray[np.bool_]
    ret: NDArray[np.float64]
    exit_offset: NDArray[np.int64]

    @property
    def barrier(self) -> NDArray[np.str_]:
        """``"tp"``, ``"sl"`` or ``"time"`` per entry."""
        return np.where(self.take_profit, "tp", np.where(self.stop_loss, "sl", "time"))


def simulate_long_trades(
    open_: ArrayLike,
    high: ArrayLike,
    low: ArrayLike,
    close: ArrayLike,
    take_profit: float,
    stop_loss: float,
    horizon: int,
) -> TradeOutcomes:
    """Simulate a long entered at every candle's close, with triple barriers (AFML ch. 3.4).

    Inputs are the ``n`` candles' prices as 1-D arrays of equal length ``n`` (any one currency),
    in time order; bars are positional, so across an exchange outage the next ``horizon`` candles
    are the next ``horizon`` rows. For entry ``i`` in ``0 .. n - horizon - 1`` (the last
    ``horizon`` candles cannot complete a trade and get none) at ``close[i]``, candles
    ``i + 1 .. i + horizon`` are scanned in order with :func:`bar_fills`; the first that fills
    decides. With no fill the trade is closed at ``close[i + horizon]``.

    Raises ``ValueError`` for bad barriers or horizon (:func:`check_barriers`), arrays that are
    not 1-D, of unequal lengths, with ``n <= horizon`` or holding a price that is not positive and
    finite (the message names the array and index). Vectorized over entries with a loop over the
    ``horizon`` offsets only: O(n * horizon) time, O(n) memory.
    """
    check_barriers(take_profit, stop_loss, horizon)
    o = _prices("open", open_)
    h = _prices("high", high)
    lo = _prices("low", low)
    c = _prices("close", close)
    n = len(c)
    if not (len(o) == len(h) == len(lo) == n):
        raise ValueError(
            f"open, high, low and close must have equal lengths, got "
            f"{len(o)}, {len(h)}, {len(lo)} and {n}"
        )
    if n <= horizon:
        raise ValueError(
            f"need more than horizon={horizon} candles to simulate any trade, got {n} rows"
        )

    m = n - horizon
    entry = c[:m]
    open_pos = np.ones(m, dtype=bool)
    is_tp = np.zeros(m, dtype=bool)
    is_sl = np.zeros(m, dtype=bool)
    gap = np.zeros(m, dtype=bool)
    tie = np.zeros(m, dtype=bool)
    ret = (c[horizon:] - entry) / entry  # time-out unless a barrier fills first
    exit_offset = np.full(m, horizon, dtype=np.int64)
    for k in range(1, horizon + 1):
        f = bar_fills(entry, o[k : k + m], h[k : k + m], lo[k : k + m], take_profit, stop_loss)
        new = open_pos & f.filled
        is_tp |= new & f.take_profit
        is_sl |= new & f.stop_loss
        gap |= new & f.gap
        tie |= new & f.tie
        ret[new] = f.ret[new]
        exit_offset[new] = k
        open_pos &= ~new
    return TradeOutcomes(
        take_profit=is_tp,
        stop_loss=is_sl,
        gap=gap,
        tie=tie,
        ret=ret,
        exit_offset=exit_offset,
    )
