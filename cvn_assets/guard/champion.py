"""Champion models of the production guard (pure: no Dagster, no database).

What the ``champion_models`` asset (:mod:`cvn_assets.assets.guard`) decides and computes, one
crypto at a time:

* :func:`choose_variant`: the focal variant the gate verdict locks (several locked: the one
  with the best mean f1_buy delta, ties by name), else the baseline.
* :func:`whole_history_plan`: the sweep cell's plan stretched over the whole history, so the
  champion is trained with exactly the cell's code path (:func:`cvn_assets.ablation.evaluation.
  train_cell`): train = every row before the early-stopping slice, early stopping on the last
  slice of train, calibration block at the very end (calibrators and both thresholds fitted
  there). Purged and embargoed with :mod:`cvn_assets.market.folds`'s own helpers. **Test block:
  empty** (documented choice: the whole history is used for fitting; the out-of-sample
  evidence is the sweep's, and then paper trading's).
* :func:`calibrate_whole_history`: the calibration half of :func:`cvn_assets.ablation.evaluation.
  calibrate_and_evaluate` without its test-block scoring (same calibrators, same f1 and
  trading thresholds, fitted on the calibration block).
* :func:`reference_statistics`: what the drift detectors need, frozen with the model.
* :func:`canary_passed`: the staged-rollout rule (spec 6.4) for the non-canary cryptos.
* :func:`rollback_plan`: what the factor-level kill switch (``rollback_job``) does, decided
  from typed registry versions (:class:`RegistryVersion`) and returned as a
  :class:`RollbackPlan` the op executes.

The loss function of a champion: the variant's, unless the kill switch ``CVN_LOSS_FUNCTION``
says ``binary:logistic`` -- then the champion is trained with cross-entropy whatever the
variant says (:func:`effective_variant`). The sweep is an ablation and never reads the flag.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from cvn_assets.ablation.calibrated_model import CalibratedModel
from cvn_assets.ablation.evaluation import cell_arrays, fit_on_calibration_block
from cvn_assets.ablation.guardrails import CROSS_ENTROPY, FOCAL
from cvn_assets.ablation.metrics import MIN_TRADE_SHARE, classification_metrics
from cvn_assets.ablation.training import TrainResult, XGBWrapper
from cvn_assets.ablation.variants import Variant
from cvn_assets.guard.monitoring import decile_edges, psi, shape_reference, training_shares
from cvn_assets.market.features import FEATURE_NAMES
from cvn_assets.market.folds import (
    FoldError,
    FoldPlan,
    _check_times,
    _dropped_around,
    _early_stopping_slice,
    _require_buys,
)

__all__ = [
    "CANARY_DAYS",
    "CANARY_MIN_TRADES",
    "TOP_FEATURES",
    "Repromotion",
    "RegistryVersion",
    "RollbackPlan",
    "calibrate_whole_history",
    "canary_passed",
    "choose_variant",
    "effective_variant",
    "reference_statistics",
    "rollback_plan",
    "whole_history_plan",
]

#: the canary rule's defaults (see :func:`canary_passed`)
CANARY_DAYS = 14
CANARY_MIN_TRADES = 20
#: how many features (by gain importance) the drift detectors watch
TOP_FEATURES = 5


# --------------------------------------------------------------------------------------------
# which variant
# --------------------------------------------------------------------------------------------
def choose_variant(verdicts: pd.DataFrame, results: pd.DataFrame, baseline: str) -> tuple[str, str]:
    """``(variant, reason)``: the locked focal variant, else ``baseline``.

    ``verdicts``: the ``gate_verdicts`` table (columns ``variant``, ``lock``, and
    ``mean_delta``, the mean f1_buy delta against the baseline over crypto x fold cells).
    Several locked variants: the largest ``mean_delta``; when the verdict table has no
    ``mean_delta`` it is recomputed from ``results`` (``finetune_results``: mean f1_buy of the
    variant minus the baseline's over the cells both have). Ties go to the smaller name
    (deterministic). The baseline is never "locked" (it is the reference).
    """
    if verdicts is None or len(verdicts) == 0:
        return baseline, f"no gate verdict: the baseline {baseline!r}"
    for col in ("variant", "lock"):
        if col not in verdicts.columns:
            raise ValueError(f"verdict table has no column {col!r}")
    v = verdicts[verdicts["variant"].astype(str) != baseline]
    locked = v[v["lock"].fillna(False).astype(bool)]
    if locked.empty:
        return baseline, "no focal variant locked by the gate verdict: the baseline"
    deltas: dict[str, float] = {}
    for name in sorted(locked["variant"].astype(str)):
        row = locked[locked["variant"].astype(str) == name].iloc[0]
        d = row.get("mean_delta") if "mean_delta" in locked.columns else None
        if d is None or (isinstance(d, float) and math.isnan(d)):
            d = _mean_f1_delta(results, name, baseline)
        deltas[name] = float(d)
    best = max(sorted(deltas), key=lambda n: deltas[n])  # max keeps the first of ties
    others = "" if len(deltas) == 1 else f" (best mean f1_buy delta among {sorted(deltas)})"
    return best, f"locked by the gate verdict, mean f1_buy delta {deltas[best]:+.4f}{others}"


def _mean_f1_delta(results: pd.DataFrame, variant: str, baseline: str) -> float:
    if results is None or len(results) == 0:
        raise ValueError(f"variant {variant!r}: no mean_delta and no results to compute it")
    key = ["crypto", "fold"]
    a = results[results["variant"] == variant].set_index(key)["f1_buy"]
    b = results[results["variant"] == baseline].set_index(key)["f1_buy"]
    common = a.index.intersection(b.index)
    if common.empty:
        raise ValueError(f"variant {variant!r}: no cell shared with the baseline {baseline!r}")
    return float((a[common] - b[common]).mean())


def effective_variant(variant: Variant, loss_flag: str, baseline: Variant) -> Variant:
    """The variant a champion is trained as: ``variant``, or ``baseline`` (cross-entropy) when
    the kill switch ``CVN_LOSS_FUNCTION`` is ``binary:logistic`` and ``variant`` is focal.

    A focal variant trained with cross-entropy *is* the baseline (gamma and alpha no longer
    matter; training is deterministic), so it is trained, stored and registered as the
    baseline: its fingerprint and registry key are the baseline champion's. ``focal`` keeps
    every variant as it is (the flag switches focal off; it never switches it on)."""
    # the flag's name is spelled out: resources.config_store.LOSS_FLAG lives above this pure
    # module (the config store imports cvn_assets.guard)
    if loss_flag not in (FOCAL, CROSS_ENTROPY):
        raise ValueError(f"CVN_LOSS_FUNCTION={loss_flag!r}: must be {FOCAL!r} or {CROSS_ENTROPY!r}")
    if baseline.loss_function != CROSS_ENTROPY:
        raise ValueError(f"baseline {baseline.name!r} is not {CROSS_ENTROPY}")
    if loss_flag == CROSS_ENTROPY and variant.loss_function != CROSS_ENTROPY:
        return baseline
    return variant


# --------------------------------------------------------------------------------------------
# the whole-history plan
# --------------------------------------------------------------------------------------------
def whole_history_plan(
    t0: Any,
    t1: Any,
    *,
    early_stopping_frac: float,
    calibration_frac: float,
    embargo_pct: float,
    labels: Any = None,
) -> FoldPlan:
    """Train / early-stopping / calibration positions over the whole history; ``test`` empty.

    Layout, oldest to newest: ``train | purge | early_stopping | purge | calibration``.

    * ``calibration`` = the last ``ceil(calibration_frac * n)`` rows;
    * candidates for train = every other row, purged against the calibration block's label
      window (``folds._dropped_around``; no embargo: nothing follows the block);
    * ``early_stopping`` = the last ``ceil(early_stopping_frac * len(candidates))`` contiguous
      candidates (``folds._early_stopping_slice``), as in a sweep cell;
    * ``train`` = the remaining candidates purged against the early-stopping window and
      embargoed after it (``int(n * embargo_pct)`` rows, the sweep's rule).

    The four sets are disjoint and no train row shares label time with the early-stopping or
    calibration rows (``folds.leakage_check``). ``FoldError`` names an empty set, or (with
    ``labels``) a set without BUY labels. ``fold`` is -1.
    """
    a0, a1 = _check_times(t0, t1)
    n = len(a0)
    for name, frac in (("early_stopping_frac", early_stopping_frac),
                       ("calibration_frac", calibration_frac)):  # fmt: skip
        if not (math.isfinite(frac) and 0.0 < frac < 1.0):
            raise ValueError(f"{name} must be in (0, 1), got {frac!r}")
    if not (math.isfinite(embargo_pct) and 0.0 <= embargo_pct < 1.0):
        raise ValueError(f"embargo_pct must be in [0, 1), got {embargo_pct!r}")
    embargo = int(n * embargo_pct)
    n_cal = math.ceil(calibration_frac * n)
    if n_cal >= n:
        raise FoldError(f"whole history: {n} rows leave nothing before a {n_cal}-row calibration")
    calibration = np.arange(n - n_cal, n, dtype=np.int64)
    keep = ~_dropped_around(a0, a1, calibration, embargo)
    keep[calibration] = False
    candidates = np.flatnonzero(keep).astype(np.int64)
    if candidates.size < 2:
        raise FoldError(
            f"whole history: {candidates.size} training rows left before the calibration "
            "block after purging; need at least 2 (train + early stopping)"
        )
    n_es = max(1, math.ceil(early_stopping_frac * candidates.size))
    early = _early_stopping_slice(candidates, n_es)
    if early is None or n_es >= candidates.size:
        raise FoldError(
            f"whole history: no contiguous run of {n_es} training rows for early stopping"
        )
    rest = np.setdiff1d(candidates, early, assume_unique=True)
    train = rest[~_dropped_around(a0, a1, early, embargo)[rest]]
    if train.size == 0:
        raise FoldError("whole history: no training rows left after purging early stopping")
    if labels is not None:
        y = np.asarray(labels)
        if y.shape != (n,):
            raise ValueError(f"labels must have one value per row ({n}), got shape {y.shape}")
        sets = [("calibration", calibration), ("early_stopping", early), ("train", train)]
        _require_buys(y, -1, sets)
    return FoldPlan(
        fold=-1,
        train=train,
        early_stopping=early,
        calibration=calibration,
        test=np.empty(0, dtype=np.int64),
        info={
            "n_rows": n,
            "embargo_rows": embargo,
            "train_dropped": int(n - n_cal - candidates.size),
            "train_dropped_for_early_stopping": int(len(rest) - len(train)),
        },
    )


# --------------------------------------------------------------------------------------------
# calibration block: calibrators and the two thresholds
# --------------------------------------------------------------------------------------------
def calibrate_whole_history(
    train: TrainResult,
    variant: Variant,
    dataset: pd.DataFrame,
    plan: FoldPlan,
    *,
    primary: str,
    fee_per_side: float,
    min_trade_share: float = MIN_TRADE_SHARE,
) -> CalibratedModel:
    """Calibrators (every method), the f1 threshold and the trading threshold, fitted on the
    calibration block as in :func:`cvn_assets.ablation.evaluation.calibrate_and_evaluate`; no test
    block is scored (the plan has none). ``threshold`` is the f1-maximising one;
    ``info["trading_threshold"]`` the net-expectancy one (None = do not trade), trading in at
    least ``min_trade_share`` of the block's hours (``info["min_trade_share"]``)."""
    model = train.model
    calibrators, threshold, trading = fit_on_calibration_block(
        model,
        dataset,
        plan,
        primary=primary,
        fee_per_side=fee_per_side,
        min_trade_share=min_trade_share,
    )
    times = dataset.index
    info: dict[str, Any] = {
        "variant": variant.name,
        "loss_function": variant.loss_function,
        "gamma": variant.gamma,
        "alpha": variant.alpha,
        "primary_calibration": primary,
        "n_train": int(len(plan.train)),
        "n_early_stopping": int(len(plan.early_stopping)),
        "n_calibration": int(len(plan.calibration)),
        "n_test": 0,
        "threshold": threshold,
        "trading_threshold": trading,
        "min_trade_share": min_trade_share,
        "best_iteration": int(train.best_iteration),
        "train_seconds": float(train.train_seconds),
        "train_start": str(times[int(plan.train[0])]),
        "data_end": str(times[-1]),
    }
    return CalibratedModel(
        model=model, calibrators=calibrators, primary=primary, threshold=threshold, info=info
    )


# --------------------------------------------------------------------------------------------
# reference statistics for the drift detectors
# --------------------------------------------------------------------------------------------
def top_gain_features(model: XGBWrapper, k: int = TOP_FEATURES) -> list[tuple[str, float]]:
    """The ``k`` features of largest gain importance (XGBoost's ``"gain"``: the average gain
    of the splits on the feature, ``booster.get_score(importance_type="gain")``), as
    ``[(name, gain)]``, ties by name.
    Keys ``f<i>`` (a booster without names) map to ``model.feature_names[i]``."""
    scores = model.booster.get_score(importance_type="gain")
    names = list(model.feature_names or FEATURE_NAMES)
    out: dict[str, float] = {}
    for key, gain in scores.items():
        name = key
        if key not in names and key.startswith("f") and key[1:].isdigit():
            name = names[int(key[1:])]
        out[name] = float(gain)  # type: ignore[arg-type]
    ranked = sorted(out.items(), key=lambda kv: (-kv[1], kv[0]))
    return ranked[:k]


#: rows of the data-drift window (7 days of hourly rows)
DRIFT_WINDOW_ROWS = 168


def window_psi_quantile(
    train_values: np.ndarray, window: int = DRIFT_WINDOW_ROWS, q: float = 0.99
) -> float | None:
    """The ``q`` quantile of the PSI of consecutive, non-overlapping ``window``-row blocks of
    the training series against the series' own deciles: the no-drift spread of a 7-day PSI
    **with the feature's autocorrelation** (volatility features persist for days, so a week
    of them covers a few deciles even when nothing has changed; the iid null of
    :func:`cvn_assets.guard.monitoring.psi_null_quantile` misses that). ``q`` = 0.99: the data-drift
    rule takes the worst of 5 features, so each is held at 1 - 0.05 / 5 (Bonferroni); at the
    95th percentile 5 autocorrelated features false-alarmed on ~30 % of no-drift days
    (measured with ``bench/bench_sensors.py``'s AR(1) features). Linear interpolation between
    the ~50-90 weekly blocks of a training set. None with < 20 blocks. Bins and expected
    shares are the detector's: the merged decile bins and the series' own shares in them
    (:func:`cvn_assets.guard.monitoring.training_shares`), so a mass point does not inflate the
    floor (with 1/10 shares a feature that is 0 in 30 % of its rows had a floor of ~1.6,
    above the crit bound: it could never alarm)."""
    x = np.asarray(train_values, dtype=np.float64)
    x = x[np.isfinite(x)]
    n_blocks = x.size // window
    if n_blocks < 20:
        return None
    edges = decile_edges(x)
    shares = training_shares(x, edges)
    values = [
        psi(x[i * window : (i + 1) * window], edges, expected=shares) for i in range(n_blocks)
    ]
    return float(np.quantile(values, q))


#: rows of the concept-drift window (14 days of hourly rows)
CONCEPT_WINDOW_ROWS = 336


def window_f1_gap_quantile(
    proba: np.ndarray,
    y: np.ndarray,
    threshold: float,
    window: int = CONCEPT_WINDOW_ROWS,
    q: float = 0.95,
) -> float | None:
    """The ``q`` quantile of ``f1(block) - f1(window)`` over consecutive, non-overlapping
    ``window``-row windows of a held-out block (the calibration block): how far a 14-day
    f1_buy falls below the block's own f1_buy with no drift at all, **with** the market's
    regimes and the labels' autocorrelation (the delta-method se of
    :func:`cvn_assets.guard.drift.concept_drift` assumes independent rows and misses both). None
    with < 8 windows."""
    p = np.asarray(proba, dtype=np.float64)
    yy = np.asarray(y, dtype=np.int64)
    n = p.size // window
    if n < 8:
        return None
    pred = (p >= threshold).astype(np.int8)

    def f1(rows: slice) -> float:
        return float(classification_metrics(yy[rows], pred[rows])["f1_buy"])

    whole = f1(slice(None))
    gaps = [whole - f1(slice(i * window, (i + 1) * window)) for i in range(n)]
    return float(np.quantile(gaps, q))


def _feature_reference(name: str, gain: float, train_values: pd.Series) -> dict[str, Any]:
    """One top feature's frozen reference: gain, decile edges, bin shares, window floor."""
    x = train_values.to_numpy(np.float64)
    edges = decile_edges(x)
    return {
        "name": name,
        "gain": gain,
        "train_decile_edges": edges.tolist(),
        "train_bin_shares": training_shares(x, edges).tolist(),
        "window_psi_q99": window_psi_quantile(x),
        **(shape_reference(x) or {}),  # issue 23: the data-drift rule's window-shape bins
    }


def reference_statistics(
    model: CalibratedModel,
    dataset: pd.DataFrame,
    plan: FoldPlan,
    *,
    oos_f1_buy: float | None = None,
    k: int = TOP_FEATURES,
) -> dict[str, Any]:
    """What the drift detectors compare live data against, frozen at training time.

    * ``top_features``: the ``k`` features of largest gain importance, with their gain,
      the 9 interior decile edges of their **training** values (``train_decile_edges``,
      ``monitoring.decile_edges``), the training values' shares in the merged bins of those
      edges (``train_bin_shares``, ``monitoring.training_shares``: what the data-drift PSI
      expects; fewer than 10 when deciles tie) and the no-drift floor ``window_psi_q99``;
      and the window-shape reference the data-drift rule uses (``shape_edges``,
      ``shape_shares``, ``shape_window_psi_q99``: ``monitoring.shape_reference``);
    * ``buy_proba_decile_edges``: decile edges of the calibrated ``buy_proba`` on the
      **calibration block** (the most recent data the model saw, out of its training rows);
    * ``train_mean_confidence``: mean of ``max(p, 1 - p)`` over the training rows (calibrated
      ``p``);
    * ``oos_f1_buy``: the sweep's out-of-sample f1_buy for this crypto and variant (passed in).
    """
    X_tr, _ = cell_arrays(dataset, plan.train)
    X_cal, y_cal = cell_arrays(dataset, plan.calibration)
    top = top_gain_features(model.model, k)
    p_tr = model.predict_proba(X_tr)[:, 1]
    p_cal = model.predict_proba(X_cal)[:, 1]
    return {
        "top_features": [_feature_reference(name, gain, X_tr[name]) for name, gain in top],
        "buy_proba_decile_edges": decile_edges(p_cal).tolist(),
        "train_mean_confidence": float(np.mean(np.maximum(p_tr, 1.0 - p_tr))),
        "oos_f1_buy": None if oos_f1_buy is None else float(oos_f1_buy),
        "f1_window_gap_q95": window_f1_gap_quantile(p_cal, y_cal, float(model.threshold)),
        "calibration_buy_rate": float(np.mean(y_cal)),  # issue 23: concept drift's gate
        "n_train": int(len(plan.train)),
        "n_calibration": int(len(plan.calibration)),
    }


# --------------------------------------------------------------------------------------------
# staged rollout: the canary rule
# --------------------------------------------------------------------------------------------
def canary_passed(
    trades: pd.DataFrame,
    *,
    now: datetime,
    days: int = CANARY_DAYS,
    min_trades: int = CANARY_MIN_TRADES,
    since: datetime | None = None,
) -> tuple[bool, str]:
    """``(passed, reason)``: may the other cryptos follow the canary?

    The rule: the canary's champion has been paper trading for at least ``days`` days
    (``since``, its promotion time, is at or before ``now - days``; without ``since``, the
    first trade's entry time stands in for it), and over the window ``[now - days, now]``
    (trades whose ``exit_time`` falls in it, i.e. closed trades) it made at least
    ``min_trades`` trades with a mean ``net_return`` >= 0 (no negative expectancy).
    ``trades``: the canary's journal rows of the model being rolled out (columns
    ``entry_time``, ``exit_time``, ``net_return``; times UTC).
    """
    if days < 1 or min_trades < 1:
        raise ValueError(f"days and min_trades must be >= 1, got {days}, {min_trades}")
    end = pd.Timestamp(now)
    end = end.tz_localize("UTC") if end.tzinfo is None else end.tz_convert("UTC")
    start = end - timedelta(days=days)
    rule = f"{days} days of paper trading, >= {min_trades} trades, mean net return >= 0"
    if trades is None or len(trades) == 0:
        return False, f"canary rule ({rule}): no canary trade"
    exit_t = pd.to_datetime(trades["exit_time"], utc=True)
    first = (
        pd.Timestamp(since)
        if since is not None
        else pd.to_datetime(trades["entry_time"], utc=True).min()
    )
    first = first.tz_localize("UTC") if first.tzinfo is None else first.tz_convert("UTC")
    if first > start:
        covered = (end - first) / pd.Timedelta(days=1)
        return False, f"canary rule ({rule}): paper trading covers {covered:.1f} days only"
    in_window = trades[(exit_t >= start) & (exit_t <= end)]
    n = len(in_window)
    if n < min_trades:
        return False, f"canary rule ({rule}): {n} trades in the window"
    mean = float(in_window["net_return"].astype(float).mean())
    if not mean >= 0.0:
        return False, f"canary rule ({rule}): {n} trades, mean net return {mean:+.5f} < 0"
    return True, f"canary rule ({rule}): passed with {n} trades, mean net return {mean:+.5f}"


def jsonable_stats(stats: Mapping[str, Any]) -> dict[str, Any]:
    """A short summary of :func:`reference_statistics` for asset metadata."""
    return {
        "top_features": [f["name"] for f in stats["top_features"]],
        "buy_proba_decile_edges": [round(x, 4) for x in stats["buy_proba_decile_edges"]],
        "train_mean_confidence": round(float(stats["train_mean_confidence"]), 4),
        "oos_f1_buy": stats.get("oos_f1_buy"),
    }


# --------------------------------------------------------------------------------------------
# the rollback (factor-level kill switch): typed registry versions in, a plan out
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RegistryVersion:
    """One registered model version (a ``model_versions`` row) as the guard reads it.

    Built from the registry's dict at the boundary (:meth:`from_registry`); ``gamma`` and
    ``alpha`` are None for the cross-entropy baseline; times are aware UTC;
    ``reference_stats`` the frozen drift references (:func:`reference_statistics`, as
    :func:`cvn_assets.guard.training.registry_stats` stores them)."""

    id: int
    crypto: str
    variant: str
    loss_function: str
    gamma: float | None = None
    alpha: float | None = None
    train_start: datetime | None = None
    train_end: datetime | None = None
    sweep_id: str | None = None
    artifact_uri: str | None = None
    reference_stats: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    @property
    def is_focal(self) -> bool:
        return self.loss_function == FOCAL

    @classmethod
    def from_registry(cls, row: Mapping[str, Any] | None) -> RegistryVersion | None:
        """The version of a registry dict (:meth:`resources.model_registry.ModelRegistry.
        alias`), None for None; ``KeyError`` naming a missing field."""
        if row is None:
            return None
        return cls(
            id=int(row["id"]),
            crypto=str(row["crypto"]),
            variant=str(row["variant"]),
            loss_function=str(row["loss_function"]),
            gamma=None if row.get("gamma") is None else float(row["gamma"]),
            alpha=None if row.get("alpha") is None else float(row["alpha"]),
            train_start=row.get("train_start"),
            train_end=row.get("train_end"),
            sweep_id=row.get("sweep_id"),
            artifact_uri=row.get("artifact_uri"),
            reference_stats=row.get("reference_stats") or {},
        )


@dataclasses.dataclass(frozen=True)
class Repromotion:
    """Re-promote ``previous`` (not focal) over the focal ``champion`` of ``crypto``."""

    crypto: str
    champion: RegistryVersion
    previous: RegistryVersion

    def summary(self) -> str:
        """``"v<champion> (<variant>) -> v<previous> (<variant>)"`` (the op's metadata)."""
        c, p = self.champion, self.previous
        return f"v{c.id} ({c.variant}) -> v{p.id} ({p.variant})"


@dataclasses.dataclass(frozen=True)
class RollbackStep:
    """What the rollback does for one crypto: a re-promotion, or nothing and why."""

    crypto: str
    repromotion: Repromotion | None
    note: str = ""  # why nothing is done ("" for a re-promotion)


@dataclasses.dataclass(frozen=True)
class RollbackPlan:
    """``flip``: the loss flag is not cross-entropy yet (set it, compare-and-set);
    ``steps``: one per selected crypto, in order."""

    flip: bool
    steps: tuple[RollbackStep, ...]

    @property
    def repromotions(self) -> tuple[Repromotion, ...]:
        return tuple(s.repromotion for s in self.steps if s.repromotion is not None)

    @property
    def skipped(self) -> dict[str, str]:
        """crypto -> why nothing is re-promoted there."""
        return {s.crypto: s.note for s in self.steps if s.repromotion is None}


AliasPair = tuple[RegistryVersion | None, RegistryVersion | None]


def rollback_plan(
    loss_flag: str,
    aliases: Mapping[str, AliasPair],
    cryptos: Sequence[str] = (),
) -> RollbackPlan:
    """What ``rollback_job`` does: flip the loss flag to cross-entropy unless it is already,
    and per crypto re-promote the ``previous`` champion where the champion is focal-trained
    and the previous one is not (re-promoting a focal previous would roll nothing back).

    ``aliases``: crypto -> ``(champion, previous)`` (None where the alias is unset);
    ``cryptos``: the cryptos to roll back, in order (empty: every crypto of ``aliases``, in
    its order). ``ValueError`` names a crypto of ``cryptos`` that ``aliases`` lacks."""
    selected = list(cryptos) or list(aliases)
    unknown = [c for c in selected if c not in aliases]
    if unknown:
        raise ValueError(f"cryptos {unknown} have no alias entry")
    return RollbackPlan(
        flip=loss_flag != CROSS_ENTROPY,
        steps=tuple(_rollback_step(c, *aliases[c]) for c in selected),
    )


def _rollback_step(
    crypto: str, champ: RegistryVersion | None, prev: RegistryVersion | None
) -> RollbackStep:
    if champ is None:
        return RollbackStep(crypto, None, "no champion")
    if not champ.is_focal:
        return RollbackStep(
            crypto, None, f"champion v{champ.id} is {champ.loss_function}: nothing to do"
        )
    if prev is None or prev.is_focal:
        why = "no previous champion" if prev is None else f"previous v{prev.id} is focal"
        return RollbackStep(
            crypto,
            None,
            f"champion v{champ.id} kept: {why}; the next champion_job trains with {CROSS_ENTROPY}",
        )
    return RollbackStep(crypto, Repromotion(crypto, champ, prev))
