"""Detector benchmark core (issue 23): false alarms on no-change nulls, delay and power on
injected faults, for the guard's own rules (pure: no Dagster, no database).

A :class:`Monitored` crypto is a champion (its ``predict`` function and registry statistics
``ref``, as :func:`cvn_assets.guard.training.registry_stats` records them) and an hourly
stream it serves: the model's features, and per hour the outcome of a long entered at the
hour's close (:func:`cvn_assets.market.trading.simulate_long_trades`: take-profit first =
the BUY label, gross return, hours to the exit). :func:`journal` turns it into what the
paper-trading journal holds -- prediction rows (``hour``, ``buy_proba``, ``feature_1..5``,
``label``, ``label_known_at``) and trades (one open position at a time, entered on
``buy_proba >= trading_threshold``, net of fees) -- after a :data:`FAULTS` fault is injected
from an onset hour. The detectors are then evaluated as the sensors do:

* ``data_drift``, ``concept_drift``, ``output_sharpness``, ``integrity``: once a day at
  00:00 UTC per crypto, on the windows of :func:`cvn_assets.guard.window_rules.drift_windows`
  with :func:`cvn_assets.guard.window_rules.drift_verdicts` (the ``model_drift`` sensor's own
  functions); the sharpness revert by :class:`cvn_assets.guard.drift.SharpnessState`;
* ``expectancy`` (per crypto, :func:`cvn_assets.guard.drift.expectancy_alert` on the 48 h /
  24 h windows of trades) and ``expectancy_p1`` / ``expectancy_any`` (its combinations over
  the cryptos, :func:`cvn_assets.guard.drift.expectancy_negative_focal` /
  :func:`cvn_assets.guard.drift.expectancy_negative_any`): every hour, as the sensors do.

Counting. An **alert** is a detector-day with at least one alarming evaluation (``warn`` or
``crit``; the sensors page at most once per detector, crypto and day). On a null stream the
false-alarm rate is ``30 * alerts / evaluated days`` (per crypto for the per-crypto
detectors: crypto-days; per book for the combined expectancy rules). On a fault run the
**delay** is the time from the onset hour to the first alarming evaluation at or after it
(in days, ``inf`` when none within the horizon); power within ``d`` days is the share of runs
with a delay ``<= d``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from cvn_assets.guard.detector_tables import (
    DetectorTable,
    fault_delay,
    null_rate,
    summarize,
)
from cvn_assets.guard.drift import (
    SharpnessState,
    Verdict,
    expectancy_alert,
    expectancy_negative_any,
    expectancy_negative_focal,
)
from cvn_assets.guard.integrity import INTEGRITY_RECENT, data_integrity
from cvn_assets.guard.window_rules import (
    CONCEPT_DAYS,
    drift_verdicts,
    drift_windows,
)

__all__ = [
    "DAILY_DETECTORS",
    "FAULTS",
    "BOOK_DETECTORS",
    "DetectorTable",
    "Monitored",
    "Journal",
    "daily_alarms",
    "expectancy_alarms",
    "fault_delay",
    "journal",
    "null_rate",
    "per_day",
    "run_benchmark",
    "shuffle_weeks",
    "summarize",
]

HOUR = pd.Timedelta(hours=1)
DAY = pd.Timedelta(days=1)
#: detectors evaluated once a day per crypto (the ``model_drift`` sensor)
DAILY_DETECTORS: tuple[str, ...] = ("data_drift", "concept_drift", "output_sharpness")
#: evaluated every hour per crypto
HOURLY_DETECTORS: tuple[str, ...] = ("data_integrity",)
#: per-crypto expectancy and its combinations over the book (hourly)
BOOK_DETECTORS: tuple[str, ...] = ("expectancy", "expectancy_p1", "expectancy_any")
#: fault name -> family (pipeline: the top feature; concept: the label relation;
#: calibration: the model's probabilities)
FAULTS: dict[str, str] = {
    "stuck": "pipeline",
    "scale_x100": "pipeline",
    "nan": "pipeline",
    "lag_1d": "pipeline",
    "edge_removed": "concept",
    "edge_reversed": "concept",
    "sharpened": "calibration",
    "shifted": "calibration",
}
#: calibration faults: logit scale and shift
SHARPEN_FACTOR = 2.0
SHIFT_LOGIT = 1.0


@dataclasses.dataclass(frozen=True)
class Monitored:
    """One crypto's champion and the hourly stream it serves.

    ``features``: the model's input columns, index = the hours (UTC, ascending, the candle's
    open time); ``take_profit`` (bool: the BUY label), ``gross_return`` (fraction) and
    ``exit_offset`` (candles from the entry to the exit fill, >= 1) per hour, the outcome of a
    long entered at that hour's close; ``predict``: features -> buy_proba in [0, 1];
    ``ref``: the registry statistics (``top_features``, ``train_mean_confidence``,
    ``oos_f1_buy``, ``f1_threshold``, ``trading_threshold``, ...); ``loss_function`` of the
    champion; ``fee_per_side`` (fraction)."""

    crypto: str
    features: pd.DataFrame
    take_profit: NDArray[np.bool_]
    gross_return: NDArray[np.float64]
    exit_offset: NDArray[np.int64]
    predict: Callable[[pd.DataFrame], NDArray[np.float64]]
    ref: Mapping[str, Any]
    loss_function: str
    fee_per_side: float

    def __post_init__(self) -> None:
        n = len(self.features)
        for name in ("take_profit", "gross_return", "exit_offset"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{self.crypto}: {name} has {len(getattr(self, name))} values, "
                                 f"features {n} rows")  # fmt: skip
        idx = self.features.index
        if not isinstance(idx, pd.DatetimeIndex) or idx.tz is None:
            raise ValueError(f"{self.crypto}: features must have an aware DatetimeIndex")
        if (np.asarray(self.exit_offset) < 1).any():
            raise ValueError(f"{self.crypto}: exit_offset must be >= 1")

    @property
    def top_features(self) -> list[str]:
        return [f["name"] for f in self.ref.get("top_features") or []]


@dataclasses.dataclass(frozen=True)
class Journal:
    """What the paper-trading journal would hold for a :class:`Monitored` stream."""

    crypto: str
    predictions: pd.DataFrame  # hour, buy_proba, feature_1..5, label, label_known_at
    trades: pd.DataFrame  # exit_time (UTC), net_return
    loss_function: str
    ref: Mapping[str, Any]
    #: the features recomputed from the candles (the stream's own, unbroken; index = hours)
    recomputed: pd.DataFrame | None = None


def _logit(p: NDArray[np.float64]) -> NDArray[np.float64]:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(q / (1 - q))


def _sigmoid(z: NDArray[np.float64]) -> NDArray[np.float64]:
    return 1.0 / (1.0 + np.exp(-z))


def _feature_fault(x: pd.DataFrame, name: str, kind: str, k0: int) -> pd.DataFrame:
    """``x`` with the column ``name`` broken from row ``k0`` on (a copy)."""
    out = x.copy()
    col = out.columns.get_loc(name)
    v = out[name].to_numpy(np.float64).copy()
    if kind == "stuck":
        v[k0:] = v[k0]
    elif kind == "scale_x100":
        v[k0:] = v[k0:] * 100.0
    elif kind == "nan":
        v[k0:] = np.nan
    elif kind == "lag_1d":
        orig = v.copy()
        v[k0:] = orig[k0 - 24 : len(orig) - 24] if k0 >= 24 else np.r_[orig[:24], orig][k0:-24]
    out.iloc[:, col] = v
    return out


def _outcome_fault(
    m: Monitored, proba: NDArray[np.float64], kind: str, k0: int, rng: np.random.Generator
) -> NDArray[np.int64]:
    """Row permutation of the outcomes from row ``k0`` on, within 168-hour blocks:
    ``edge_removed`` at random (the label no longer depends on the features; the block keeps
    its volatility regime), ``edge_reversed`` so that the block's highest buy_proba gets its
    worst outcome (by gross return)."""
    n = len(proba)
    perm = np.arange(n)
    for a in range(k0, n, 168):
        rows = np.arange(a, min(a + 168, n))
        if kind == "edge_removed":
            perm[rows] = rng.permutation(rows)
        else:
            by_p = rows[np.argsort(proba[rows], kind="stable")]  # ascending proba
            by_r = rows[np.argsort(-m.gross_return[rows], kind="stable")]  # best outcome first
            perm[by_p] = by_r  # lowest proba <- best outcome, highest <- worst
    return perm


def journal(
    m: Monitored, fault: str | None = None, onset: pd.Timestamp | None = None, seed: int = 0
) -> Journal:
    """The journal of ``m`` with ``fault`` (a key of :data:`FAULTS`, None: no change)
    injected from the hour ``onset`` on. ``ValueError`` for an unknown fault, or an onset
    outside the stream."""
    x = m.features
    n = len(x)
    k0 = n
    if fault is not None:
        if fault not in FAULTS:
            raise ValueError(f"fault must be one of {sorted(FAULTS)}, got {fault!r}")
        if onset is None or not (x.index[0] <= onset <= x.index[-1]):
            raise ValueError(f"onset {onset!r} is outside the stream {x.index[0]}..{x.index[-1]}")
        k0 = int(x.index.searchsorted(onset))
    top = m.top_features
    if fault in ("stuck", "scale_x100", "nan", "lag_1d"):
        x = _feature_fault(x, top[0], fault, k0)
    proba = np.asarray(m.predict(x), dtype=np.float64)
    if fault == "sharpened":
        proba[k0:] = _sigmoid(SHARPEN_FACTOR * _logit(proba[k0:]))
    elif fault == "shifted":
        proba[k0:] = _sigmoid(_logit(proba[k0:]) + SHIFT_LOGIT)
    perm = np.arange(n)
    if fault in ("edge_removed", "edge_reversed"):
        perm = _outcome_fault(m, m.predict(m.features), fault, k0, np.random.default_rng(seed))
    tp = m.take_profit[perm]
    gross = m.gross_return[perm]
    off = m.exit_offset[perm]
    hours = x.index
    known = hours + pd.to_timedelta(off + 1, unit="h")
    pred = pd.DataFrame({"hour": hours, "buy_proba": proba})
    for i, name in enumerate(top[:5], start=1):
        pred[f"feature_{i}"] = x[name].to_numpy(np.float64)
    pred["label"] = tp.astype(np.float64)
    pred["label_known_at"] = known
    thr = m.ref.get("trading_threshold")
    trades = _trades(hours, proba, thr, gross - 2.0 * m.fee_per_side, off)
    return Journal(m.crypto, pred, trades, m.loss_function, m.ref, m.features)


def _trades(
    hours: pd.DatetimeIndex,
    proba: NDArray[np.float64],
    threshold: float | None,
    net: NDArray[np.float64],
    off: NDArray[np.int64],
) -> pd.DataFrame:
    """One open position at a time (paper trading's rule): a BUY at a flat hour opens a long
    at its close; it exits in the candle ``off`` later (``exit_time`` = that candle's open);
    a BUY at the exit candle opens the next one. Trades exiting past the stream are dropped."""
    if threshold is None:
        return pd.DataFrame({"exit_time": pd.DatetimeIndex([], tz="UTC"), "net_return": []})
    buys = np.flatnonzero(proba >= threshold)
    n = len(hours)
    exits, rets = [], []
    free = 0
    for b in buys:
        i = int(b)
        if i < free:
            continue
        j = i + int(off[i])
        if j >= n:
            break
        exits.append(j)
        rets.append(net[i])
        free = j
    return pd.DataFrame({"exit_time": hours[np.array(exits, dtype=np.int64)], "net_return": rets})


# --------------------------------------------------------------------------- evaluation


def _days(j: Journal, start: pd.Timestamp, end: pd.Timestamp) -> pd.DatetimeIndex:
    """The 00:00 UTC evaluation times in ``[start, end]`` (the sensor's day buckets)."""
    return pd.date_range(start.ceil("D"), end.floor("D"), freq="D", tz="UTC")


def daily_alarms(j: Journal, start: pd.Timestamp, end: pd.Timestamp) -> dict[str, pd.Series]:
    """Per daily detector (:data:`DAILY_DETECTORS` plus ``sharpness_revert``), a boolean
    Series over the evaluation days in ``[start, end]``: the detector alarmed that day. The
    windows read only rows of hours ``>= start - 14 d`` that the journal holds (so a stream
    begins with ``insufficient`` days, as after a promotion)."""
    rows = j.predictions
    hours = rows["hour"]
    out: dict[str, list[bool]] = {}
    state = SharpnessState()
    days = _days(j, start, end)
    for day in days:
        lo = day - pd.Timedelta(days=CONCEPT_DAYS)
        a, b = hours.searchsorted(lo), hours.searchsorted(day - HOUR, side="right")
        week, matured = drift_windows(rows.iloc[a:b], day.to_pydatetime())
        verdicts = drift_verdicts(week, matured, j.ref, j.loss_function)
        for name, v in verdicts.items():
            out.setdefault(name, []).append(v.alarm)
        state = state.update(verdicts["output_sharpness"])
        out.setdefault("sharpness_revert", []).append(state.revert)
        if state.revert:
            state = SharpnessState()
    return {k: pd.Series(v, index=days, dtype=bool) for k, v in out.items()}


def integrity_alarms(j: Journal, start: pd.Timestamp, end: pd.Timestamp) -> pd.Series:
    """:func:`cvn_assets.guard.window_rules.integrity_verdict` every hour in ``[start, end]``
    (a boolean Series over the hours: it alarmed); computed with the function it calls,
    :func:`cvn_assets.guard.integrity.data_integrity`, on the same rows (hours ``[t - 6 h,
    t - 1 h]``, time order) from NumPy columns, for speed (tested equal)."""
    rows = j.predictions
    hours = rows["hour"]
    at = pd.date_range(start.ceil("h"), end.floor("h"), freq="h", tz="UTC")
    flags = np.zeros(len(at), bool)
    top = [f["name"] for f in j.ref.get("top_features") or []][:5]
    cols = {name: rows[f"feature_{i}"].to_numpy(np.float64) for i, name in enumerate(top, 1)}
    edges = {f["name"]: f["train_decile_edges"] for f in j.ref["top_features"][:5]}
    again = {}
    if j.recomputed is not None:
        at_rows = j.recomputed.reindex(pd.DatetimeIndex(hours))
        again = {k: at_rows[k].to_numpy(np.float64) for k in cols if k in j.recomputed.columns}
    for i, t in enumerate(at):
        # the rows integrity_verdict(rows, ref, t, recomputed) takes: [t - recent h, t - 1 h]
        a = hours.searchsorted(t - pd.Timedelta(hours=INTEGRITY_RECENT))
        b = hours.searchsorted(t - HOUR, side="right")
        window = {k: v[a:b] for k, v in cols.items()}
        rec = {k: v[a:b] for k, v in again.items()} if again else None
        flags[i] = data_integrity(window, edges, recomputed=rec).alarm
    return pd.Series(flags, index=at, dtype=bool)


def evaluate_daily(j: Journal, start: pd.Timestamp, end: pd.Timestamp) -> dict[str, pd.Series]:
    """:func:`daily_alarms` and, hourly, ``data_integrity`` (:func:`integrity_alarms`)."""
    out = daily_alarms(j, start, end)
    out["data_integrity"] = integrity_alarms(j, start, end)
    return out


_H_NS = 3_600_000_000_000


def _expectancy_verdict(e: NDArray[np.int64], r: NDArray[np.float64], at: int) -> Verdict:
    """:func:`expectancy_alert` on the trades exiting in ``(at - 48 h, at]`` and ``(at - 24 h,
    at]`` (``e``: sorted exit times in ns, ``r``: their net returns; the sensor's windows,
    :func:`sensors.evaluation.evaluate_expectancy`)."""
    a48 = int(np.searchsorted(e, at - 48 * _H_NS, side="right"))
    a24 = int(np.searchsorted(e, at - 24 * _H_NS, side="right"))
    b = int(np.searchsorted(e, at, side="right"))
    return expectancy_alert(r[a48:b], r[a24:b])


def expectancy_alarms(
    journals: Sequence[Journal], start: pd.Timestamp, end: pd.Timestamp
) -> dict[str, pd.Series]:
    """Hourly expectancy evaluations in ``[start, end]``: ``expectancy: <crypto>`` (that
    crypto's :func:`expectancy_alert` alarmed),
    ``expectancy_p1`` (:func:`expectancy_negative_focal` over the focal champions alarmed),
    ``expectancy_any`` (:func:`expectancy_negative_any` over every champion alarmed), each a
    boolean Series over the hours (:func:`per_day` reduces them to alert days)."""
    hours = pd.date_range(start.ceil("h"), end.floor("h"), freq="h", tz="UTC")
    focal = [jj.loss_function == "focal" for jj in journals]
    flags: dict[str, NDArray[np.bool_]] = {
        k: np.zeros(len(hours), bool) for k in ("expectancy_p1", "expectancy_any")
    }
    for jj in journals:
        flags[f"expectancy: {jj.crypto}"] = np.zeros(len(hours), bool)
    cols = {
        jj.crypto: (
            pd.DatetimeIndex(jj.trades["exit_time"]).as_unit("ns").asi8,
            jj.trades["net_return"].to_numpy(np.float64),
        )
        for jj in journals
        if len(jj.trades)
    }
    for h_i, at in enumerate(hours.as_unit("ns").asi8):
        per: dict[str, Verdict] = {}
        for jj in journals:
            if jj.crypto not in cols:
                continue
            per[jj.crypto] = v = _expectancy_verdict(*cols[jj.crypto], int(at))
            flags[f"expectancy: {jj.crypto}"][h_i] = v.alarm
        if not per:
            continue
        fp = {c: v for (c, v), f in zip(per.items(), focal, strict=False) if f}
        flags["expectancy_p1"][h_i] = expectancy_negative_focal(fp, bool(fp)).alarm
        flags["expectancy_any"][h_i] = expectancy_negative_any(per).alarm
    return {k: pd.Series(v, index=hours, dtype=bool) for k, v in flags.items()}


def per_day(flags: pd.Series) -> pd.Series:
    """Hourly alarm flags reduced to alert days (any alarm in the UTC day)."""
    return flags.groupby(flags.index.floor("D")).any()


# --------------------------------------------------------------------------- the benchmark


def shuffle_weeks(m: Monitored, seed: int) -> Monitored:
    """``m`` with its whole 168-hour blocks (features and outcomes together) in a seeded
    random order, on the original hours: a null with the weeks' contents kept and their
    order (regime persistence from week to week) broken. A last partial block stays last."""
    n = len(m.features)
    nb = n // 168
    order = np.random.default_rng(seed).permutation(nb)
    rows = np.concatenate(
        [np.arange(b * 168, (b + 1) * 168) for b in order] + [np.arange(nb * 168, n)]
    )
    x = m.features.iloc[rows].set_axis(m.features.index)
    return dataclasses.replace(
        m,
        features=x,
        take_profit=m.take_profit[rows],
        gross_return=m.gross_return[rows],
        exit_offset=m.exit_offset[rows],
    )


#: evaluation horizon after an onset, per fault family
HORIZON_DAYS: dict[str, int] = {"pipeline": 14, "calibration": 14, "concept": 28}
#: evaluations start this long after the monitored stream starts (full 14-day windows)
WARMUP = pd.Timedelta(days=15)


def onsets(start: pd.Timestamp, end: pd.Timestamp, every_days: int, horizon_days: int,
           seed: int) -> list[pd.Timestamp]:  # fmt: skip
    """Fault onsets every ``every_days`` from ``start + WARMUP``, each at a seeded random
    hour of its day, while ``onset + horizon_days`` fits before ``end``."""
    rng = np.random.default_rng(seed)
    out = []
    t = start.ceil("D") + WARMUP
    while t + pd.Timedelta(days=horizon_days + 1) <= end:
        out.append(t + pd.Timedelta(hours=int(rng.integers(1, 24))))
        t += pd.Timedelta(days=every_days)
    return out


def _paired(flags: pd.Series, null: pd.Series | None) -> pd.Series:
    """The alarms of a fault run that the same stream without the fault did not raise at
    the same evaluation (attributable to the fault)."""
    if null is None:
        return flags
    return flags & ~null.reindex(flags.index, fill_value=False).astype(bool)


def _book_key(name: str) -> str:
    return "expectancy" if name.startswith("expectancy: ") else name


def run_benchmark(
    monitored: Sequence[Monitored],
    *,
    faults: Sequence[str] = tuple(FAULTS),
    every_days: int = 21,
    seed: int = 0,
    expectancy: bool = True,
) -> tuple[list[DetectorTable], dict[str, Any]]:
    """The nulls (``held_out``: the monitored streams as they are; ``shuffled_weeks``:
    :func:`shuffle_weeks`) and the fault runs (every fault of ``faults`` at every onset of
    :func:`onsets`, in every crypto at once) for every detector. A fault run's delay counts
    only **attributable** alarms: those the same stream without the fault did not raise at
    the same evaluation (so a detector's false alarms are not read as power). Returns the
    tables (:func:`summarize`) and the onsets per fault (``raw["onsets"]``)."""
    nulls: dict[str, dict[str, list[pd.Series]]] = {}
    base: dict[tuple[str, str], pd.Series] = {}  # (crypto, detector) -> held-out flags
    for kind in ("held_out", "shuffled_weeks"):
        streams = [m if kind == "held_out" else shuffle_weeks(m, seed + i)
                   for i, m in enumerate(monitored)]  # fmt: skip
        js = [journal(m) for m in streams]
        per: dict[str, list[pd.Series]] = {}
        for j in js:
            idx = j.predictions["hour"]
            for name, f in evaluate_daily(j, idx.iloc[0] + WARMUP, idx.iloc[-1]).items():
                per.setdefault(name, []).append(per_day(f))
                if kind == "held_out":
                    base[(j.crypto, name)] = f
        if expectancy:
            idx = js[0].predictions["hour"]
            ex = expectancy_alarms(js, idx.iloc[0] + WARMUP, idx.iloc[-1])
            for name, f in ex.items():
                per.setdefault(_book_key(name), []).append(per_day(f))
                if kind == "held_out":
                    base[("*", name)] = f
        nulls[kind] = per
    delays: dict[str, dict[str, list[float]]] = {}
    raw: dict[str, Any] = {"onsets": {}}
    idx = monitored[0].features.index
    for fault in faults:
        hz = HORIZON_DAYS[FAULTS[fault]]
        when = onsets(idx[0], idx[-1], every_days, hz, seed)
        raw["onsets"][fault] = [str(t) for t in when]
        per_f: dict[str, list[float]] = {}
        horizon = pd.Timedelta(days=hz)
        for t0 in when:
            js = [journal(m, fault, t0, seed) for m in monitored]
            for j in js:
                for name, f in evaluate_daily(j, t0, t0 + horizon).items():
                    f = _paired(f, base.get((j.crypto, name)))
                    per_f.setdefault(name, []).append(fault_delay(f, t0, horizon))
            if expectancy:
                for name, f in expectancy_alarms(js, t0, t0 + horizon).items():
                    f = _paired(f, base.get(("*", name)))
                    per_f.setdefault(_book_key(name), []).append(fault_delay(f, t0, horizon))
        delays[fault] = per_f
    return summarize(nulls, delays), raw
