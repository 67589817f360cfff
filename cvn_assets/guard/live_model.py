"""The live model: a model version as the guard serves it, which version is live at each hour,
and one decision as a live system makes it.

Pure: no Dagster, typed. :class:`LiveModel` is what the paper-trading replay
(:mod:`cvn_assets.guard.paper`) and the ``paper_trades`` asset consume: probabilities,
trading threshold, the end of the training window (leakage guard), top features. It is built
from a stored :class:`cvn_assets.ablation.calibrated_model.CalibratedModel` by
:func:`live_model_from_calibrated`; :func:`model_schedule` / :func:`candidate_schedule` say
which version (champion, shadow candidate) is live at each hour; :func:`measure_latency`
times a decision as a live system makes it (features of the trailing candles, then
``predict_proba``). Everything raises ``ValueError`` naming the field and the value on bad
input.
"""

from __future__ import annotations

import math
import numbers
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from cvn_assets.ablation.calibrated_model import CalibratedModel
from cvn_assets.market.features import FEATURE_NAMES, build_features

__all__ = [
    "LIVE_WINDOW_BARS",
    "N_TOP_FEATURES",
    "CandidateSchedule",
    "CandidateSource",
    "LatencyStats",
    "LiveModel",
    "ModelSchedule",
    "ModelSource",
    "candidate_schedule",
    "fmt_utc",
    "is_int",
    "is_real",
    "live_feature_row",
    "live_model_from_calibrated",
    "measure_latency",
    "model_schedule",
    "top_feature_names",
    "utc_timestamp",
]

N_TOP_FEATURES = 5
"""How many top features (by gain) of the live model ``predictions`` carries."""

LIVE_WINDOW_BARS: int = 512
"""Trailing candles a live system recomputes its feature row from (:func:`live_feature_row`).

More than :data:`cvn_assets.market.features.WARMUP_BARS` (167) so every window is full, and long
enough that the Wilder averages (ATR, RSI: infinite memory, weight ``(13/14)^k`` on what is
``k`` rows back) keep ``(13/14)^511 ~ 4e-17`` of their start value: the live row equals the row
of ``build_features`` over the whole history up to rounding."""


# ---------------------------------------------------------------------------------------------
# small validators (shared with the replay)
# ---------------------------------------------------------------------------------------------
def fmt_utc(ts: pd.Timestamp) -> str:
    """``ts`` as ``YYYY-MM-DD HH:MM UTC`` (the guard's error messages)."""
    return f"{ts.tz_convert('UTC'):%Y-%m-%d %H:%M} UTC"


def is_real(x: object) -> bool:
    """A finite real number, not a bool."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(float(x))


def is_int(x: object) -> bool:
    """An integer, not a bool."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def utc_timestamp(name: str, value: Any) -> pd.Timestamp:
    """A tz-aware instant converted to UTC; naive or unparsable values are refused."""
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a UTC timestamp, got {value!r}") from None
    if not isinstance(ts, pd.Timestamp) or pd.isna(ts):
        raise ValueError(f"{name} must be a UTC timestamp, got {value!r}")
    if ts.tzinfo is None:
        raise ValueError(
            f"{name} {value!r} is timezone-naive: give it in UTC (e.g. '2024-05-01 00:00+00:00')"
        )
    return ts.tz_convert("UTC")


# ---------------------------------------------------------------------------------------------
# models and schedules
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LiveModel:
    """A model version as it is served: probabilities, trading threshold, training window end.

    ``predict_proba`` maps feature rows (a DataFrame with the :data:`FEATURE_NAMES` columns in
    order, indexed by the candles' open times) to P(BUY), a 1-D array of one probability per
    row. ``trading_threshold``: BUY when ``buy_proba >= trading_threshold``; ``None`` = never
    trade (:func:`cvn_assets.ablation.metrics.fit_trading_threshold` found no positive expectancy).
    ``train_end``: the end of the training window (exclusive, tz-aware, kept in UTC); the
    model may decide hours from ``train_end`` on. ``top_features``: its top features by gain
    (``reference_stats["top_features"]`` names, in that order; at most
    :data:`N_TOP_FEATURES`, each one of :data:`FEATURE_NAMES`, no repeats): their values at
    each hour it decides are journaled as ``feature_1`` .. (empty: none).
    """

    version: int
    loss_function: str
    predict_proba: Callable[[pd.DataFrame], NDArray[np.float64]]
    trading_threshold: float | None
    train_end: pd.Timestamp
    top_features: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not is_int(self.version):
            raise ValueError(f"LiveModel.version must be an integer, got {self.version!r}")
        if not (isinstance(self.loss_function, str) and self.loss_function.strip()):
            raise ValueError(
                f"LiveModel.loss_function must be a non-empty string, got {self.loss_function!r}"
            )
        if not callable(self.predict_proba):
            raise ValueError(
                f"LiveModel.predict_proba must be callable, got {type(self.predict_proba).__name__}"
            )
        t = self.trading_threshold
        if t is not None and not (is_real(t) and 0.0 <= float(t) <= 1.0):
            raise ValueError(
                f"LiveModel.trading_threshold must be a probability in [0, 1] or None, got {t!r}"
            )
        top = self.top_features
        if isinstance(top, str) or not isinstance(top, Sequence):
            raise ValueError(
                f"LiveModel.top_features must be a sequence of feature names, got {top!r}"
            )
        unknown = [f for f in top if f not in FEATURE_NAMES]
        if unknown:
            raise ValueError(
                f"LiveModel.top_features: {unknown!r} not among the FEATURE_NAMES "
                f"(model version {self.version})"
            )
        if len(set(top)) != len(top) or len(top) > N_TOP_FEATURES:
            raise ValueError(
                f"LiveModel.top_features must be at most {N_TOP_FEATURES} distinct names, "
                f"got {list(top)!r}"
            )
        object.__setattr__(self, "version", int(self.version))
        object.__setattr__(self, "trading_threshold", None if t is None else float(t))
        object.__setattr__(self, "train_end", utc_timestamp("LiveModel.train_end", self.train_end))
        object.__setattr__(self, "top_features", tuple(top))


ModelSource: TypeAlias = (
    LiveModel | Mapping[pd.Timestamp, LiveModel] | Callable[[pd.Timestamp], LiveModel]
)
"""The model live at each hour: one model, a mapping hour -> model, or a function of the hour
(e.g. :func:`model_schedule`, or a cached lookup of the registry's ``live_at``)."""


@dataclass(frozen=True)
class ModelSchedule:
    """The model live at each hour: ``models[i]`` over ``[live_from[i], live_from[i + 1])``.

    Callable on one hour like any :data:`ModelSource` function; :func:`replay` resolves a
    whole window with one ``searchsorted``. Build it with :func:`model_schedule`.
    """

    live_from: tuple[pd.Timestamp, ...]
    models: tuple[LiveModel, ...]

    def indices(self, hours: pd.DatetimeIndex) -> NDArray[np.int64]:
        """Index into :attr:`models` per hour; ``ValueError`` before the first ``live_from``."""
        keys = np.array([t.value for t in self.live_from], dtype=np.int64)
        i = np.searchsorted(keys, hours.as_unit("ns").asi8, side="right") - 1
        if len(i) and i[0] < 0:
            raise ValueError(
                f"no model is live at {fmt_utc(hours[0])}: the schedule starts at "
                f"{fmt_utc(self.live_from[0])}"
            )
        return i.astype(np.int64)

    def __call__(self, hour: pd.Timestamp) -> LiveModel:
        when = utc_timestamp("hour", hour)
        return self.models[int(self.indices(pd.DatetimeIndex([when]))[0])]


def model_schedule(changes: Sequence[tuple[Any, LiveModel]]) -> ModelSchedule:
    """The model live at each hour from ``(live_from, model)`` pairs (e.g. champion promotions).

    ``live_from``: tz-aware instants, strictly increasing; a model is live over
    ``[live_from, next live_from)``. Resolving an hour before the first ``live_from`` raises
    ``ValueError`` (no model was live).
    """
    if not isinstance(changes, Sequence) or len(changes) == 0:
        raise ValueError(
            f"changes must be a non-empty sequence of (live_from, model), got {changes!r}"
        )
    starts: list[pd.Timestamp] = []
    models: list[LiveModel] = []
    for i, item in enumerate(changes):
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], LiveModel)):
            raise ValueError(f"changes[{i}] must be a (live_from, LiveModel) pair, got {item!r}")
        ts = utc_timestamp(f"changes[{i}].live_from", item[0]).as_unit("ns")
        if starts and ts <= starts[-1]:
            raise ValueError(
                f"changes[{i}].live_from {fmt_utc(ts)} is not after changes[{i - 1}].live_from "
                f"{fmt_utc(starts[-1])}: the schedule must be strictly increasing"
            )
        starts.append(ts)
        models.append(item[1])
    return ModelSchedule(live_from=tuple(starts), models=tuple(models))


@dataclass(frozen=True)
class CandidateSchedule:
    """The ``candidate`` model live at each hour, or none: ``models[i]`` (a
    :class:`LiveModel` or ``None``) over ``[live_from[i], live_from[i + 1])``; no candidate
    before the first ``live_from`` (or at all, with no entries). Build it with
    :func:`candidate_schedule`."""

    live_from: tuple[pd.Timestamp, ...]
    models: tuple[LiveModel | None, ...]

    def indices(self, hours: pd.DatetimeIndex) -> NDArray[np.int64]:
        """Index into :attr:`models` per hour, -1 where no entry has started yet."""
        keys = np.array([t.value for t in self.live_from], dtype=np.int64)
        i = np.searchsorted(keys, hours.as_unit("ns").asi8, side="right") - 1
        return i.astype(np.int64)

    def __call__(self, hour: pd.Timestamp) -> LiveModel | None:
        when = utc_timestamp("hour", hour)
        i = int(self.indices(pd.DatetimeIndex([when]))[0])
        return None if i < 0 else self.models[i]


def candidate_schedule(changes: Sequence[tuple[Any, LiveModel | None]]) -> CandidateSchedule:
    """The candidate live at each hour from ``(live_from, model or None)`` pairs (e.g. the
    ``candidate`` alias history: a model from its ``valid_from``, ``None`` from a
    ``valid_to`` that no new assignment follows). ``live_from``: tz-aware, strictly
    increasing; may be empty (never a candidate). ``ValueError`` naming the entry otherwise.
    """
    if not isinstance(changes, Sequence):
        raise ValueError(
            f"changes must be a sequence of (live_from, model or None), got {changes!r}"
        )
    starts: list[pd.Timestamp] = []
    models: list[LiveModel | None] = []
    for i, item in enumerate(changes):
        if not (
            isinstance(item, tuple)
            and len(item) == 2
            and (item[1] is None or isinstance(item[1], LiveModel))
        ):
            raise ValueError(
                f"changes[{i}] must be a (live_from, LiveModel or None) pair, got {item!r}"
            )
        ts = utc_timestamp(f"changes[{i}].live_from", item[0]).as_unit("ns")
        if starts and ts <= starts[-1]:
            raise ValueError(
                f"changes[{i}].live_from {fmt_utc(ts)} is not after changes[{i - 1}].live_from "
                f"{fmt_utc(starts[-1])}: the schedule must be strictly increasing"
            )
        starts.append(ts)
        models.append(item[1])
    return CandidateSchedule(live_from=tuple(starts), models=tuple(models))


CandidateSource: TypeAlias = (
    LiveModel
    | ModelSchedule
    | CandidateSchedule
    | Mapping[pd.Timestamp, LiveModel | None]
    | Callable[[pd.Timestamp], LiveModel | None]
)
"""The candidate (shadow mode) live at each hour, or None: one model, a :class:`ModelSchedule`
(no candidate before its start), a :class:`CandidateSchedule`, a mapping hour -> model (a
missing hour: none) or a function of the hour returning a model or None."""


def live_model_from_calibrated(
    calibrated: CalibratedModel,
    *,
    version: int,
    train_end: Any,
    loss_function: str | None = None,
    trading_threshold: float | None | Literal["info"] = "info",
    top_features: Sequence[str] | Literal["info"] = "info",
) -> LiveModel:
    """Serve a :class:`cvn_assets.ablation.calibrated_model.CalibratedModel` as a
    :class:`LiveModel`.

    ``predict_proba`` is the primary calibrator on the booster's margins
    (``calibrated.predict_proba(X)[:, 1]``). ``loss_function`` defaults to
    ``calibrated.info["loss_function"]``; ``trading_threshold="info"`` takes
    ``calibrated.info["trading_threshold"]`` (``None`` there = never trade);
    ``top_features="info"`` the names of ``calibrated.info["reference_statistics"]
    ["top_features"]`` (none recorded: ``()``), else the names given.
    """
    if not isinstance(calibrated, CalibratedModel):
        raise ValueError(f"calibrated must be a CalibratedModel, got {type(calibrated).__name__}")
    if calibrated.model is None:
        raise ValueError("calibrated was loaded without its booster (with_model=False)")
    loss: Any = loss_function if loss_function is not None else calibrated.info.get("loss_function")
    if isinstance(trading_threshold, str):
        if trading_threshold != "info":
            raise ValueError(
                f"trading_threshold must be a probability, None or 'info', "
                f"got {trading_threshold!r}"
            )
        if "trading_threshold" not in calibrated.info:
            raise ValueError("calibrated.info has no 'trading_threshold': pass trading_threshold=")
        threshold = calibrated.info["trading_threshold"]
    else:
        threshold = trading_threshold
    if isinstance(top_features, str):
        if top_features != "info":
            raise ValueError(
                f"top_features must be a sequence of names or 'info', got {top_features!r}"
            )
        top = top_feature_names(calibrated.info.get("reference_statistics"))
    else:
        top = tuple(top_features)

    def predict_proba(X: pd.DataFrame) -> NDArray[np.float64]:
        return np.asarray(calibrated.predict_proba(X)[:, 1], dtype=np.float64)

    return LiveModel(
        version=version,
        loss_function=loss,
        predict_proba=predict_proba,
        trading_threshold=threshold,
        train_end=train_end,
        top_features=top,
    )


def top_feature_names(reference_stats: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The names of ``reference_stats["top_features"]`` (:func:`cvn_assets.guard.champion.
    reference_statistics`: dicts with a ``"name"``, or plain names), in order, at most
    :data:`N_TOP_FEATURES`; ``()`` when none are recorded."""
    if not reference_stats:
        return ()
    out = []
    for f in reference_stats.get("top_features") or ():
        out.append(str(f["name"]) if isinstance(f, Mapping) else str(f))
    return tuple(out[:N_TOP_FEATURES])


# ---------------------------------------------------------------------------------------------
# latency as a live system sees it
# ---------------------------------------------------------------------------------------------
def live_feature_row(candles_window: pd.DataFrame) -> pd.DataFrame:
    """The feature row a live system computes for the last candle of ``candles_window``.

    :func:`cvn_assets.market.features.build_features` over the trailing :data:`LIVE_WINDOW_BARS`
    candles (all of them if fewer, at least ``WARMUP_BARS + 1``), last row: a one-row
    DataFrame with the :data:`FEATURE_NAMES` columns indexed by the candle's open time. With a
    full window it equals the whole-history row up to rounding (see :data:`LIVE_WINDOW_BARS`).
    """
    if not isinstance(candles_window, pd.DataFrame):
        raise ValueError(f"candles_window must be a DataFrame, got {type(candles_window).__name__}")
    return build_features(candles_window.iloc[-LIVE_WINDOW_BARS:]).iloc[[-1]]


@dataclass(frozen=True)
class LatencyStats:
    """Per-decision latencies in milliseconds, one per timed run (after the warm-up runs)."""

    samples_ms: tuple[float, ...]

    @property
    def median_ms(self) -> float:
        return float(statistics.median(self.samples_ms))

    @property
    def p95_ms(self) -> float:
        return float(np.percentile(np.asarray(self.samples_ms), 95))

    @property
    def max_ms(self) -> float:
        return float(max(self.samples_ms))


def measure_latency(
    model: LiveModel,
    feature_row_builder: Callable[[pd.DataFrame], pd.DataFrame] | None,
    candles_window: pd.DataFrame,
    n: int = 20,
    *,
    warmup: int = 1,
) -> LatencyStats:
    """Time one decision as a live system makes it, ``n`` times, in milliseconds.

    Timed (``time.perf_counter_ns``), per run: ``feature_row_builder(candles_window)`` -- the
    causal features of the window's last candle recomputed from the trailing candles (default,
    ``None``: :func:`live_feature_row`: candle validation + ``build_features`` over
    :data:`LIVE_WINDOW_BARS` rows) -- then ``model.predict_proba`` on that one row (booster
    margins + calibrator for a :func:`live_model_from_calibrated` model). Not timed: fetching
    the candles, the threshold comparison, journaling. ``warmup`` untimed runs first (first-call
    allocations, XGBoost's thread pool), which also check the outputs: one feature row, one
    probability in [0, 1]. Use ``LatencyStats.median_ms`` as the ``latency_ms`` of a replay.
    """
    if not isinstance(model, LiveModel):
        raise ValueError(f"model must be a LiveModel, got {type(model).__name__}")
    builder = live_feature_row if feature_row_builder is None else feature_row_builder
    if not callable(builder):
        raise ValueError(f"feature_row_builder must be callable or None, got {builder!r}")
    if not isinstance(candles_window, pd.DataFrame) or candles_window.empty:
        raise ValueError("candles_window must be a non-empty DataFrame of trailing candles")
    if not (is_int(n) and n >= 1):
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if not (is_int(warmup) and warmup >= 1):
        raise ValueError(f"warmup must be an integer >= 1, got {warmup!r}")
    for _ in range(int(warmup)):
        row = builder(candles_window)
        if not isinstance(row, pd.DataFrame) or len(row) != 1:
            raise ValueError(
                f"feature_row_builder must return a one-row DataFrame, got "
                f"{type(row).__name__} of length {len(row) if hasattr(row, '__len__') else '?'}"
            )
        p = np.asarray(model.predict_proba(row), dtype=np.float64)
        if p.shape != (1,) or not (0.0 <= float(p[0]) <= 1.0):
            raise ValueError(
                f"model version {model.version}: predict_proba of one row returned {p!r}, "
                f"expected one probability"
            )
    samples = []
    for _ in range(int(n)):
        t0 = time.perf_counter_ns()
        model.predict_proba(builder(candles_window))
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    return LatencyStats(samples_ms=tuple(samples))
