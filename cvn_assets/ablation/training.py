"""Train one ablation variant with XGBoost and wrap it for sklearn-style prediction.

Spec sections: "Predict() path audit" and plan 4.5/4.6. Pure module (no Dagster).

* ``binary:logistic`` (the baseline) uses XGBoost's built-in objective, early-stopped on
  the validation ``logloss``; the booster outputs probabilities.
* ``focal`` uses :class:`cvn_assets.ablation.focal_loss.FocalObjective` and early-stops on the
  validation focal loss (:func:`cvn_assets.ablation.focal_loss.loss`, computed on margins). A
  custom-objective booster outputs **raw margins**; XGBoost 3 also leaves its
  intercept at ``base_score = 0.5`` *on the margin scale* for custom objectives (measured:
  ``learner_model_param.base_score == '[5E-1]'``), i.e. a prior of 62% BUY. We therefore set
  ``base_score`` explicitly to :func:`~cvn_assets.ablation.focal_loss.optimal_constant_margin`, the
  constant margin that minimises the training focal loss (the focal analogue of the log-odds
  prior ``binary:logistic`` starts from; equal to the alpha-weighted log-odds at gamma=0).
  The baseline gets the training prior as ``base_score`` (probability scale), which is what
  XGBoost would estimate itself, made explicit and reproducible.
* Early stopping is done by :class:`ValidationEarlyStopping`, identically for both arms, on
  the float64 validation loss of the booster's own margins. XGBoost's built-in early
  stopping cannot be used: it decides on the *text* of the evaluation, and a
  ``custom_metric`` is formatted with ``"%f"`` (6 decimals, about 4 significant digits for a
  focal loss near 0.02), so the focal arm stopped on rounded values (ties on plateaus, an
  early stop and an earlier best round than the real minimum) while the baseline's logloss
  kept full precision. No ``evals`` are handed to XGBoost at all; the recorded history
  (``TrainResult.evals_result["valid"][metric]`` and the sidecar's
  ``metadata["valid_history"]``) is the full-precision one.
* Predictions always use ``iteration_range=(0, best_iteration + 1)``.

:class:`XGBWrapper` is the one prediction path (wrapper ``predict_proba``/``predict``,
:func:`evaluate_model`, :meth:`TrainResult.predict_proba` all go through it). Its
``raw_output_logits`` flag is fixed at construction, as the spec's design choice says: the
trainer knows whether it trained a custom objective, so nothing is auto-detected at call
time. With ``raw_output_logits=True`` ``predict_proba`` applies the sigmoid to the margin
and ``predict`` thresholds the logit at 0; :func:`cvn_assets.ablation.metrics.sigmoid` guarantees
``sigmoid(m) >= 0.5 <=> m >= 0`` so the two can never disagree.

Persistence: :meth:`XGBWrapper.save` writes the booster in XGBoost's own UBJSON format plus
a JSON sidecar (flag, best iteration, feature names), so loading never unpickles code;
pickling the wrapper also works (the spec's MLflow regression) and both round-trips give
bit-identical predictions.
"""

from __future__ import annotations

import json
import math
import numbers
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb
from numpy.typing import ArrayLike, NDArray

from cvn_assets.ablation.focal_loss import FocalObjective, loss, optimal_constant_margin
from cvn_assets.ablation.guardrails import validate_xgb_params
from cvn_assets.ablation.metrics import classification_metrics, log_loss, sigmoid
from cvn_assets.ablation.variants import Variant

__all__ = [
    "DEFAULT_XGB_PARAMS",
    "LOGLOSS_EPS",
    "TrainResult",
    "ValidationEarlyStopping",
    "XGBWrapper",
    "evaluate_model",
    "logloss_from_margin",
    "train_variant",
]

DEFAULT_XGB_PARAMS: dict[str, Any] = {
    "tree_method": "hist",
    "max_depth": 6,
    "eta": 0.1,
    "min_child_weight": 1.0,
    "subsample": 1.0,
    "colsample_bytree": 1.0,
    "lambda": 1.0,
    "max_bin": 256,
    "nthread": 2,
    "verbosity": 0,
}
"""hist trees of depth 6, eta 0.1, 2 threads (the shared 2-core budget of the sweep)."""

_SIDECAR = "wrapper.json"
_BOOSTER = "booster.ubj"
_FORMAT = "cvn-focal.XGBWrapper"
_FORMAT_VERSION = 1


# ---------------------------------------------------------------------------------------------
# input validation
# ---------------------------------------------------------------------------------------------
def _features(name: str, X: Any) -> tuple[NDArray[np.float32], list[str] | None]:
    """2-D float32 matrix (what XGBoost uses) and the column names of a DataFrame."""
    names: list[str] | None = None
    if isinstance(X, pd.DataFrame):
        names = [str(c) for c in X.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"{name} has duplicate column names: {names}")
        bad = [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])]
        if bad:
            raise ValueError(f"{name} has non-numeric columns: {bad}")
        arr = X.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        arr = np.asarray(X)
        if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows x features), got shape {arr.shape}")
    inf = np.isinf(arr)
    if inf.any():
        r, c = (int(v[0]) for v in np.nonzero(inf))
        col = names[c] if names else c
        raise ValueError(f"{name} contains inf at row {r}, column {col!r} (NaN means missing)")
    return np.ascontiguousarray(arr, dtype=np.float32), names


def _labels(name: str, y: Any, n_rows: int) -> NDArray[np.float32]:
    arr = np.asarray(y.to_numpy() if isinstance(y, pd.Series | pd.DataFrame) else y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] != n_rows:
        raise ValueError(f"{name} has {arr.shape[0]} rows but its features have {n_rows}")
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"{name} must be numeric 0/1, got dtype {arr.dtype}")
    vals = arr.astype(np.float64)
    nan = np.isnan(vals)
    if nan.any():
        raise ValueError(
            f"{name} has NaN labels ({int(nan.sum())} rows, first at {int(np.argmax(nan))})"
        )
    bad = (vals != 0) & (vals != 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name} must contain only 0 and 1, got {name}[{i}] = {arr[i].item()!r}")
    return vals.astype(np.float32)


def _positive_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


# ---------------------------------------------------------------------------------------------
# the wrapper
# ---------------------------------------------------------------------------------------------
class XGBWrapper:
    """sklearn-compatible, picklable view of a trained booster (spec "Predict() path audit").

    ``raw_output_logits`` is True for custom-objective (focal) boosters, whose ``predict``
    returns margins, and False for ``binary:logistic`` boosters, which return probabilities.
    """

    classes_ = np.array([0, 1])
    booster: xgb.Booster
    raw_output_logits: bool
    best_iteration: int
    feature_names: list[str] | None
    n_features: int
    metadata: dict[str, Any]

    def __init__(
        self,
        booster: xgb.Booster,
        raw_output_logits: bool,
        best_iteration: int,
        feature_names: list[str] | None = None,
        n_features: int | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(booster, xgb.Booster):
            raise TypeError(f"booster must be an xgboost.Booster, got {type(booster).__name__}")
        if not isinstance(raw_output_logits, bool):
            raise TypeError(f"raw_output_logits must be a bool, got {raw_output_logits!r}")
        n_rounds = booster.num_boosted_rounds()
        if isinstance(best_iteration, bool) or not isinstance(best_iteration, numbers.Integral):
            raise TypeError(f"best_iteration must be an int, got {best_iteration!r}")
        if not 0 <= best_iteration < max(n_rounds, 1):
            raise ValueError(f"best_iteration={best_iteration} outside [0, {n_rounds})")
        self.booster = booster
        self.raw_output_logits = raw_output_logits
        self.best_iteration = int(best_iteration)
        self.feature_names = list(feature_names) if feature_names is not None else None
        self.n_features = int(n_features) if n_features is not None else int(booster.num_features())
        self.metadata: dict[str, Any] = dict(metadata or {})

    # -- prediction -----------------------------------------------------------------------
    def _matrix(self, X: Any) -> NDArray[np.float32]:
        if isinstance(X, pd.DataFrame) and self.feature_names is not None:
            cols = [str(c) for c in X.columns]
            if cols != self.feature_names:
                missing = [c for c in self.feature_names if c not in cols]
                extra = [c for c in cols if c not in self.feature_names]
                if missing or extra:
                    raise ValueError(
                        f"X columns differ from training: missing {missing}, extra {extra}"
                    )
                by_name = {str(c): c for c in X.columns}
                X = X[[by_name[c] for c in self.feature_names]]  # same names, other order
        arr, _ = _features("X", X)
        if arr.shape[1] != self.n_features:
            raise ValueError(f"X has {arr.shape[1]} features, the model expects {self.n_features}")
        return arr

    def _iteration_range(self) -> tuple[int, int]:
        return (0, self.best_iteration + 1)

    def predict_margin(self, X: Any) -> NDArray[np.float64]:
        """Logit (margin) per row, restricted to the best iteration."""
        out = self.booster.inplace_predict(
            self._matrix(X), iteration_range=self._iteration_range(), predict_type="margin"
        )
        return np.asarray(out, dtype=np.float64).reshape(-1)

    def _positive_proba(self, X: Any) -> NDArray[np.float64]:
        if self.raw_output_logits:
            return sigmoid(self.predict_margin(X))
        out = self.booster.inplace_predict(
            self._matrix(X), iteration_range=self._iteration_range(), predict_type="value"
        )
        return np.asarray(out, dtype=np.float64).reshape(-1)

    def predict_proba(self, X: Any) -> NDArray[np.float64]:
        """(n, 2) array ``[P(0), P(BUY)]``: sigmoid of the margin when ``raw_output_logits``."""
        p1 = self._positive_proba(X)
        return np.column_stack([1.0 - p1, p1])

    def predict(self, X: Any) -> NDArray[np.int8]:
        """0/1 BUY: logit >= 0 when ``raw_output_logits``, else probability >= 0.5."""
        if self.raw_output_logits:
            return (self.predict_margin(X) >= 0.0).astype(np.int8)
        return (self._positive_proba(X) >= 0.5).astype(np.int8)

    # -- persistence ----------------------------------------------------------------------
    def save(self, path: Path | str) -> None:
        """Write directory ``path`` with ``booster.ubj`` (XGBoost UBJSON) + ``wrapper.json``."""
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(root / _BOOSTER))
        sidecar = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "raw_output_logits": self.raw_output_logits,
            "best_iteration": self.best_iteration,
            "feature_names": self.feature_names,
            "n_features": self.n_features,
            "metadata": self.metadata,
        }
        (root / _SIDECAR).write_text(json.dumps(sidecar, indent=1, sort_keys=True))

    @classmethod
    def load(cls, path: Path | str) -> XGBWrapper:
        """Read a directory written by :meth:`save` (no pickle, no code executed)."""
        root = Path(path)
        sidecar = json.loads((root / _SIDECAR).read_text())
        if sidecar.get("format") != _FORMAT or sidecar.get("version") != _FORMAT_VERSION:
            raise ValueError(
                f"{root / _SIDECAR}: unsupported format {sidecar.get('format')!r} "
                f"version {sidecar.get('version')!r}"
            )
        booster = xgb.Booster()
        booster.load_model(str(root / _BOOSTER))
        return cls(
            booster,
            raw_output_logits=bool(sidecar["raw_output_logits"]),
            best_iteration=int(sidecar["best_iteration"]),
            feature_names=sidecar["feature_names"],
            n_features=int(sidecar["n_features"]),
            metadata=sidecar.get("metadata") or {},
        )

    def __repr__(self) -> str:
        return (
            f"XGBWrapper(raw_output_logits={self.raw_output_logits}, "
            f"best_iteration={self.best_iteration}, n_features={self.n_features})"
        )


@dataclass
class TrainResult:
    """Outcome of :func:`train_variant`."""

    model: XGBWrapper
    best_iteration: int
    train_seconds: float
    n_rounds: int
    base_score: float = math.nan
    evals_result: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    variant: Variant | None = None

    def predict_proba(self, X: Any) -> NDArray[np.float64]:
        """The trainer's predict path: the wrapper's, so every path agrees."""
        return self.model.predict_proba(X)


def evaluate_model(model: Any, X: Any, y: ArrayLike) -> dict[str, Any]:
    """Log loss and BUY metrics at the 0.5 cut-off through the model's own predict paths."""
    proba = np.asarray(model.predict_proba(X), dtype=np.float64)
    yy = _labels("y", y, proba.shape[0])
    y_pred = np.asarray(model.predict(X))
    return {
        "log_loss": log_loss(proba[:, 1], yy),
        **classification_metrics(yy.astype(np.int8), y_pred.astype(np.int8)),
    }


# ---------------------------------------------------------------------------------------------
# early stopping on full-precision validation losses
# ---------------------------------------------------------------------------------------------
LOGLOSS_EPS = 1e-16
"""XGBoost's ``logloss`` metric clips the probability to ``[eps, 1 - eps]`` with this eps."""
_LOGLOSS_MARGIN_CLIP = math.log((1.0 - LOGLOSS_EPS) / LOGLOSS_EPS)


def logloss_from_margin(margin: ArrayLike, y: ArrayLike) -> float:
    """Mean binary log loss of ``sigmoid(margin)`` in float64, with XGBoost's clipping.

    Clipping ``p`` to ``[LOGLOSS_EPS, 1 - LOGLOSS_EPS]`` is done exactly by clipping the
    margin (the sigmoid is monotone); each row's loss is then ``softplus(-s m)`` with
    ``s = 2y - 1`` (``np.logaddexp``), which keeps full relative precision for confident rows
    where ``log(1 - p)`` would not.
    """
    m = np.clip(np.asarray(margin, dtype=np.float64), -_LOGLOSS_MARGIN_CLIP, _LOGLOSS_MARGIN_CLIP)
    s = 2.0 * np.asarray(y, dtype=np.float64) - 1.0
    return float(np.mean(np.logaddexp(0.0, -s * m)))


class ValidationEarlyStopping(xgb.callback.TrainingCallback):
    """Early stopping on ``loss_fn(validation margin)`` evaluated in float64 every round.

    ``X`` is the validation matrix with its columns in training order (no name check).

    Same rule as ``xgboost.callback.EarlyStopping`` (minimise, ``min_delta=0``): a round
    improves only if its loss is strictly below the best so far (the first minimum wins
    ties), training stops once ``patience`` rounds in a row have not improved
    (``patience=0``: never), and ``best_iteration`` is 0-based. The booster gets the
    ``best_iteration``/``best_score`` attributes at the end (``best_score`` as ``repr`` of
    the float, i.e. exactly).

    The margin is kept incrementally: XGBoost's CPU predictor starts each row at the base
    margin and adds the trees' leaf values one by one *in float32*, so adding the newest
    tree's leaf values (predicted alone on a DMatrix whose ``base_margin`` is 0, hence
    exact) to a running float32 margin reproduces
    ``predict(iteration_range=(0, k + 1), output_margin=True)`` bit for bit, at the cost of
    one tree per round instead of ``k + 1``. The first round is a plain prediction (base
    margin + first tree), so the base margin never has to be derived; :meth:`after_training`
    re-checks the running margin against a full prediction.
    """

    def __init__(
        self,
        X: NDArray[np.float32],
        loss_fn: Callable[[NDArray[np.float32]], float],
        patience: int,
        name: str = "valid",
    ) -> None:
        super().__init__()
        self._X = np.ascontiguousarray(X, dtype=np.float32)
        zeros = np.zeros(self._X.shape[0], dtype=np.float32)
        self._dleaf = xgb.DMatrix(self._X, base_margin=zeros)  # columns in training order
        self._loss_fn = loss_fn
        self.patience = int(patience)
        self.name = name
        self.history: list[float] = []
        self.best_iteration = -1
        self.best_score = math.inf
        self.margin: NDArray[np.float32] | None = None

    def after_iteration(self, model: xgb.Booster, epoch: int, evals_log: Any) -> bool:
        rounds = model.num_boosted_rounds()
        if rounds != len(self.history) + 1:
            raise RuntimeError(f"{self.name}: callback out of step ({rounds} rounds)")
        if self.margin is None:
            out = model.inplace_predict(self._X, iteration_range=(0, 1), predict_type="margin")
            self.margin = np.array(out, dtype=np.float32).reshape(-1)
        else:
            newest = model.predict(
                self._dleaf,
                output_margin=True,
                iteration_range=(rounds - 1, rounds),
                validate_features=False,
            )
            np.add(self.margin, newest.reshape(-1), out=self.margin)
        score = float(self._loss_fn(self.margin))
        if not math.isfinite(score):
            raise FloatingPointError(f"{self.name} is not finite at round {rounds - 1}: {score}")
        self.history.append(score)
        if score < self.best_score:
            self.best_iteration, self.best_score = rounds - 1, score
        return bool(self.patience) and rounds - 1 - self.best_iteration >= self.patience

    def after_training(self, model: xgb.Booster) -> xgb.Booster:
        if self.margin is None:
            return model
        full = model.inplace_predict(
            self._X, iteration_range=(0, len(self.history)), predict_type="margin"
        )
        full = np.asarray(full, dtype=np.float32).reshape(-1)
        if not np.allclose(full, self.margin, rtol=1e-5, atol=1e-5):
            diff = float(np.max(np.abs(full.astype(np.float64) - self.margin)))
            raise RuntimeError(f"{self.name}: running margin differs from XGBoost's by {diff}")
        model.set_attr(best_iteration=str(self.best_iteration), best_score=repr(self.best_score))
        return model


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
def train_variant(
    variant: Variant,
    X_train: Any,
    y_train: Any,
    X_valid: Any,
    y_valid: Any,
    *,
    params: Mapping[str, Any] | None = None,
    num_boost_round: int = 300,
    early_stopping_rounds: int = 30,
    seed: int = 0,
) -> TrainResult:
    """Train ``variant`` on (train, valid) with early stopping on the valid block.

    ``params`` override :data:`DEFAULT_XGB_PARAMS` (validated by
    :func:`cvn_assets.ablation.guardrails.validate_xgb_params`; ``objective``/``base_score``/
    ``eval_metric`` are set here from the variant). Both arms early-stop the same way, on
    the float64 validation loss (:class:`ValidationEarlyStopping`: focal loss or logloss of
    the booster's margins); ``evals_result["valid"][metric]`` is that full-precision history.
    ``early_stopping_rounds=0`` disables early stopping (the last round is then the best).
    Everything is validated before any training starts.
    """
    data = _checked_inputs(
        variant,
        X_train,
        y_train,
        X_valid,
        y_valid,
        params,
        num_boost_round,
        early_stopping_rounds,
        seed,
    )
    dtrain = xgb.DMatrix(data.Xtr, label=data.ytr, feature_names=data.names)
    xgb_params: dict[str, Any] = {**DEFAULT_XGB_PARAMS, **data.user_params, "seed": data.seed}
    prior = int(data.ytr.sum()) / data.ytr.shape[0]
    arm = _loss_arm(variant, data.ytr, data.yva, prior)
    xgb_params.update(arm.params)
    booster, history, best, seconds = _fit(xgb_params, dtrain, data, arm, variant.name)
    model = XGBWrapper(
        booster,
        raw_output_logits=variant.is_focal,
        best_iteration=best,
        feature_names=data.names,
        n_features=data.Xtr.shape[1],
        metadata={
            "variant": variant.name,
            "loss_function": variant.loss_function,
            "gamma": variant.gamma,
            "alpha": variant.alpha,
            "base_score": arm.base_score,
            "train_prior": prior,
            "early_stopping_metric": arm.metric,
            "early_stopping_rounds": data.patience,
            "best_score": history[best],
            "valid_history": list(history),
            "train_seconds": seconds,
        },
    )
    return TrainResult(
        model=model,
        best_iteration=best,
        train_seconds=seconds,
        n_rounds=len(history),  # one validation loss per trained round (checked in _fit)
        base_score=arm.base_score,
        evals_result={"valid": {arm.metric: list(history)}},
        variant=variant,
    )


def _fit(
    xgb_params: dict[str, Any], dtrain: Any, data: _Inputs, arm: _LossArm, name: str
) -> tuple[xgb.Booster, list[float], int, float]:
    """``(booster, validation losses per round, best round, training seconds)``: XGBoost
    with the arm's objective, stopped on the arm's validation loss (the last round is the
    best when early stopping is off)."""
    stopper = ValidationEarlyStopping(
        data.Xva,
        arm.valid_loss,
        data.patience,
        name=f"variant {name!r}: validation {arm.metric}",
    )
    start = time.perf_counter()
    booster = xgb.train(
        xgb_params,
        dtrain,
        num_boost_round=data.n_rounds,
        obj=arm.obj,
        verbose_eval=False,
        callbacks=[stopper],
    )
    seconds = time.perf_counter() - start
    trained = booster.num_boosted_rounds()
    history = stopper.history
    if len(history) != trained:  # pragma: no cover - guarded by the callback
        raise RuntimeError(f"{len(history)} validation losses for {trained} rounds")
    best = stopper.best_iteration
    if not data.patience:  # no early stopping: the model is the last round, whatever its loss
        best = trained - 1
        booster.set_attr(best_iteration=str(best), best_score=repr(history[best]))
    return booster, history, best, seconds


@dataclass(frozen=True)
class _Inputs:
    """:func:`train_variant`'s arguments, validated: float32 features, 0/1 labels."""

    user_params: dict[str, Any]
    n_rounds: int
    patience: int
    seed: int
    Xtr: NDArray[np.float32]
    Xva: NDArray[np.float32]
    ytr: NDArray[np.float32]
    yva: NDArray[np.float32]
    names: list[str] | None


def _checked_inputs(
    variant: Any,
    X_train: Any,
    y_train: Any,
    X_valid: Any,
    y_valid: Any,
    params: Mapping[str, Any] | None,
    num_boost_round: Any,
    early_stopping_rounds: Any,
    seed: Any,
) -> _Inputs:
    """Every check of :func:`train_variant`, before any work: ``TypeError`` for a variant
    that is not a :class:`Variant`, ``ValueError`` naming the argument and value otherwise
    (parameters, counts, shapes, column names, a single-class ``y_train``, a contradicting
    ``params['seed']``)."""
    if not isinstance(variant, Variant):
        raise TypeError(f"variant must be an ablation.Variant, got {type(variant).__name__}")
    user_params = dict(params or {})
    validate_xgb_params(user_params)
    n_rounds = _positive_int("num_boost_round", num_boost_round, 1)
    patience = _positive_int("early_stopping_rounds", early_stopping_rounds, 0)
    seed_ = _positive_int("seed", seed, 0)

    Xtr, names_tr = _features("X_train", X_train)
    Xva, names_va = _features("X_valid", X_valid)
    ytr = _labels("y_train", y_train, Xtr.shape[0])
    yva = _labels("y_valid", y_valid, Xva.shape[0])
    if Xtr.shape[0] == 0 or Xva.shape[0] == 0:
        raise ValueError(f"empty data: X_train {Xtr.shape}, X_valid {Xva.shape}")
    if Xtr.shape[1] != Xva.shape[1]:
        raise ValueError(f"X_train has {Xtr.shape[1]} features but X_valid has {Xva.shape[1]}")
    if names_tr is not None and names_va is not None and names_tr != names_va:
        raise ValueError(f"X_valid columns {names_va} differ from X_train columns {names_tr}")
    n_pos = int(ytr.sum())
    if n_pos == 0:
        raise ValueError(f"y_train has no positive (BUY) row: n_positive=0 of {ytr.shape[0]}")
    if n_pos == ytr.shape[0]:
        raise ValueError(f"y_train has no negative row: n_positive={n_pos} of {ytr.shape[0]}")
    if "seed" in user_params and user_params["seed"] != seed_:
        raise ValueError(f"params['seed']={user_params['seed']!r} contradicts seed={seed_!r}")
    names = names_tr if names_tr is not None else names_va
    return _Inputs(user_params, n_rounds, patience, seed_, Xtr, Xva, ytr, yva, names)


@dataclass(frozen=True)
class _LossArm:
    """What the loss function sets: XGBoost parameters, custom objective (focal), the
    early-stopping metric's name and its float64 validation loss of margins, the base score."""

    params: dict[str, Any]
    obj: FocalObjective | None
    metric: str
    valid_loss: Callable[[NDArray[np.float32]], float]
    base_score: float


def _loss_arm(
    variant: Variant, ytr: NDArray[np.float32], yva: NDArray[np.float32], prior: float
) -> _LossArm:
    """Focal: the optimal constant margin as base score and the focal objective; cross
    entropy: ``binary:logistic`` from the training prior."""
    yva64 = yva.astype(np.float64)
    if variant.is_focal:
        assert variant.gamma is not None and variant.alpha is not None
        gamma, alpha = variant.gamma, variant.alpha
        base_score = optimal_constant_margin(ytr, gamma, alpha)

        def focal_valid_loss(margin: NDArray[np.float32]) -> float:
            return float(np.mean(loss(margin, yva64, gamma, alpha)))

        return _LossArm(
            params={"base_score": base_score, "disable_default_eval_metric": 1},
            obj=FocalObjective(gamma, alpha),
            metric="focal",
            valid_loss=focal_valid_loss,
            base_score=base_score,
        )

    def logloss_valid_loss(margin: NDArray[np.float32]) -> float:
        return logloss_from_margin(margin, yva64)

    return _LossArm(
        params={"objective": "binary:logistic", "eval_metric": "logloss", "base_score": prior},
        obj=None,
        metric="logloss",
        valid_loss=logloss_valid_loss,
        base_score=prior,
    )
