"""Post-hoc probability calibration and calibration error (spec: "Temperature scaling", 7.3).

Why: focal-trained models are systematically mis-calibrated (Mukhoti et al. 2020,
"Calibrating Deep Neural Networks using Focal Loss"); here they come out *under*-confident
(fitted temperatures about 0.26-0.44) and alpha shifts the intercept. The spec adds
temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks") beside
isotonic and Platt so the FTF sweep can compare ``ECE_HOLD`` per method; note that a
temperature cannot move the intercept (``sigmoid(z / T)`` keeps 0 at 0.5) while Platt's
``sigmoid(a z + b)`` can. Every calibrator is fitted on the calibration block (ADR-15),
maps **margins** (logits) to probabilities, and serialises to a plain JSON dict so that
loading a calibrated model never executes code.

ECE follows Guo et al. 2017 (eq. 3) for the positive class: 15 equal-width bins on
P(BUY), closed on the right (``(0, 1/15], ..., (14/15, 1]``, with 0 in the first bin),
``ECE = sum_b n_b / n * |frac_pos_b - mean_pred_b|``. The adaptive (equal-mass) variant
(ACE, Nixon et al. 2019, "Measuring Calibration in Deep Learning") is a diagnostic; its bins
never split equal probabilities, so it depends only on the multiset of (p, y) pairs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import isotonic_regression, minimize, minimize_scalar

from cvn_assets.ablation.metrics import logit, sigmoid
from cvn_assets.ablation.training import XGBWrapper

__all__ = [
    "CALIBRATION_METHODS",
    "CalibratedClassifier",
    "Calibrator",
    "IdentityCalibrator",
    "IsotonicCalibrator",
    "PlattCalibrator",
    "TemperatureCalibrator",
    "TemperatureScaledModel",
    "adaptive_calibration_error",
    "calibrator_from_dict",
    "expected_calibration_error",
    "fit_calibrator",
    "fit_platt",
    "fit_temperature",
    "model_logits",
    "reliability_curve",
]

CALIBRATION_METHODS: tuple[str, ...] = ("none", "temperature", "platt", "isotonic")
TEMPERATURE_BOUNDS: tuple[float, float] = (0.1, 10.0)
LOGIT_EPS = 1e-7
"""Probabilities are clipped to [LOGIT_EPS, 1 - LOGIT_EPS] before a logit is recovered."""


# ---------------------------------------------------------------------------------------------
# input checks
# ---------------------------------------------------------------------------------------------
def _margins(name: str, values: ArrayLike) -> NDArray[np.float64]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} must not be empty")
    if not np.isfinite(arr).all():
        i = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"{name} must be finite, got {name}[{i}] = {arr[i].item()!r}")
    return arr


def _labels(name: str, values: ArrayLike, n: int) -> NDArray[np.float64]:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must be 1-D of length {n}, got shape {arr.shape}")
    arr = arr.astype(np.float64)
    bad = (arr != 0) & (arr != 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name} must contain only 0 and 1, got {name}[{i}] = {arr[i].item()!r}")
    return arr


def _probs(name: str, values: ArrayLike) -> NDArray[np.float64]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    bad = ~((arr >= 0) & (arr <= 1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name} must be probabilities in [0, 1], got {name}[{i}] = {arr[i].item()!r}"
        )
    return arr


def _n_bins(n_bins: int) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise ValueError(f"n_bins must be an integer >= 1, got {n_bins!r}")
    return int(n_bins)


def _nll(z: NDArray[np.float64], y: NDArray[np.float64]) -> float:
    """Mean logistic NLL of margins ``z``: log(1 + exp(-z)) for y=1, log(1 + exp(z)) for y=0."""
    return float(np.mean(np.logaddexp(0.0, np.where(y == 1, -z, z))))


# ---------------------------------------------------------------------------------------------
# calibrators
# ---------------------------------------------------------------------------------------------
@runtime_checkable
class Calibrator(Protocol):
    """Maps margins (logits) to calibrated P(BUY); serialisable to a JSON dict."""

    @property
    def method(self) -> str: ...

    def transform(self, margins: ArrayLike) -> NDArray[np.float64]: ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class IdentityCalibrator:
    """``method="none"``: the model's own probability, ``sigmoid(margin)``."""

    method: ClassVar[str] = "none"

    def transform(self, margins: ArrayLike) -> NDArray[np.float64]:
        return sigmoid(_margins("margins", margins))

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method}


@dataclass(frozen=True)
class TemperatureCalibrator:
    """``sigmoid(margin / T)`` (Guo et al. 2017, binary case): one scalar, no intercept."""

    temperature: float
    method: ClassVar[str] = "temperature"

    def __post_init__(self) -> None:
        t = float(self.temperature)
        if not (np.isfinite(t) and t > 0):
            raise ValueError(f"temperature must be a positive finite number, got {t!r}")

    def transform(self, margins: ArrayLike) -> NDArray[np.float64]:
        return sigmoid(_margins("margins", margins) / self.temperature)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "temperature": float(self.temperature)}


@dataclass(frozen=True)
class PlattCalibrator:
    """``sigmoid(a * margin + b)`` fitted by NLL (Platt 1999): slope *and* intercept."""

    a: float
    b: float
    method: ClassVar[str] = "platt"

    def __post_init__(self) -> None:
        if not (np.isfinite(self.a) and np.isfinite(self.b)):
            raise ValueError(f"platt a and b must be finite, got a={self.a!r}, b={self.b!r}")

    def transform(self, margins: ArrayLike) -> NDArray[np.float64]:
        return sigmoid(self.a * _margins("margins", margins) + self.b)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "a": float(self.a), "b": float(self.b)}


@dataclass(frozen=True)
class IsotonicCalibrator:
    """Monotone step fit (PAV) of y on the margin, linearly interpolated between knots.

    ``x`` are increasing margins, ``y`` the fitted probabilities; outside ``[x[0], x[-1]]``
    the end values are kept (sklearn's ``out_of_bounds="clip"``). Only block end points are
    stored, which leaves the interpolant unchanged.
    """

    x: tuple[float, ...]
    y: tuple[float, ...]
    method: ClassVar[str] = "isotonic"

    def __post_init__(self) -> None:
        xs, ys = np.asarray(self.x, dtype=float), np.asarray(self.y, dtype=float)
        if xs.ndim != 1 or xs.shape != ys.shape or xs.size == 0:
            raise ValueError(f"isotonic x and y must be equal-length, non-empty; got {xs.shape}")
        if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
            raise ValueError("isotonic knots must be finite")
        if np.any(np.diff(xs) < 0) or np.any(np.diff(ys) < 0):
            raise ValueError("isotonic knots must be non-decreasing in x and y")
        if ys.min() < 0 or ys.max() > 1:
            raise ValueError(f"isotonic y must be in [0, 1], got [{ys.min()}, {ys.max()}]")

    def transform(self, margins: ArrayLike) -> NDArray[np.float64]:
        return np.interp(_margins("margins", margins), self.x, self.y)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "x": list(map(float, self.x)), "y": list(map(float, self.y))}


def fit_temperature(logits: ArrayLike, y: ArrayLike) -> float:
    """Temperature ``T`` in [0.1, 10] minimising the NLL of ``sigmoid(logits / T)``.

    Spec ("Temperature scaling"): ``scipy.optimize.minimize_scalar(method="bounded")`` on
    the calibration block. Hand check: four logits ``2 ln 3`` with three positives need
    ``sigmoid(2 ln 3 / T) = 3/4``, i.e. ``T = 2``.
    """
    z = _margins("logits", logits)
    yy = _labels("y", y, z.shape[0])
    res = minimize_scalar(
        lambda t: _nll(z / t, yy),
        bounds=TEMPERATURE_BOUNDS,
        method="bounded",
        options={"xatol": 1e-9},
    )
    return float(res.x)


def fit_platt(logits: ArrayLike, y: ArrayLike) -> tuple[float, float]:
    """(a, b) minimising the NLL of ``sigmoid(a z + b)`` (L-BFGS-B, |a|, |b| <= 1e3).

    Plain labels (no Platt target smoothing): the spec asks for the NLL fit. The bounds
    keep the solution finite when the calibration block is separable.
    """
    z = _margins("logits", logits)
    yy = _labels("y", y, z.shape[0])

    def fun(w: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        s = w[0] * z + w[1]
        resid = sigmoid(s) - yy  # d NLL / d s of the logistic NLL
        return _nll(s, yy), np.array([np.mean(resid * z), np.mean(resid)])

    res = minimize(
        fun,
        x0=np.array([1.0, 0.0]),
        jac=True,
        method="L-BFGS-B",
        bounds=[(-1e3, 1e3), (-1e3, 1e3)],
        options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 1000},
    )
    return float(res.x[0]), float(res.x[1])


def _fit_isotonic(z: NDArray[np.float64], y: NDArray[np.float64]) -> IsotonicCalibrator:
    xs, inverse, counts = np.unique(z, return_inverse=True, return_counts=True)
    mean_y = np.bincount(inverse, weights=y) / counts  # ties in the margin share one value
    fitted = isotonic_regression(mean_y, weights=counts.astype(np.float64), increasing=True).x
    fitted = np.clip(fitted, 0.0, 1.0)
    keep = np.ones(xs.shape[0], dtype=bool)  # block end points only
    if xs.shape[0] > 2:
        same_prev = fitted[1:-1] == fitted[:-2]
        same_next = fitted[1:-1] == fitted[2:]
        keep[1:-1] = ~(same_prev & same_next)
    return IsotonicCalibrator(x=tuple(xs[keep].tolist()), y=tuple(fitted[keep].tolist()))


def fit_calibrator(method: str, margins: ArrayLike, y: ArrayLike) -> Calibrator:
    """Fit one of :data:`CALIBRATION_METHODS` on calibration-block margins and labels."""
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"method must be one of {CALIBRATION_METHODS}, got {method!r}")
    z = _margins("margins", margins)
    yy = _labels("y", y, z.shape[0])
    if method == "none":
        return IdentityCalibrator()
    if method == "temperature":
        return TemperatureCalibrator(fit_temperature(z, yy))
    if method == "platt":
        a, b = fit_platt(z, yy)
        return PlattCalibrator(a, b)
    return _fit_isotonic(z, yy)


def calibrator_from_dict(d: Mapping[str, Any]) -> Calibrator:
    """Rebuild a calibrator from :meth:`to_dict` output (plain data, no code executed)."""
    if not isinstance(d, Mapping) or "method" not in d:
        raise ValueError(f"calibrator dict needs a 'method' key, got {d!r}")
    method = d["method"]
    fields = {k: v for k, v in d.items() if k != "method"}
    expected = {
        "none": set(),
        "temperature": {"temperature"},
        "platt": {"a", "b"},
        "isotonic": {"x", "y"},
    }
    if method not in expected:
        raise ValueError(f"calibrator method must be one of {CALIBRATION_METHODS}, got {method!r}")
    if set(fields) != expected[method]:
        raise ValueError(
            f"calibrator {method!r} needs fields {sorted(expected[method])}, got {sorted(fields)}"
        )
    if method == "none":
        return IdentityCalibrator()
    if method == "temperature":
        return TemperatureCalibrator(float(fields["temperature"]))
    if method == "platt":
        return PlattCalibrator(float(fields["a"]), float(fields["b"]))
    return IsotonicCalibrator(
        x=tuple(float(v) for v in fields["x"]), y=tuple(float(v) for v in fields["y"])
    )


# ---------------------------------------------------------------------------------------------
# calibrated models
# ---------------------------------------------------------------------------------------------
def model_logits(model: Any, X: Any) -> NDArray[np.float64]:
    """Margins of ``model`` on ``X``.

    Models exposing ``predict_margin`` (the project's ``XGBWrapper``, focal or not) give
    their exact margin. Any other sklearn-like classifier gets its logit recovered from
    ``predict_proba(X)[:, 1]`` clipped to ``[1e-7, 1 - 1e-7]`` (spec: binary:logistic models
    "logit recovered from the probability, clipped").
    """
    if hasattr(model, "predict_margin"):
        return np.asarray(model.predict_margin(X), dtype=np.float64)
    proba = np.asarray(model.predict_proba(X), dtype=np.float64)
    if proba.ndim != 2 or proba.shape[1] != 2:
        raise ValueError(f"predict_proba must return shape (n, 2), got {proba.shape}")
    return logit(proba[:, 1], LOGIT_EPS)


class CalibratedClassifier:
    """A model plus a calibrator: sklearn-style ``predict_proba`` (n, 2) and ``predict``.

    Module-level and plain-attribute, so it pickles (the spec's MLflow regression); also
    saved as the model's own files plus ``calibrator.json`` (no pickle) by :meth:`save`.
    """

    classes_ = np.array([0, 1])

    def __init__(self, model: Any, calibrator: Calibrator) -> None:
        if not hasattr(model, "predict_proba"):
            raise TypeError(f"model must have predict_proba, got {type(model).__name__}")
        if not isinstance(calibrator, Calibrator):
            raise TypeError(f"calibrator must be a Calibrator, got {type(calibrator).__name__}")
        self.model = model
        self.calibrator = calibrator

    @classmethod
    def fit(
        cls, model: Any, X: Any, y: ArrayLike, method: str = "temperature"
    ) -> CalibratedClassifier:
        """Fit ``method`` on (X, y) of the calibration block."""
        return cls(model, fit_calibrator(method, model_logits(model, X), y))

    @property
    def method(self) -> str:
        return self.calibrator.method

    def predict_proba(self, X: Any) -> NDArray[np.float64]:
        p1 = self.calibrator.transform(model_logits(self.model, X))
        return np.column_stack([1.0 - p1, p1])

    def predict(self, X: Any, threshold: float = 0.5) -> NDArray[np.int8]:
        """BUY where the calibrated P(BUY) >= ``threshold`` (0.5, or a fitted BUY threshold)."""
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
        return (self.predict_proba(X)[:, 1] >= threshold).astype(np.int8)

    def save(self, path: Path | str) -> None:
        """Write ``path/model/`` (the model's ``save``) and ``path/calibrator.json``."""
        if not hasattr(self.model, "save"):
            raise TypeError(f"{type(self.model).__name__} has no save(); pickle it instead")
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        self.model.save(root / "model")
        (root / "calibrator.json").write_text(json.dumps(self.calibrator.to_dict()))

    @classmethod
    def load(cls, path: Path | str) -> CalibratedClassifier:
        """Inverse of :meth:`save` for ``XGBWrapper`` models; executes no stored code."""
        root = Path(path)
        calibrator = calibrator_from_dict(json.loads((root / "calibrator.json").read_text()))
        model = XGBWrapper.load(root / "model")
        if cls is TemperatureScaledModel:
            if not isinstance(calibrator, TemperatureCalibrator):
                raise ValueError(f"{root} holds a {calibrator.method!r} calibrator")
            return TemperatureScaledModel(model, calibrator.temperature)
        return cls(model, calibrator)


class TemperatureScaledModel(CalibratedClassifier):
    """``sigmoid(margin / T)`` over a focal (raw-margin) or binary:logistic model.

    Spec: module-level (picklable) class exposing sklearn-compatible ``predict_proba`` /
    ``predict``; ``T`` fitted on the calibration block by :func:`fit_temperature`.
    """

    def __init__(self, model: Any, temperature: float) -> None:
        super().__init__(model, TemperatureCalibrator(float(temperature)))

    @property
    def temperature(self) -> float:
        assert isinstance(self.calibrator, TemperatureCalibrator)
        return self.calibrator.temperature

    @classmethod
    def fit(
        cls, model: Any, X: Any, y: ArrayLike, method: str = "temperature"
    ) -> TemperatureScaledModel:
        if method != "temperature":
            raise ValueError(f"TemperatureScaledModel only fits 'temperature', got {method!r}")
        return cls(model, fit_temperature(model_logits(model, X), y))


# ---------------------------------------------------------------------------------------------
# calibration error
# ---------------------------------------------------------------------------------------------
def _binned(prob: ArrayLike, y: ArrayLike, n_bins: int) -> tuple[NDArray[Any], ...]:
    p = _probs("prob", prob)
    yy = _labels("y", y, p.shape[0])
    if p.shape[0] == 0:
        raise ValueError("prob must not be empty")
    nb = _n_bins(n_bins)
    edges = np.arange(nb + 1) / nb  # k / n_bins correctly rounded, like a hand-written edge
    # (edges[k-1], edges[k]] -> bin k-1 ; p == 0 goes to the first bin
    idx = np.clip(np.searchsorted(edges, p, side="left") - 1, 0, nb - 1)
    counts = np.bincount(idx, minlength=nb)
    sum_p = np.bincount(idx, weights=p, minlength=nb)
    sum_y = np.bincount(idx, weights=yy, minlength=nb)
    return edges, counts, sum_p, sum_y


def reliability_curve(
    prob: ArrayLike, y: ArrayLike, n_bins: int = 15
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
    """(bin_mid, mean_pred, frac_pos, counts) over equal-width right-closed bins.

    Empty bins have NaN ``mean_pred`` and ``frac_pos`` (nothing to plot there).
    """
    edges, counts, sum_p, sum_y = _binned(prob, y, n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_pred = np.where(counts > 0, sum_p / counts, np.nan)
        frac_pos = np.where(counts > 0, sum_y / counts, np.nan)
    mid = 0.5 * (edges[:-1] + edges[1:])
    return mid, mean_pred, frac_pos, counts.astype(np.int64)


def expected_calibration_error(prob: ArrayLike, y: ArrayLike, n_bins: int = 15) -> float:
    """Positive-class ECE with ``n_bins`` equal-width bins closed on the right (Guo 2017)."""
    _, counts, sum_p, sum_y = _binned(prob, y, n_bins)
    return float(np.sum(np.abs(sum_y - sum_p)) / counts.sum())


def _equal_mass_edges(sorted_p: NDArray[np.float64], n_bins: int) -> NDArray[np.intp]:
    """Bin edges (positions into ``sorted_p``, from 0 to n) of equal-mass bins without split ties.

    Target edges are those of ``numpy.array_split(sorted_p, min(n_bins, n))``; an edge inside a
    run of equal values moves to the nearer end of the run (its start when equidistant), and
    edges that then coincide merge. Every returned bin is non-empty.
    """
    n = sorted_p.shape[0]
    k = min(n_bins, n)
    sizes = np.full(k, n // k, dtype=np.intp)
    sizes[: n % k] += 1
    target = np.cumsum(sizes)[:-1]  # interior edges, each in [1, n - 1]
    run_edges = np.concatenate(([0], np.flatnonzero(np.diff(sorted_p) != 0) + 1, [n]))
    j = np.searchsorted(run_edges, target, side="right")  # run_edges[j-1] <= t < run_edges[j]
    lo, hi = run_edges[j - 1], run_edges[j]
    moved = np.where(target - lo <= hi - target, lo, hi)
    return np.unique(np.concatenate(([0], moved, [n]))).astype(np.intp)


def adaptive_calibration_error(prob: ArrayLike, y: ArrayLike, n_bins: int = 15) -> float:
    """Adaptive (equal-mass) calibration error of P(BUY); tied probabilities share a bin.

    ACE of Nixon et al. 2019, "Measuring Calibration in Deep Learning" (CVPR Workshops), for the
    positive class: ``ACE = sum_b n_b / n * |frac_pos_b - mean_pred_b|``
    ``= sum_b |sum_{i in b} y_i - sum_{i in b} p_i| / n``.

    Bins: the rows are sorted by ``prob`` and cut into ``k = min(n_bins, n)`` equal-mass bins
    at the positions ``numpy.array_split`` would use (sizes differ by at most one, the larger
    first). Equal values always share a bin: a cut that falls inside a run of equal
    probabilities moves to the nearer end of that run (to its start, i.e. the run joins the
    upper bin, when both ends are equally far), and cuts that then coincide merge, so fewer
    than ``k`` bins, all non-empty, may remain (20 rows all at 0.5 form one bin). The bins thus
    depend only on the sorted values, and the result only on the multiset of ``(p, y)`` pairs:
    it does not depend on row order, which matters for isotonic outputs, full of ties. With
    ``n_bins >= n`` every distinct value is a bin of its own.

    Args:
        prob: shape ``(n,)``, P(BUY) in ``[0, 1]``, ``n >= 1``.
        y: shape ``(n,)``, labels 0/1.
        n_bins: target number of bins, an integer ``>= 1`` (default 15).

    Returns:
        The ACE, a float in ``[0, 1]``.

    Raises:
        ValueError: ``prob`` not 1-D, empty, or outside ``[0, 1]`` (NaN included); ``y`` not
            1-D of length ``n`` or not all 0/1; ``n_bins`` not an integer ``>= 1``.

    A diagnostic beside :func:`expected_calibration_error`: with 10% positives most rows sit
    in the first equal-width bins, and equal-mass bins resolve that region better.
    """
    p = _probs("prob", prob)
    yy = _labels("y", y, p.shape[0])
    if p.shape[0] == 0:
        raise ValueError("prob must not be empty")
    nb = _n_bins(n_bins)
    order = np.argsort(p, kind="stable")
    sorted_p, sorted_y = p[order], yy[order]
    starts = _equal_mass_edges(sorted_p, nb)[:-1]
    # per-bin sums: sorted_p is the same array for every row order; the y sums are integers
    sum_p = np.add.reduceat(sorted_p, starts)
    sum_y = np.add.reduceat(sorted_y, starts)
    return float(np.sum(np.abs(sum_y - sum_p)) / p.shape[0])
