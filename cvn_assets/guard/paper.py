"""Paper trading: replay hourly candles through the live model, as the production guard does.

Pure: no Dagster, typed, pandas/NumPy in and out. For every hourly candle after the champion's
training window, the replay takes the candle's causal features
(:func:`cvn_assets.market.features.build_features`), the model live at that hour, its ``buy_proba``
and the decision, and trades a long on BUY with the label strategy's barriers, filled by the
one gap-aware fill rule of :mod:`cvn_assets.market.trading`. It writes two journal tables:

``predictions`` (:data:`PREDICTION_COLUMNS`), one row per candle of the replayed days:
    ``crypto``; ``hour`` (the candle's open time, UTC; the decision is taken at its close);
    ``model_version`` and ``loss_function`` of the model live at that hour; ``buy_proba``;
    ``decision``: the model's **signal**, ``"BUY"`` when ``buy_proba >= trading_threshold`` and
    ``"HOLD"`` otherwise (always ``"HOLD"`` when the threshold is ``None``: never trade). It
    is what the model said, whether or not a trade was opened: a BUY during an open position
    or while trading is halted is logged as ``"BUY"`` and opens nothing. The hour of a BUY that
    did open a trade is the ``entry_time`` of a ``trades`` row. ``latency_ms``: the per-decision
    latency of that model version as a live system sees it
    (:func:`cvn_assets.guard.live_model.measure_latency`), passed in by the caller
    (``latency_ms=``), NaN when not measured.
    What the drift detectors read (they never recompute features or labels from candles):
    ``feature_1`` .. ``feature_5``: the values at that hour of the live model's
    :attr:`cvn_assets.guard.live_model.LiveModel.top_features` (its top features by gain, in
    that order; NaN past the number it records). ``label`` (nullable Int8, 0/1) and
    ``label_known_at``: the hour's
    triple-barrier label exactly as :func:`cvn_assets.market.labels.triple_barrier_labels` defines
    it for a long entered at the candle's close, and when it became known: the close (open time
    + 1 h) of the candle in which it resolved -- the first barrier fill, or the ``horizon``-th
    candle for a time-out; NA / NaT while it is unresolved with the candles given (a label
    needs the candles after the hour: the only use of candles past the replayed days).
    Shadow mode, the ``candidate`` model live at that hour (``candidates=``): its version
    (``candidate_version``, nullable Int64), ``candidate_buy_proba`` and
    ``candidate_decision`` (its signal at its own trading threshold); NA where no candidate
    is live, and before the candidate's ``train_end`` (those hours are in its training data).
    A candidate never changes the champion's decisions or trades.

``trades`` (:data:`TRADE_COLUMNS`), one row per closed trade:
    ``crypto``; ``entry_time`` / ``exit_time``: open times (UTC) of the entry candle (the long
    is bought at its close, ``entry_price``) and of the candle in which the exit filled
    (``exit_price``: its open for a gap or halt fill, the barrier price for a fill inside the
    candle, its close for a time-out) -- the project's convention, as ``labels``' index and
    ``t1``; ``barrier``: ``"tp"``, ``"sl"``, ``"time"`` or ``"halt"``; ``gross_return``: the
    fill rule's return, ``(exit - entry) / entry``; ``net_return = gross_return - 2 *
    fee_per_side`` (as :func:`cvn_assets.ablation.metrics.trade_returns`); ``model_version`` and
    ``loss_function`` of the model that decided the entry.

Rules, in the order they apply to each candle ``k`` (bars are positional, as in the labels:
across an exchange outage the next candle is the next one that exists):

1. **An open position meets candle k** by :func:`cvn_assets.market.trading.bar_fills`: a candle
   opening at or beyond a barrier fills at its open (gap), one touching a barrier inside fills
   at the barrier (both touched: the stop, pessimistic); with no fill after ``horizon`` candles
   the position is closed at the close of the ``horizon``-th (``"time"``). If trading was
   halted at the previous decision, the position is closed at candle k's **open** instead,
   barrier ``"halt"`` -- unless that open is at or beyond a barrier, where the resting
   take-profit / stop order fills first at the same open (``"tp"`` / ``"sl"``, the fill rule).
2. **The decision at candle k's close** (``hour`` = its open time): the prediction row is
   written. If ``halted(hour)``: no entry, and a position still open is closed at the next
   candle's open (rule 1). Otherwise a BUY with no open position opens a long at the close.
   One open position per crypto: a BUY during a position is logged, not traded. A position
   that exits during candle k is flat at its close, so a BUY at k opens the next one.

Day boundaries and journaling: a trade is journaled in the replay that processes its exit
candle -- the day it exits -- and a position still open after the last candle of the replayed
days is returned as :attr:`Replay.open_position` (a :class:`Position`), to be passed to the
replay of the next day. So a long bought at 23:00 exits with the next day's candles, in the
next day's replay; replaying days one by one with the position carried gives exactly the
journal of one replay over all of them (tested). A replay needs every candle of its days: if
``candles`` ends before the last hour of the last day, the day cannot be replayed yet and the
error names the missing hours (hours inside the data without a candle are an exchange outage:
no decision, no fill). Replays are pure functions of their inputs: replaying a day twice gives
identical frames.

Leakage: an hour before the live model's ``train_end`` (the end of its training window,
exclusive) is in its training data, so a replay window reaching it is refused, naming the hour
and ``train_end``. Decisions, trades and the carried position use only candles up to the
decision's close (candles after the replayed days feed ``label`` / ``label_known_at`` only,
which a consumer may use once ``label_known_at`` has passed; tested: extra future candles
change nothing else).

Speed: probabilities are computed in one vectorised ``predict_proba`` call per model version
(the decisions do not depend on earlier decisions; only the one-position rule does); the
outcome of a long entered at every candle by one vectorised
:func:`cvn_assets.market.trading.simulate_long_trades` (then moved to the next open after a halted
close); the one-position walk then jumps from trade to trade (next entry at or after the last
exit: one list lookup per trade, not a loop over hours), and the journal is built with array
operations. Only a carried position and the entries in a replay's last ``horizon`` candles are
walked candle by candle, with :func:`cvn_assets.market.trading.bar_fills`. Measured on the 2-core
machine: 2 years x 5 cryptos (87,600 decisions, ~42,000 trades, small real boosters) replayed
with one :func:`replay` per crypto in 0.08-0.13 s, 2-3.7x one batch ``predict_proba`` of the
same rows; day by day with :func:`replay_day` (3,650 calls) 13-25 s depending on the load,
4-7 ms per day, mostly pandas frame construction. Replay long windows with :func:`replay`.

Everything raises ``ValueError`` naming the field and the value on bad input, before any
prediction is made.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeAlias

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from cvn_assets.guard.live_model import (
    N_TOP_FEATURES,
    CandidateSchedule,
    CandidateSource,
    LiveModel,
    ModelSchedule,
    ModelSource,
    fmt_utc,
    is_int,
    is_real,
    utc_timestamp,
)
from cvn_assets.market.features import FEATURE_NAMES, WARMUP_BARS, build_features
from cvn_assets.market.trading import TradeOutcomes, bar_fills, check_barriers, simulate_long_trades

__all__ = [
    "BUY",
    "DEFAULT_FEE_PER_SIDE",
    "HOLD",
    "PREDICTION_COLUMNS",
    "TOP_FEATURE_COLUMNS",
    "TRADE_COLUMNS",
    "Position",
    "Replay",
    "hour_labels",
    "replay",
    "replay_day",
    "replay_hours",
]

BUY = "BUY"
HOLD = "HOLD"
DEFAULT_FEE_PER_SIDE = 0.001
"""0.1 % of the traded amount per side (entry and exit)."""

TOP_FEATURE_COLUMNS: tuple[str, ...] = tuple(f"feature_{i}" for i in range(1, N_TOP_FEATURES + 1))
PREDICTION_COLUMNS: tuple[str, ...] = (
    "crypto",
    "hour",
    "model_version",
    "loss_function",
    "buy_proba",
    "decision",
    "latency_ms",
    *TOP_FEATURE_COLUMNS,
    "label",
    "label_known_at",
    "candidate_version",
    "candidate_buy_proba",
    "candidate_decision",
)
TRADE_COLUMNS: tuple[str, ...] = (
    "crypto",
    "entry_time",
    "entry_price",
    "exit_time",
    "exit_price",
    "barrier",
    "gross_return",
    "net_return",
    "model_version",
    "loss_function",
)

_HOUR = pd.Timedelta(hours=1)
_DAY = pd.Timedelta(days=1)
_HOUR_NS = 3_600_000_000_000
_NAT = np.iinfo(np.int64).min  # NaT as int64 nanoseconds
_TS_UNIT = "us"  # the candle contract's resolution (cvn_assets.market.candles_io)
_TS_DTYPE = f"datetime64[{_TS_UNIT}, UTC]"
_PRICE_COLUMNS = ("open", "high", "low", "close")


# ---------------------------------------------------------------------------------------------
# small validators
# ---------------------------------------------------------------------------------------------
def _hour_timestamp(name: str, value: Any) -> pd.Timestamp:
    ts = utc_timestamp(name, value)
    if ts != ts.floor("h"):
        raise ValueError(f"{name} {value!r} is not on the hour (candles open at HH:00 UTC)")
    return ts


def _day(name: str, value: Any) -> pd.Timestamp:
    """A UTC calendar day as its 00:00 UTC instant: 'YYYY-MM-DD', a date, or midnight UTC."""
    if isinstance(value, bool) or not isinstance(value, (str, date, datetime, pd.Timestamp)):
        raise ValueError(f"{name} must be a UTC day such as '2024-06-03', got {value!r}")
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a UTC day such as '2024-06-03', got {value!r}") from None
    if pd.isna(ts):
        raise ValueError(f"{name} must be a UTC day such as '2024-06-03', got {value!r}")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    if ts != ts.normalize():
        raise ValueError(f"{name} {value!r} is not a day: expected 00:00 UTC, got {fmt_utc(ts)}")
    return ts


# ---------------------------------------------------------------------------------------------
# positions
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Position:
    """An open long carried from one replay to the next (one per crypto).

    ``entry_time``: open time of the candle at whose close it was bought (``entry_price``).
    ``bars_held``: candles applied after the entry candle (``0 .. horizon - 1``).
    ``last_hour``: open time of the last candle applied (``entry_time`` if ``bars_held == 0``);
    the next replay must start right after it (no candle skipped). ``close_at_next_open``:
    trading was halted at ``last_hour``'s decision, so the next candle's open closes it.
    """

    crypto: str
    entry_time: pd.Timestamp
    entry_price: float
    model_version: int
    loss_function: str
    bars_held: int
    last_hour: pd.Timestamp
    close_at_next_open: bool = False


@dataclass(frozen=True)
class Replay:
    """Journal rows of a replay and the position still open after its last candle."""

    predictions: pd.DataFrame  # PREDICTION_COLUMNS, one row per candle, time order
    trades: pd.DataFrame  # TRADE_COLUMNS, one row per trade closed in the replay, exit order
    open_position: Position | None


# ---------------------------------------------------------------------------------------------
# input checks
# ---------------------------------------------------------------------------------------------
def _check_position(pos: Any, crypto: str, horizon: int) -> Position:
    if not isinstance(pos, Position):
        raise ValueError(f"open_position must be a Position or None, got {type(pos).__name__}")
    if pos.crypto != crypto:
        raise ValueError(f"open_position.crypto {pos.crypto!r} is not crypto {crypto!r}")
    if not (is_real(pos.entry_price) and pos.entry_price > 0):
        raise ValueError(
            f"open_position.entry_price must be a positive price, got {pos.entry_price!r}"
        )
    if not is_int(pos.model_version):
        raise ValueError(
            f"open_position.model_version must be an integer, got {pos.model_version!r}"
        )
    if not (isinstance(pos.loss_function, str) and pos.loss_function):
        raise ValueError(
            f"open_position.loss_function must be a non-empty string, got {pos.loss_function!r}"
        )
    if not (is_int(pos.bars_held) and 0 <= pos.bars_held < horizon):
        raise ValueError(
            f"open_position.bars_held must be an integer in [0, horizon={horizon}), "
            f"got {pos.bars_held!r}"
        )
    if not isinstance(pos.close_at_next_open, (bool, np.bool_)):
        raise ValueError(
            f"open_position.close_at_next_open must be a bool, got {pos.close_at_next_open!r}"
        )
    entry = _hour_timestamp("open_position.entry_time", pos.entry_time)
    last = _hour_timestamp("open_position.last_hour", pos.last_hour)
    if last < entry:
        raise ValueError(
            f"open_position.last_hour {fmt_utc(last)} is before its entry_time {fmt_utc(entry)}"
        )
    return Position(
        crypto=pos.crypto,
        entry_time=entry,
        entry_price=float(pos.entry_price),
        model_version=int(pos.model_version),
        loss_function=pos.loss_function,
        bars_held=int(pos.bars_held),
        last_hour=last,
        close_at_next_open=bool(pos.close_at_next_open),
    )


def _missing_hours_message(what: str, first: pd.Timestamp, last: pd.Timestamp) -> str:
    hours = pd.date_range(first, last, freq="h")
    if len(hours) <= 6:
        listed = ", ".join(fmt_utc(h) for h in hours)
    else:
        listed = f"{fmt_utc(hours[0])} .. {fmt_utc(hours[-1])}"
    return f"{what}: missing {len(hours)} hour(s): {listed}"


def _check_prices(frame: pd.DataFrame, hours: pd.DatetimeIndex) -> dict[str, NDArray[np.float64]]:
    missing = [c for c in _PRICE_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"candles are missing column(s) {missing}; has {list(frame.columns)}")
    arrays = {c: frame[c].to_numpy(dtype=np.float64) for c in _PRICE_COLUMNS}
    for c, arr in arrays.items():
        bad = ~(np.isfinite(arr) & (arr > 0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"candles column {c!r} at {fmt_utc(hours[i])}: {arr[i]!r} is not a positive price"
            )
    o, h, lo, c = (arrays[k] for k in _PRICE_COLUMNS)
    for name, bad in (
        ("high", h < np.maximum(o, c)),
        ("low", lo > np.minimum(o, c)),
    ):
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"candles column {name!r} at {fmt_utc(hours[i])}: {arrays[name][i]!r} is "
                f"{'below max' if name == 'high' else 'above min'}(open, close)"
            )
    return arrays


def _feature_rows(
    features: pd.DataFrame | None,
    candles: pd.DataFrame,
    i0: int,
    i1: int,
    hours: pd.DatetimeIndex,
) -> NDArray[np.float64]:
    """The replayed hours' feature values (m x len(FEATURE_NAMES)), every one finite."""
    if features is None:
        if i1 <= i0:
            return np.empty((0, len(FEATURE_NAMES)))
        frame = build_features(candles.iloc[:i1])  # causal: the rows before i1 suffice
        values = frame.iloc[i0:i1].to_numpy(dtype=np.float64)
        source = "build_features(candles)"
    else:
        if not isinstance(features, pd.DataFrame):
            raise ValueError(f"features must be a DataFrame or None, got {type(features).__name__}")
        missing = [c for c in FEATURE_NAMES if c not in features.columns]
        if missing:
            raise ValueError(f"features are missing column(s) {missing}")
        if not isinstance(features.index, pd.DatetimeIndex) or features.index.tz is None:
            raise ValueError("features must be indexed by the candles' open times (UTC)")
        if not features.index.is_unique:
            raise ValueError("features have duplicate open times")
        pos = features.index.get_indexer(hours)
        if (pos < 0).any():
            absent = hours[pos < 0]
            shown = ", ".join(fmt_utc(t) for t in absent[:6])
            raise ValueError(
                f"features have no row for {len(absent)} replayed hour(s): {shown}"
                f"{' ...' if len(absent) > 6 else ''}"
            )
        cols = features.columns.get_indexer(list(FEATURE_NAMES))
        values = features.iloc[pos, cols].to_numpy(dtype=np.float64)
        source = "features"
    bad = ~np.isfinite(values)
    if bad.any():
        r, c = (int(x[0]) for x in np.nonzero(bad))
        raise ValueError(
            f"{source} at {fmt_utc(hours[r])}: column {FEATURE_NAMES[c]!r} is {values[r, c]!r} "
            f"(warm-up: a decision needs more than WARMUP_BARS={WARMUP_BARS} earlier candles)"
        )
    return values


_Groups: TypeAlias = list[tuple[LiveModel, NDArray[np.int64]]]


def _when(start: pd.Timestamp) -> str:
    """A window's start in messages: its day at midnight, else the hour."""
    return f"{start:%Y-%m-%d}" if start == start.normalize() else fmt_utc(start)


def _model_groups(models: Any, hours: pd.DatetimeIndex, start: pd.Timestamp) -> _Groups:
    """(model, row positions) per model version, in order of first use; refuses an hour before
    its model's ``train_end`` (leakage) and two different models claiming one version."""
    m = len(hours)
    if isinstance(models, LiveModel):
        per_object: list[tuple[LiveModel, NDArray[np.int64]]] = (
            [(models, np.arange(m, dtype=np.int64))] if m else []
        )
    elif isinstance(models, ModelSchedule):
        which = models.indices(hours)
        per_object = [
            (models.models[int(i)], np.flatnonzero(which == i).astype(np.int64))
            for i in pd.unique(which)
        ]
    else:
        if isinstance(models, Mapping):
            resolved = []
            for t in hours:
                got = models.get(t)
                if got is None:
                    raise ValueError(f"models has no live model for hour {fmt_utc(t)}")
                resolved.append(got)
        elif callable(models):
            resolved = [models(t) for t in hours]
        else:
            raise ValueError(
                f"models must be a LiveModel, a mapping hour -> LiveModel or a function of the "
                f"hour, got {type(models).__name__}"
            )
        rows_of: dict[int, list[int]] = {}
        obj_of: dict[int, LiveModel] = {}
        for k, (t, got) in enumerate(zip(hours, resolved, strict=True)):
            if not isinstance(got, LiveModel):
                raise ValueError(
                    f"the model for hour {fmt_utc(t)} is a {type(got).__name__}, not a LiveModel"
                )
            rows_of.setdefault(id(got), []).append(k)
            obj_of.setdefault(id(got), got)
        per_object = [(obj_of[i], np.asarray(r, dtype=np.int64)) for i, r in rows_of.items()]
    by_version = _by_version(
        per_object,
        lambda first, first_rows, model, rows: (
            f"two different models claim version {model.version}: {_identity(first)} "
            f"at {fmt_utc(hours[first_rows[0]])}, "
            f"{_identity(model)} at {fmt_utc(hours[rows[0]])}"
        ),
    )
    out: _Groups = []
    for v, (model, parts) in by_version.items():
        rows = np.sort(np.concatenate(parts))
        first = hours[rows[0]]
        if first < model.train_end:
            raise ValueError(
                f"leakage: the replay window starting {_when(start)} "
                f"reaches hour {fmt_utc(first)}, "
                f"before the end of the training window of model version {v} "
                f"({model.loss_function}) at {fmt_utc(model.train_end)}; those hours are in its "
                f"training data: replay from {model.train_end:%Y-%m-%d %H:%M} UTC on"
            )
        out.append((model, rows))
    return out


def _by_version(
    per_object: list[tuple[LiveModel, NDArray[np.int64]]],
    clash: Callable[[LiveModel, NDArray[np.int64], LiveModel, NDArray[np.int64]], str],
) -> dict[int, tuple[LiveModel, list[NDArray[np.int64]]]]:
    """(model, row positions) per object -> per version: the first model seen and its row
    parts. Two objects of one version must agree on :func:`_identity`; otherwise
    ``ValueError(clash(first, its first rows, other, its rows))``."""
    by_version: dict[int, tuple[LiveModel, list[NDArray[np.int64]]]] = {}
    for model, rows in per_object:
        got_v = by_version.get(model.version)
        if got_v is None:
            by_version[model.version] = (model, [rows])
            continue
        if got_v[0] is not model and _identity(got_v[0]) != _identity(model):
            raise ValueError(clash(got_v[0], got_v[1][0], model, rows))
        got_v[1].append(rows)
    return by_version


def _identity(m: LiveModel) -> tuple[Any, ...]:
    """What two objects serving one version must agree on (``predict_proba`` may be two
    loads of the same booster; the first one seen is used)."""
    return (m.version, m.loss_function, m.trading_threshold, m.train_end, m.top_features)


def _candidate_groups(candidates: Any, hours: pd.DatetimeIndex) -> _Groups:
    """(candidate model, row positions) per version, rows restricted to the hours from its
    ``train_end`` on (earlier hours are in its training data: no shadow prediction there);
    hours without a candidate get none. Two different models claiming one version are
    refused, as for the champion."""
    m = len(hours)
    per_object: list[tuple[LiveModel, NDArray[np.int64]]] = []
    if candidates is None or m == 0:
        return []
    if isinstance(candidates, LiveModel):
        per_object = [(candidates, np.arange(m, dtype=np.int64))]
    elif isinstance(candidates, (ModelSchedule, CandidateSchedule)):
        keys = np.array([t.value for t in candidates.live_from], dtype=np.int64)
        which = np.searchsorted(keys, hours.as_unit("ns").asi8, side="right") - 1
        for i in pd.unique(which):
            got = candidates.models[int(i)] if i >= 0 else None
            if got is not None:
                per_object.append((got, np.flatnonzero(which == i).astype(np.int64)))
    else:
        if isinstance(candidates, Mapping):
            resolved = [candidates.get(t) for t in hours]
        elif callable(candidates):
            resolved = [candidates(t) for t in hours]
        else:
            raise ValueError(
                f"candidates must be a LiveModel, a schedule, a mapping hour -> LiveModel or "
                f"a function of the hour, or None, got {type(candidates).__name__}"
            )
        rows_of: dict[int, list[int]] = {}
        obj_of: dict[int, LiveModel] = {}
        for k, (t, got) in enumerate(zip(hours, resolved, strict=True)):
            if got is None:
                continue
            if not isinstance(got, LiveModel):
                raise ValueError(
                    f"the candidate for hour {fmt_utc(t)} is a {type(got).__name__}, not a "
                    f"LiveModel or None"
                )
            rows_of.setdefault(id(got), []).append(k)
            obj_of.setdefault(id(got), got)
        per_object = [(obj_of[i], np.asarray(r, dtype=np.int64)) for i, r in rows_of.items()]
    by_version = _by_version(
        per_object,
        lambda first, _first_rows, model, _rows: (
            f"two different candidate models claim version {model.version}: "
            f"{_identity(first)}, {_identity(model)}"
        ),
    )
    hours_ns = hours.as_unit("ns").asi8
    out: _Groups = []
    for model, parts in by_version.values():
        rows = np.sort(np.concatenate(parts))
        rows = rows[hours_ns[rows] >= model.train_end.value]
        if len(rows):
            out.append((model, rows))
    return out


def _predict(
    model: LiveModel,
    values: NDArray[np.float64],
    hours: pd.DatetimeIndex,
    rows: NDArray[np.int64],
    what: str = "model",
) -> NDArray[np.float64]:
    """``model.predict_proba`` of the feature rows ``rows``, checked: one probability each."""
    v = model.version
    X = pd.DataFrame(values[rows], index=hours[rows], columns=list(FEATURE_NAMES))
    p = np.asarray(model.predict_proba(X), dtype=np.float64)
    if p.shape != (len(rows),):
        raise ValueError(
            f"{what} version {v}: predict_proba returned shape {p.shape} for {len(rows)} "
            f"rows; expected one P(BUY) per row, shape ({len(rows)},)"
        )
    bad = ~(np.isfinite(p) & (p >= 0.0) & (p <= 1.0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{what} version {v}: buy_proba {float(p[i])!r} at {fmt_utc(hours[rows[i]])} is not "
            "a probability"
        )
    return p


def _labels(
    o: NDArray[np.float64],
    hi: NDArray[np.float64],
    lo: NDArray[np.float64],
    c: NDArray[np.float64],
    hours_ns: NDArray[np.int64],
    m: int,
    out: TradeOutcomes | None,
    tp: float,
    sl: float,
    h: int,
) -> tuple[NDArray[np.int8], NDArray[np.int64]]:
    """Triple-barrier label (1, 0; -1 = unresolved) and the ns time it became known (the
    close of the resolving candle; :data:`_NAT` when unresolved) of the first ``m`` of the
    ``n`` candles given (``o, hi, lo, c, hours_ns``: the replayed candles, then the later ones
    available). ``out``: :func:`simulate_long_trades` of all ``n`` (None when ``n <= h``):
    entries with ``h`` later candles take its outcome, as the labels module does; the last
    ones are scanned with :func:`bar_fills` over the candles there are, resolved at a fill."""
    n = len(c)
    label = np.full(m, -1, dtype=np.int8)
    known = np.full(m, _NAT, dtype=np.int64)
    n_out = 0 if out is None else min(m, n - h)
    if out is not None and n_out > 0:
        label[:n_out] = out.take_profit[:n_out]
        known[:n_out] = hours_ns[np.arange(n_out) + out.exit_offset[:n_out]] + _HOUR_NS
    tail = np.arange(max(n_out, 0), m, dtype=np.int64)
    still = np.ones(len(tail), dtype=bool)
    for k in range(1, h):
        sel = np.flatnonzero(still & (tail + k < n))
        if not len(sel):
            break
        j = tail[sel]
        f = bar_fills(c[j], o[j + k], hi[j + k], lo[j + k], tp, sl)
        done = sel[f.filled]
        label[tail[done]] = f.take_profit[f.filled]
        known[tail[done]] = hours_ns[tail[done] + k] + _HOUR_NS
        still[done] = False
    return label, known


def hour_labels(
    candles: pd.DataFrame,
    first_hour: Any,
    last_hour: Any,
    *,
    take_profit: float,
    stop_loss: float,
    horizon: int,
) -> pd.DataFrame:
    """The triple-barrier ``label`` and ``label_known_at`` of the candles opening in
    ``first_hour .. last_hour`` (inclusive), from the candles after them in ``candles`` -- what
    a replay writes for those hours, for hours journaled before their label resolved.

    ``candles``: as :func:`replay`'s (UTC open times, ``open, high, low, close``), from
    ``first_hour`` on. Returns columns ``hour``, ``label`` (Int8, NA while unresolved) and
    ``label_known_at`` (NaT while unresolved), one row per candle in the range (none for a
    range without candles). Raises ``ValueError`` naming the field for bad barriers, hours
    off the hour or not in order, or bad prices."""
    check_barriers(take_profit, stop_loss, horizon)
    start = _hour_timestamp("first_hour", first_hour)
    last = _hour_timestamp("last_hour", last_hour)
    if last < start:
        raise ValueError(f"last_hour {fmt_utc(last)} is before first_hour {fmt_utc(start)}")
    idx = candles.index
    if not isinstance(idx, pd.DatetimeIndex) or idx.tz is None:
        raise ValueError("candles must be indexed by a UTC DatetimeIndex of open times")
    i0 = int(idx.searchsorted(start, side="left"))
    i1 = int(idx.searchsorted(last, side="right"))
    h = int(horizon)
    i2 = min(len(idx), i1 + h)
    hours = idx[i0:i2].tz_convert("UTC").as_unit(_TS_UNIT)
    prices = _check_prices(candles.iloc[i0:i2], hours)
    o, hi, lo, c = (prices[k] for k in _PRICE_COLUMNS)
    tp, sl = float(take_profit), float(stop_loss)
    out = simulate_long_trades(o, hi, lo, c, tp, sl, h) if len(c) > h else None
    label, known = _labels(o, hi, lo, c, hours.as_unit("ns").asi8, i1 - i0, out, tp, sl, h)
    return pd.DataFrame(
        {
            "hour": pd.DatetimeIndex(hours[: i1 - i0], dtype=_TS_DTYPE),
            "label": pd.arrays.IntegerArray(label, label < 0),
            "label_known_at": _utc_times(known),
        }
    )


def _latencies(latency_ms: Any, versions: Sequence[int]) -> dict[int, float]:
    if latency_ms is None:
        return {v: math.nan for v in versions}
    if is_real(latency_ms):
        if latency_ms < 0:
            raise ValueError(f"latency_ms must be >= 0, got {latency_ms!r}")
        return {v: float(latency_ms) for v in versions}
    if not isinstance(latency_ms, Mapping):
        raise ValueError(
            f"latency_ms must be a number, a mapping version -> ms or None, got {latency_ms!r}"
        )
    out = {}
    for v in versions:
        x = latency_ms.get(v, math.nan)
        if not (isinstance(x, float) and math.isnan(x)) and not (is_real(x) and x >= 0):
            raise ValueError(f"latency_ms[{v}] must be a finite number >= 0, got {x!r}")
        out[v] = float(x)
    return out


# ---------------------------------------------------------------------------------------------
# the replay
# ---------------------------------------------------------------------------------------------
@dataclass
class _Open:
    """Mutable state of the open position during a replay."""

    entry_ns: int  # entry candle's open time, ns since the epoch (UTC)
    entry_price: float
    model_version: int
    loss_function: str
    bars_held: int
    close_at_next_open: bool


def replay(
    candles: pd.DataFrame,
    features: pd.DataFrame | None,
    first_day: Any,
    last_day: Any,
    models: ModelSource,
    *,
    crypto: str,
    take_profit: float,
    stop_loss: float,
    horizon: int,
    fee_per_side: float = DEFAULT_FEE_PER_SIDE,
    halted: Callable[[pd.Timestamp], bool] | None = None,
    open_position: Position | None = None,
    latency_ms: float | Mapping[int, float] | None = None,
    candidates: CandidateSource | None = None,
    no_entry: Callable[[pd.Timestamp], bool] | None = None,
) -> Replay:
    """Paper-trade the UTC days ``first_day .. last_day`` (inclusive) of one crypto.

    ``candles``: hourly candles of ``crypto`` (UTC ``DatetimeIndex`` of open times, time order,
    columns ``open, high, low, close``) covering the days: starting at or before 00:00 of
    ``first_day`` and reaching 23:00 of ``last_day`` (or later). Earlier rows are history for
    the features; later rows feed only ``label`` / ``label_known_at`` (the ``horizon`` rows
    after the last replayed candle at most): decisions, trades and the carried position never
    look past the decision's candle.
    ``features``: :data:`FEATURE_NAMES` rows indexed by open time (e.g. ``build_features`` of
    the whole history, causal), or ``None`` to compute them from ``candles``.
    ``models``: the model live at each hour (:data:`ModelSource`). ``take_profit``,
    ``stop_loss`` (fractions), ``horizon`` (candles): the label strategy's barriers.
    ``fee_per_side``: fraction per side (default 0.1 %). ``halted(hour)``: whether
    ``trading_halted`` is set at that hour's decision (``None``: never). ``open_position``:
    the previous replay's :attr:`Replay.open_position`. ``latency_ms``: per-decision latency of
    each model version (``{version: ms}`` or one number; see
    :func:`cvn_assets.guard.live_model.measure_latency`), written in ``predictions.latency_ms``
    (NaN where absent). ``candidates``: the ``candidate`` model live at each hour for shadow
    mode (:data:`CandidateSource`; ``None``: no candidate): its predictions fill the
    ``candidate_*`` columns and change nothing else. ``no_entry(hour)``: a BUY at that hour's
    decision opens nothing, while an open position keeps its barriers (unlike a halt, which
    closes it): the live loop's fail-safe for hours whose ``trading_halted`` could not be read.

    Returns the journal rows (module docstring) and the position still open at the end.
    Raises ``ValueError`` before any prediction for bad input, a window not yet complete in
    ``candles`` (naming the missing hours), an hour before its model's ``train_end`` (leakage,
    naming both), a carried position whose next candles were skipped, or features missing /
    not finite at a replayed hour; after the predictions, for a ``predict_proba`` output that
    is not one probability per row.
    """
    a = _check_args(
        crypto, take_profit, stop_loss, horizon, fee_per_side, first_day, last_day, halted,
        open_position,
    )  # fmt: skip
    return _run(a, candles, features, models, halted, latency_ms, candidates, no_entry)


def replay_hours(
    candles: pd.DataFrame,
    features: pd.DataFrame | None,
    first_hour: Any,
    last_hour: Any,
    models: ModelSource,
    *,
    crypto: str,
    take_profit: float,
    stop_loss: float,
    horizon: int,
    fee_per_side: float = DEFAULT_FEE_PER_SIDE,
    halted: Callable[[pd.Timestamp], bool] | None = None,
    open_position: Position | None = None,
    latency_ms: float | Mapping[int, float] | None = None,
    candidates: CandidateSource | None = None,
    no_entry: Callable[[pd.Timestamp], bool] | None = None,
) -> Replay:
    """:func:`replay` of the hours ``first_hour .. last_hour`` (candle open times, inclusive,
    on the hour): the live loop's step, journaling each hour once its candle has closed.

    Same arguments, rules and errors as :func:`replay` with hours for days: ``candles`` must
    reach ``last_hour``; ``open_position`` must have been carried from the replay that ended
    right before ``first_hour``. Replaying consecutive hour windows with the position carried
    gives exactly the rows of one replay over all of them, given the same ``features``
    (tested), so a day journaled hour by hour equals the day journaled at once."""
    a = _check_args(
        crypto, take_profit, stop_loss, horizon, fee_per_side, first_hour, last_hour, halted,
        open_position, hours=True,
    )  # fmt: skip
    return _run(a, candles, features, models, halted, latency_ms, candidates, no_entry)


def _run(
    a: _Args,
    candles: Any,
    features: Any,
    models: Any,
    halted: Any,
    latency_ms: Any,
    candidates: Any,
    no_entry: Any = None,
) -> Replay:
    """The replay's steps over the checked window ``a``."""
    if no_entry is not None and not callable(no_entry):
        raise ValueError(f"no_entry must be a function of the hour or None, got {no_entry!r}")
    win = _candle_window(candles, a)
    values = _feature_rows(features, candles, win.i0, win.i1, win.hours)
    groups = _model_groups(models, win.hours, a.start)
    halt = _halt_flags(halted, win.hours)
    lat = _latencies(latency_ms, [model.version for model, _ in groups])
    cand_groups = _candidate_groups(candidates, win.hours)
    signals = _champion_signals(groups, values, win.hours, lat)
    shadow = _candidate_signals(cand_groups, values, win.hours)
    blocked = _halt_flags(no_entry, win.hours) | halt
    trades, open_out, out_ext = _position_walk(a, win, signals, halt, blocked)
    predictions = _predictions_frame(a, win, signals, shadow, out_ext)
    return Replay(predictions=predictions, trades=trades, open_position=open_out)


# ---- the replay's steps -----------------------------------------------------------------
@dataclass(frozen=True)
class _Args:
    """The replay's checked arguments: barriers (``tp``, ``sl`` fractions, ``h`` candles), fee
    per side, the window ``[start, end)`` (``last``: its last day) and the carried position."""

    crypto: str
    tp: float
    sl: float
    h: int
    fee: float
    start: pd.Timestamp
    last: pd.Timestamp
    end: pd.Timestamp
    pos_in: Position | None
    window: str = ""  # the window in messages: "day D", "days D1 .. D2", "hours H1 .. H2"


def _check_args(
    crypto: Any,
    take_profit: Any,
    stop_loss: Any,
    horizon: Any,
    fee_per_side: Any,
    first_day: Any,
    last_day: Any,
    halted: Any,
    open_position: Any,
    hours: bool = False,
) -> _Args:
    if not (isinstance(crypto, str) and crypto.strip()):
        raise ValueError(f"crypto must be a non-empty string, got {crypto!r}")
    check_barriers(take_profit, stop_loss, horizon)
    h = int(horizon)
    if not (is_real(fee_per_side) and 0.0 <= fee_per_side < 0.5):
        raise ValueError(f"fee_per_side must be a fraction in [0, 0.5), got {fee_per_side!r}")
    if hours:
        start = _hour_timestamp("first_hour", first_day)
        last = _hour_timestamp("last_hour", last_day)
        if last < start:
            raise ValueError(f"last_hour {fmt_utc(last)} is before first_hour {fmt_utc(start)}")
        end, window = last + _HOUR, f"hours {fmt_utc(start)} .. {fmt_utc(last)}"
    else:
        start = _day("first_day", first_day)
        last = _day("last_day", last_day)
        if last < start:
            raise ValueError(f"last_day {last:%Y-%m-%d} is before first_day {start:%Y-%m-%d}")
        end = last + _DAY
        window = (
            f"day {last:%Y-%m-%d}" if last == start else f"days {start:%Y-%m-%d} .. {last:%Y-%m-%d}"
        )
    if halted is not None and not callable(halted):
        raise ValueError(f"halted must be a function of the hour or None, got {halted!r}")
    pos_in = None if open_position is None else _check_position(open_position, crypto, h)
    return _Args(
        crypto, float(take_profit), float(stop_loss), h, float(fee_per_side), start, last,
        end, pos_in, window,
    )  # fmt: skip


@dataclass(frozen=True)
class _Window:
    """The replayed candles ``i0:i1`` of ``candles`` (``hours``, ``prices``), and with the
    later ones a label may need (``hours_ext``, ``prices_ext``: up to ``horizon`` more)."""

    i0: int
    i1: int
    hours: pd.DatetimeIndex
    hours_ext: pd.DatetimeIndex
    prices: dict[str, NDArray[np.float64]]
    prices_ext: dict[str, NDArray[np.float64]]


def _candle_window(candles: Any, a: _Args) -> _Window:
    """The candle checks: a UTC, unique, ordered index covering the window (else the missing
    hours are named), hourly open times, valid prices, and a carried position continuing
    right before the window."""
    if not isinstance(candles, pd.DataFrame):
        raise ValueError(f"candles must be a DataFrame, got {type(candles).__name__}")
    idx = candles.index
    if not isinstance(idx, pd.DatetimeIndex) or idx.tz is None:
        raise ValueError("candles must be indexed by a UTC DatetimeIndex of open times")
    if len(idx) == 0:
        raise ValueError("candles is empty")
    if not (idx.is_monotonic_increasing and idx.is_unique):
        raise ValueError("candles' open times must be unique and in time order")
    start, end = a.start, a.end
    if idx[0] > start:
        raise ValueError(
            f"candles start at {fmt_utc(idx[0])}, after the replay window's first hour "
            f"{fmt_utc(start)}: pass the candles from {fmt_utc(start)} (or earlier)"
        )
    if idx[-1] < end - _HOUR:
        raise ValueError(
            _missing_hours_message(
                f"{a.window} cannot be replayed yet: candles end at {fmt_utc(idx[-1])}",
                max(idx[-1] + _HOUR, start),
                end - _HOUR,
            )
        )
    i0 = int(idx.searchsorted(start, side="left"))
    i1 = int(idx.searchsorted(end, side="left"))
    # the later candles a label may need: horizon rows (bars are positional)
    i2 = min(len(idx), i1 + a.h)
    hours_ext = idx[i0:i2].tz_convert("UTC").as_unit(_TS_UNIT)
    off_grid = hours_ext.as_unit("ns").asi8 % _HOUR_NS != 0
    if off_grid.any():
        raise ValueError(
            f"candle open time {hours_ext[int(np.argmax(off_grid))]} is not on the hour"
        )
    prices_ext = _check_prices(candles.iloc[i0:i2], hours_ext)
    if a.pos_in is not None:
        _check_continuity(a.pos_in, idx, i0, start)
    return _Window(
        i0, i1, hours_ext[: i1 - i0], hours_ext,
        {k: arr[: i1 - i0] for k, arr in prices_ext.items()}, prices_ext,
    )  # fmt: skip


def _check_continuity(pos: Position, idx: pd.DatetimeIndex, i0: int, start: pd.Timestamp) -> None:
    """A carried position must come from an earlier replay that ended right before ``i0``."""
    if pos.last_hour >= start:
        raise ValueError(
            f"open_position.last_hour {fmt_utc(pos.last_hour)} is not before the replay "
            f"window {_when(start)}: it was carried from a later replay"
        )
    j = int(idx.searchsorted(pos.last_hour, side="right"))
    if j < i0:
        raise ValueError(
            f"open_position was last updated at {fmt_utc(pos.last_hour)} but the candles "
            f"{fmt_utc(idx[j])} .. {fmt_utc(idx[i0 - 1])} before the replay window were not "
            f"replayed: replay the days in order"
        )


def _halt_flags(halted: Any, hours: pd.DatetimeIndex) -> NDArray[np.bool_]:
    """``halted(hour)`` at every replayed hour (all False without ``halted``)."""
    halt = np.zeros(len(hours), dtype=bool)
    if halted is not None:
        for k, t in enumerate(hours):
            flag = halted(t)
            if not isinstance(flag, (bool, np.bool_)):
                raise ValueError(f"halted({fmt_utc(t)}) must return a bool, got {flag!r}")
            halt[k] = bool(flag)
    return halt


@dataclass(frozen=True)
class _Signals:
    """Per replayed hour: the live champion's ``proba``, ``buy`` signal, ``version``,
    ``latency`` (ms), ``loss`` name and its ``top`` feature values (hours x N_TOP_FEATURES)."""

    proba: NDArray[np.float64]
    buy: NDArray[np.bool_]
    version: NDArray[np.int64]
    latency: NDArray[np.float64]
    loss: NDArray[Any]
    top: NDArray[np.float64]


def _champion_signals(
    groups: _Groups,
    values: NDArray[np.float64],
    hours: pd.DatetimeIndex,
    lat: Mapping[int, float],
) -> _Signals:
    """Predictions: one vectorised ``predict_proba`` call per model version."""
    m = len(hours)
    proba = np.empty(m, dtype=np.float64)
    threshold = np.full(m, np.nan)
    version = np.empty(m, dtype=np.int64)
    latency = np.empty(m, dtype=np.float64)
    top = np.full((m, N_TOP_FEATURES), np.nan)
    loss_names = sorted({model.loss_function for model, _ in groups})
    loss_code = np.empty(m, dtype=np.int64)
    for model, rows in groups:
        v = model.version
        proba[rows] = _predict(model, values, hours, rows)
        if model.trading_threshold is not None:
            threshold[rows] = model.trading_threshold
        version[rows] = v
        latency[rows] = lat[v]
        loss_code[rows] = loss_names.index(model.loss_function)
        if model.top_features:
            cols = np.array([FEATURE_NAMES.index(f) for f in model.top_features], np.int64)
            top[rows, : len(cols)] = values[np.ix_(rows, cols)]
    buy = proba >= threshold  # NaN threshold (None): never BUY
    loss = np.asarray(loss_names, dtype=object)[loss_code]
    return _Signals(proba, buy, version, latency, loss, top)


@dataclass(frozen=True)
class _Shadow:
    """Per replayed hour: the candidate's ``version``, whether one is ``live``, its
    ``proba`` and ``buy`` signal at its own trading threshold."""

    version: NDArray[np.int64]
    live: NDArray[np.bool_]
    proba: NDArray[np.float64]
    buy: NDArray[np.bool_]


def _candidate_signals(
    cand_groups: _Groups, values: NDArray[np.float64], hours: pd.DatetimeIndex
) -> _Shadow:
    """Shadow mode: the candidate's signal beside the champion's (nothing else uses it)."""
    m = len(hours)
    shadow = _Shadow(
        np.zeros(m, dtype=np.int64), np.zeros(m, dtype=bool), np.full(m, np.nan),
        np.zeros(m, dtype=bool),
    )  # fmt: skip
    for model, rows in cand_groups:
        p = _predict(model, values, hours, rows, "candidate")
        shadow.proba[rows] = p
        shadow.version[rows] = model.version
        shadow.live[rows] = True
        if model.trading_threshold is not None:
            shadow.buy[rows] = p >= model.trading_threshold
    return shadow


#: a trade closed by the candle-by-candle walk: entry ns, entry price, exit candle, barrier,
#: gross return, gap fill, model version, loss function
_ScalarExit: TypeAlias = tuple[int, float, int, str, float, bool, int, str]


class _Walker:
    """The candle-by-candle walk of one position (the fill rule of trading.bar_fills), for a
    carried position and the entries too close to the window's end for the vectorised
    outcome; the trades it closes are collected in ``exits``."""

    def __init__(self, a: _Args, win: _Window, halt: NDArray[np.bool_]) -> None:
        self.a, self.halt, self.hours = a, halt, win.hours
        self.o, self.hi, self.lo, self.c = (win.prices[k] for k in _PRICE_COLUMNS)
        self.exits: list[_ScalarExit] = []

    def walk(self, pos: _Open, k_from: int) -> int | None:
        """Candle by candle from ``k_from``; the exit candle or None (still open)."""
        o, hi, lo, c = self.o, self.hi, self.lo, self.c
        tp, sl, h = self.a.tp, self.a.sl, self.a.h
        e = pos.entry_price
        for k in range(k_from, len(self.hours)):
            f = bar_fills(e, o[k], hi[k], lo[k], tp, sl)
            pos.bars_held += 1
            gap = bool(f.gap[0])
            if pos.close_at_next_open and not gap:
                exit_ = ("halt", (o[k] - e) / e)
            elif f.filled[0]:
                exit_ = ("tp" if f.take_profit[0] else "sl", float(f.ret[0]))
            elif pos.bars_held >= h:
                exit_ = ("time", (c[k] - e) / e)
            else:
                if self.halt[k]:
                    pos.close_at_next_open = True
                continue
            self.exits.append(
                (pos.entry_ns, e, k, exit_[0], exit_[1], gap, pos.model_version, pos.loss_function)
            )
            return k
        return None

    def carry(self, pos: _Open, last_hour: pd.Timestamp) -> Position:
        """The open position handed to the next replay."""
        return Position(
            crypto=self.a.crypto,
            entry_time=pd.Timestamp(pos.entry_ns, tz="UTC").as_unit(_TS_UNIT),
            entry_price=pos.entry_price,
            model_version=pos.model_version,
            loss_function=pos.loss_function,
            bars_held=pos.bars_held,
            last_hour=last_hour,
            close_at_next_open=pos.close_at_next_open,
        )


def _walk_carried(walker: _Walker, pos_in: Position | None) -> tuple[Position | None, int]:
    """The carried position walked into the window: ``(still open, first candle free)``."""
    if pos_in is None:
        return None, 0
    m = len(walker.hours)
    carried = _Open(
        int(pos_in.entry_time.value),
        pos_in.entry_price,
        pos_in.model_version,
        pos_in.loss_function,
        pos_in.bars_held,
        pos_in.close_at_next_open,
    )
    x = walker.walk(carried, 0)
    if x is None:
        return walker.carry(carried, walker.hours[m - 1] if m else pos_in.last_hour), m
    return None, x  # flat at the exit candle's close: its BUY may open the next long


@dataclass(frozen=True)
class _VectorTrades:
    """The trades whose outcome is inside the window, found by jumping from trade to trade:
    entry candles ``J``, exit candles ``X``, ``barrier``, gross ``ret`` and ``gap`` fill."""

    J: NDArray[np.int64]
    X: NDArray[np.int64]
    barrier: NDArray[Any]
    ret: NDArray[np.float64]
    gap: NDArray[np.bool_]


def _position_walk(
    a: _Args,
    win: _Window,
    sig: _Signals,
    halt: NDArray[np.bool_],
    blocked: NDArray[np.bool_],
) -> tuple[pd.DataFrame, Position | None, TradeOutcomes | None]:
    """The one-position walk over the window: the trades frame, the position still open
    after it, and the outcomes of a long entered at every candle (for the labels).
    ``blocked``: hours whose BUY opens nothing (halted, or ``no_entry``)."""
    m, h = len(win.hours), a.h
    hours_ns = win.hours.as_unit("ns").asi8
    c = win.prices["close"]
    oe, hie, loe, ce = (win.prices_ext[k] for k in _PRICE_COLUMNS)
    # one long entered at every candle, over the replayed and the later candles: the trades
    # use the entries whose outcome is inside the window (they read no later candle: the
    # outcome of entry j reads candles j+1..j+h only); the labels use them all
    out_ext = simulate_long_trades(oe, hie, loe, ce, a.tp, a.sl, h) if len(ce) > h else None
    walker = _Walker(a, win, halt)
    open_out, k = _walk_carried(walker, a.pos_in)
    n_before = len(walker.exits)
    entries = np.flatnonzero(sig.buy & ~blocked)
    next_entry = np.append(entries, m)[np.searchsorted(entries, np.arange(m + 1))].tolist()
    vec, j = _jump_trades(out_ext, halt, next_entry, next_entry[k], max(m - h, 0), win)
    while j < m:  # entries too close to the window's end for the vectorised outcome
        tail = _Open(int(hours_ns[j]), float(c[j]), int(sig.version[j]), str(sig.loss[j]), 0, False)
        x = walker.walk(tail, j + 1)
        if x is None:
            open_out = walker.carry(tail, win.hours[m - 1])
            break
        j = next_entry[x]
    trades = _trades_frame(a, win, sig, vec, walker.exits[:n_before], walker.exits[n_before:])
    return trades, open_out, out_ext


def _jump_trades(
    out_ext: TradeOutcomes | None,
    halt: NDArray[np.bool_],
    next_entry: list[int],
    j: int,
    n_full: int,
    win: _Window,
) -> tuple[_VectorTrades, int]:
    """Every long entered at candle j < n_full has its outcome inside the window: one
    vectorised simulate_long_trades (the barrier exit x), moved to the open after the first
    halted close before x (unless that open is x's gap fill). The one-position walk then
    jumps from trade to trade: next entry at or after the previous exit candle. Returns the
    trades taken and the next entry candle (>= n_full) for the candle-by-candle walk."""
    m = len(win.hours)
    taken: list[int] = []
    if n_full:
        assert out_ext is not None  # n_full > 0: the window alone has more than h candles
        out = out_ext
        jj = np.arange(n_full)
        x_nat = jj + out.exit_offset[:n_full]
        halts = np.flatnonzero(halt)
        first_halt = np.append(halts, m)[np.searchsorted(halts, jj + 1)]
        by_halt = (first_halt < x_nat) & ~((first_halt + 1 == x_nat) & out.gap[:n_full])
        exit_at = np.where(by_halt, first_halt + 1, x_nat)
        exit_list = exit_at.tolist()
        while j < n_full:
            taken.append(j)
            j = next_entry[exit_list[j]]
    J = np.asarray(taken, dtype=np.int64)
    if not len(J):
        empty = _VectorTrades(
            J, J, np.array([], dtype="<U4"), np.array([]), np.array([], bool)
        )  # fmt: skip
        return empty, j
    o = win.prices["open"]
    c = win.prices["close"]
    hx = by_halt[J]
    barrier = np.where(
        hx,
        "halt",
        np.where(out.take_profit[J], "tp", np.where(out.stop_loss[J], "sl", "time")),
    )
    ret = np.where(hx, (o[exit_at[J]] - c[J]) / c[J], out.ret[J])
    return _VectorTrades(J, exit_at[J], barrier, ret, out.gap[J] & ~hx), j


def _trades_frame(
    a: _Args,
    win: _Window,
    sig: _Signals,
    vec: _VectorTrades,
    first_part: list[_ScalarExit],
    last_part: list[_ScalarExit],
) -> pd.DataFrame:
    """``trades`` (TRADE_COLUMNS) in exit order: the carried position's exit, the vectorised
    trades, then the tail's."""
    o, c = win.prices["open"], win.prices["close"]
    hours_ns = win.hours.as_unit("ns").asi8
    J = vec.J

    def cat(i: int, v: NDArray[Any], dtype: Any) -> NDArray[Any]:
        return np.concatenate(
            [
                np.asarray([r[i] for r in first_part], dtype=dtype),
                np.asarray(v, dtype=dtype),
                np.asarray([r[i] for r in last_part], dtype=dtype),
            ]
        )

    entry_ns = cat(0, hours_ns[J], np.int64)
    entry_price = cat(1, c[J], np.float64)
    exit_k = cat(2, vec.X, np.int64)
    barrier = cat(3, vec.barrier, object)
    gross = cat(4, vec.ret, np.float64)
    gap_fill = cat(5, vec.gap, bool)
    exit_price = np.where(
        barrier == "time",
        c[exit_k],
        np.where(
            (barrier == "halt") | gap_fill,
            o[exit_k],
            np.where(barrier == "tp", entry_price * (1.0 + a.tp), entry_price * (1.0 - a.sl)),
        ),
    )
    return pd.DataFrame(
        {
            "crypto": pd.array([a.crypto] * len(exit_k), dtype="str"),
            "entry_time": _utc_times(entry_ns),
            "entry_price": entry_price,
            "exit_time": _utc_times(hours_ns[exit_k]),
            "exit_price": exit_price,
            "barrier": pd.array(barrier, dtype="str"),
            "gross_return": gross,
            "net_return": gross - 2.0 * a.fee,
            "model_version": cat(6, sig.version[J], np.int64),
            "loss_function": pd.array(cat(7, sig.loss[J], object), dtype="str"),
        },
        columns=list(TRADE_COLUMNS),
    )


def _predictions_frame(
    a: _Args,
    win: _Window,
    sig: _Signals,
    shadow: _Shadow,
    out_ext: TradeOutcomes | None,
) -> pd.DataFrame:
    """``predictions`` (PREDICTION_COLUMNS), one row per replayed hour, with its label."""
    m = len(win.hours)
    oe, hie, loe, ce = (win.prices_ext[k] for k in _PRICE_COLUMNS)
    hours_ext_ns = win.hours_ext.as_unit("ns").asi8
    label, known = _labels(oe, hie, loe, ce, hours_ext_ns, m, out_ext, a.tp, a.sl, a.h)
    resolved = label >= 0
    cand_decision = np.where(shadow.buy, BUY, HOLD).astype(object)
    cand_decision[~shadow.live] = None
    return pd.DataFrame(
        {
            "crypto": pd.array([a.crypto] * m, dtype="str"),
            "hour": pd.DatetimeIndex(win.hours, dtype=_TS_DTYPE),
            "model_version": sig.version,
            "loss_function": pd.array(sig.loss, dtype="str"),
            "buy_proba": sig.proba,
            "decision": pd.array(np.where(sig.buy, BUY, HOLD).astype(object), dtype="str"),
            "latency_ms": sig.latency,
            **{name: sig.top[:, i] for i, name in enumerate(TOP_FEATURE_COLUMNS)},
            "label": pd.arrays.IntegerArray(label, ~resolved),
            "label_known_at": _utc_times(known),
            "candidate_version": pd.arrays.IntegerArray(shadow.version, ~shadow.live),
            "candidate_buy_proba": shadow.proba,
            "candidate_decision": pd.array(cand_decision, dtype="str"),
        },
        columns=list(PREDICTION_COLUMNS),
    )


def _utc_times(ns: NDArray[np.int64]) -> pd.DatetimeIndex:
    """int64 UTC nanoseconds (:data:`_NAT` = NaT) -> a UTC DatetimeIndex in the candle unit."""
    return (
        pd.DatetimeIndex(np.asarray(ns, dtype=np.int64).view("datetime64[ns]"))
        .tz_localize("UTC")
        .as_unit(_TS_UNIT)
    )


def replay_day(
    candles: pd.DataFrame,
    features: pd.DataFrame | None,
    day: Any,
    models: ModelSource,
    *,
    crypto: str,
    take_profit: float,
    stop_loss: float,
    horizon: int,
    fee_per_side: float = DEFAULT_FEE_PER_SIDE,
    halted: Callable[[pd.Timestamp], bool] | None = None,
    open_position: Position | None = None,
    latency_ms: float | Mapping[int, float] | None = None,
    candidates: CandidateSource | None = None,
    no_entry: Callable[[pd.Timestamp], bool] | None = None,
) -> Replay:
    """:func:`replay` of one UTC day (its 24 hourly candles), the daily step of the guard.

    Pass the previous day's :attr:`Replay.open_position` as ``open_position``; trades are
    journaled on the day they exit. Candles after the day feed only the labels.
    """
    return replay(
        candles,
        features,
        day,
        day,
        models,
        crypto=crypto,
        take_profit=take_profit,
        stop_loss=stop_loss,
        horizon=horizon,
        fee_per_side=fee_per_side,
        halted=halted,
        open_position=open_position,
        latency_ms=latency_ms,
        candidates=candidates,
        no_entry=no_entry,
    )
