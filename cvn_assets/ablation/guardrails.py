"""Configuration guardrails for the focal-loss sweep (spec: "FTF factor + guardrail", ADR-58).

Why: every knob of the sweep is configuration (Dagster run config, environment variables,
the factor-level kill switch ``CVN_LOSS_FUNCTION``), so a typo must be rejected *before any
work starts*, with an error that names the field and the offending value. The spec's
validator ``guardrails._validate_focal_loss`` rejects ``loss_function`` outside
``{binary:logistic, focal}``, ``gamma`` outside ``[0, 10]`` and ``alpha`` outside ``[0, 1]``;
``gamma > 10`` is also where the focal gradient becomes numerically fragile (spec risk #2).

Pure module: no Dagster import, no NumPy needed.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

__all__ = [
    "ALPHA_RANGE",
    "CROSS_ENTROPY",
    "FOCAL",
    "GAMMA_RANGE",
    "LOSS_FUNCTIONS",
    "MANAGED_XGB_PARAMS",
    "GuardrailError",
    "validate_focal_config",
    "validate_xgb_params",
]

#: the two loss functions (XGBoost's built-in cross-entropy, the project's focal objective):
#: the one home of these names
CROSS_ENTROPY = "binary:logistic"
FOCAL = "focal"
LOSS_FUNCTIONS: tuple[str, ...] = (CROSS_ENTROPY, FOCAL)
GAMMA_RANGE: tuple[float, float] = (0.0, 10.0)
ALPHA_RANGE: tuple[float, float] = (0.0, 1.0)


class GuardrailError(ValueError):
    """A configuration value is outside what the sweep accepts; names field and value."""

    def __init__(self, field: str, value: object, requirement: str) -> None:
        self.field = field
        self.value = value
        self.requirement = requirement
        super().__init__(f"{field}={value!r} rejected: {requirement}")


def _real(field: str, value: object) -> float:
    """A finite real number (bool and str rejected: ``True`` is not a gamma)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise GuardrailError(field, value, "must be a real number")
    f = float(value)
    if not math.isfinite(f):
        raise GuardrailError(field, value, "must be finite")
    return f


def _in_range(field: str, value: object, lo: float, hi: float) -> float:
    f = _real(field, value)
    if not lo <= f <= hi:
        raise GuardrailError(field, value, f"must be in [{lo:g}, {hi:g}]")
    return f


def validate_focal_config(loss_function: str, gamma: float | None, alpha: float | None) -> None:
    """Reject a loss configuration outside the guardrail (spec ADR-58).

    * ``loss_function`` in ``{"binary:logistic", "focal"}``.
    * ``focal`` needs ``gamma`` in ``[0, 10]`` and ``alpha`` in ``[0, 1]`` (finite reals).
    * ``binary:logistic`` ignores gamma/alpha, but values that are given are still range
      checked: the kill switch flips only ``loss_function``, and a garbage gamma left in the
      environment should still be reported rather than silently carried along.
    """
    if not isinstance(loss_function, str) or loss_function not in LOSS_FUNCTIONS:
        raise GuardrailError("loss_function", loss_function, f"must be one of {LOSS_FUNCTIONS}")
    if loss_function == "focal":
        if gamma is None:
            raise GuardrailError("gamma", gamma, "is required when loss_function='focal'")
        if alpha is None:
            raise GuardrailError("alpha", alpha, "is required when loss_function='focal'")
    if gamma is not None:
        _in_range("gamma", gamma, *GAMMA_RANGE)
    if alpha is not None:
        _in_range("alpha", alpha, *ALPHA_RANGE)


# XGBoost parameters the sweep lets users set, with their rule. Note that XGBoost's own
# ``gamma`` (alias ``min_split_loss``) is a tree-split penalty, unrelated to the focal gamma.
def _int_at_least(lo: int) -> Any:
    def check(field: str, value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise GuardrailError(field, value, "must be an integer")
        if int(value) < lo:
            raise GuardrailError(field, value, f"must be an integer >= {lo}")

    return check


def _real_range(lo: float, hi: float, *, lo_open: bool = False) -> Any:
    def check(field: str, value: object) -> None:
        f = _real(field, value)
        if f < lo or f > hi or (lo_open and f == lo):
            left = "(" if lo_open else "["
            raise GuardrailError(field, value, f"must be in {left}{lo:g}, {hi:g}]")

    return check


def _choice(*options: object) -> Any:
    def check(field: str, value: object) -> None:
        if value not in options:
            raise GuardrailError(field, value, f"must be one of {options}")

    return check


_INF = math.inf
_XGB_RULES: dict[str, Any] = {
    "max_depth": _int_at_least(1),
    "eta": _real_range(0.0, 1.0, lo_open=True),
    "learning_rate": _real_range(0.0, 1.0, lo_open=True),
    "nthread": _int_at_least(1),
    "subsample": _real_range(0.0, 1.0, lo_open=True),
    "colsample_bytree": _real_range(0.0, 1.0, lo_open=True),
    "colsample_bylevel": _real_range(0.0, 1.0, lo_open=True),
    "colsample_bynode": _real_range(0.0, 1.0, lo_open=True),
    "min_child_weight": _real_range(0.0, _INF),
    "lambda": _real_range(0.0, _INF),
    "reg_lambda": _real_range(0.0, _INF),
    "alpha": _real_range(0.0, _INF),
    "reg_alpha": _real_range(0.0, _INF),
    "gamma": _real_range(0.0, _INF),
    "min_split_loss": _real_range(0.0, _INF),
    "max_delta_step": _real_range(0.0, _INF),
    "scale_pos_weight": _real_range(0.0, _INF, lo_open=True),
    "max_bin": _int_at_least(2),
    "max_leaves": _int_at_least(0),
    "seed": _int_at_least(0),
    "verbosity": _choice(0, 1, 2, 3),
    "tree_method": _choice("hist", "approx", "exact", "auto"),
    "grow_policy": _choice("depthwise", "lossguide"),
    "device": _choice("cpu"),
}
MANAGED_XGB_PARAMS: tuple[str, ...] = (
    "objective",
    "base_score",
    "eval_metric",
    "disable_default_eval_metric",
)
"""Set by ``training.train_variant`` from the variant; a user value would contradict it."""


def validate_xgb_params(params: Mapping[str, Any]) -> None:
    """Reject unknown keys, managed keys and out-of-range values of an XGBoost params dict.

    Unknown keys are errors (XGBoost itself only warns, so a typo like ``max_dept`` would
    silently train with the default). ``objective``/``base_score``/``eval_metric`` are
    chosen per variant by the trainer and may not be overridden.
    """
    if not isinstance(params, Mapping):
        raise GuardrailError("params", params, "must be a mapping of XGBoost parameters")
    for key, value in params.items():
        if key in MANAGED_XGB_PARAMS:
            raise GuardrailError(key, value, "is set by the trainer from the variant")
        rule = _XGB_RULES.get(key)
        if rule is None:
            raise GuardrailError(
                key, value, f"unknown XGBoost parameter; known: {sorted(_XGB_RULES)}"
            )
        rule(key, value)
