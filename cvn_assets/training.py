"""Train one ablation variant with XGBoost and wrap it for sklearn-style prediction.

Spec sections: "Predict() path audit" and plan 4.5/4.6. Pure module (no Dagster).

* ``binary:logistic`` (the baseline) uses XGBoost's built-in objective, early-stopped on
  ``logloss``; the booster outputs probabilities.
* ``focal`` uses :class:`cvn_assets.focal_loss.FocalObjective` and early-stops on
  :class:`cvn_assets.focal_loss.FocalMetric` (the validation focal loss, computed on
  margins). A custom-objective booster outputs **raw margins**; XGBoost 3 also leaves its
  intercept at ``base_score = 0.5`` *on the margin scale* for custom objectives (measured:
  ``learner_model_param.base_score == '[5E-1]'``), i.e. a prior of 62% BUY. We therefore set
  ``base_score`` explicitly to :func:`~cvn_assets.focal_loss.optimal_constant_margin`, the
  constant margin that minimises the training focal loss (the focal analogue of the log-odds
  prior ``binary:logistic`` starts from; equal to the alpha-weighted log-odds at gamma=0).
  The baseline gets the training prior as ``base_score`` (probability scale), which is what
  XGBoost would estimate itself, made explicit and reproducible.
* Predictions always use ``iteration_range=(0, best_iteration + 1)``.

:class:`XGBWrapper` is the one prediction path (wrapper ``predict_proba``/``predict``,
:func:`evaluate_model`, :meth:`TrainResult.predict_proba` all go through it). Its
``raw_output_logits`` flag is fixed at construction, as the spec's design choice says: the
trainer knows whether it trained a custom objective, so nothing is auto-detected at call
time. With ``raw_output_logits=True`` ``predict_proba`` applies the sigmoid to the margin
and ``predict`` thresholds the logit at 0; :func:`cvn_assets.metrics.sigmoid` guarantees
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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb
from numpy.typing import ArrayLike, NDArray

from cvn_assets.ablation import Variant
from cvn_assets.focal_loss import FocalMetric, FocalObjective, optimal_constant_margin
from cvn_assets.guardrails import validate_xgb_params
from cvn_assets.metrics import classification_metrics, log_loss, sigmoid

__all__ = [
    "DEFAULT_XGB_PARAMS",
    "TrainResult",
    "XGBWrapper",
    "evaluate_model",
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
    :func:`cvn_assets.guardrails.validate_xgb_params`; ``objective``/``base_score``/
    ``eval_metric`` are set here from the variant). ``early_stopping_rounds=0`` disables
    early stopping (the last round is then the best). Everything is validated before any
    training starts.
    """
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

    names = names_tr if names_tr is not None else names_va
    dtrain = xgb.DMatrix(Xtr, label=ytr, feature_names=names)
    dvalid = xgb.DMatrix(Xva, label=yva, feature_names=names)
    if "seed" in user_params and user_params["seed"] != seed_:
        raise ValueError(f"params['seed']={user_params['seed']!r} contradicts seed={seed_!r}")
    xgb_params: dict[str, Any] = {**DEFAULT_XGB_PARAMS, **user_params, "seed": seed_}
    train_kwargs: dict[str, Any] = {}
    prior = n_pos / ytr.shape[0]
    if variant.is_focal:
        assert variant.gamma is not None and variant.alpha is not None
        base_score = optimal_constant_margin(ytr, variant.gamma, variant.alpha)
        xgb_params.update(base_score=base_score, disable_default_eval_metric=1)
        train_kwargs["obj"] = FocalObjective(variant.gamma, variant.alpha)
        train_kwargs["custom_metric"] = FocalMetric(variant.gamma, variant.alpha)
        metric = "focal"
    else:
        base_score = prior
        xgb_params.update(objective="binary:logistic", eval_metric="logloss", base_score=prior)
        metric = "logloss"

    evals_result: dict[str, dict[str, list[float]]] = {}
    start = time.perf_counter()
    booster = xgb.train(
        xgb_params,
        dtrain,
        num_boost_round=n_rounds,
        evals=[(dvalid, "valid")],
        early_stopping_rounds=patience or None,
        evals_result=evals_result,
        verbose_eval=False,
        maximize=False,
        **train_kwargs,
    )
    seconds = time.perf_counter() - start
    trained = booster.num_boosted_rounds()
    if patience:
        best = int(booster.best_iteration)
    else:
        best = trained - 1
    history = evals_result.get("valid", {}).get(metric, [])
    if not history or not np.isfinite(history).all():
        raise FloatingPointError(f"variant {variant.name!r}: validation {metric} is not finite")
    model = XGBWrapper(
        booster,
        raw_output_logits=variant.is_focal,
        best_iteration=best,
        feature_names=names,
        n_features=Xtr.shape[1],
        metadata={
            "variant": variant.name,
            "loss_function": variant.loss_function,
            "gamma": variant.gamma,
            "alpha": variant.alpha,
            "base_score": base_score,
            "train_prior": prior,
            "early_stopping_metric": metric,
            "train_seconds": seconds,
        },
    )
    return TrainResult(
        model=model,
        best_iteration=best,
        train_seconds=seconds,
        n_rounds=trained,
        base_score=base_score,
        evals_result=evals_result,
        variant=variant,
    )
