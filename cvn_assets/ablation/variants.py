"""The focal-loss factor of the FTF ablation matrix (spec: "FTF factor + guardrail", plan 3).

Why: the sweep trains one model per (crypto, fold, variant); each variant becomes a Dagster
asset, so its name must be a stable Python identifier. The default matrix keeps the spec's
5 configurations: the ``binary:logistic`` baseline plus 4 focal points around Lin et al.
2017's recommended ``gamma = 2, alpha = 0.25`` (their Table 1a/1b grid), moving one factor
at a time: ``(1, .25)``, ``(2, .25)``, ``(2, .5)``, ``(5, .25)``.

Names: ``baseline``; ``focal_g<gamma>_a<alpha>`` where gamma is printed with ``p`` for the
decimal point (``1.5 -> g1p5``) and alpha as its decimal digits without the point
(``0.25 -> a025``, ``0.5 -> a05``, ``1 -> a1``). Both are unambiguous inside the guardrail
ranges, and equal values always give the same name (so duplicates are caught by name).
"""

from __future__ import annotations

import keyword
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cvn_assets.ablation.guardrails import GuardrailError, validate_focal_config

__all__ = [
    "BASELINE_NAME",
    "DEFAULT_VARIANT_SPECS",
    "DEFAULT_VARIANTS",
    "Variant",
    "build_variant_matrix",
    "variant_name",
]

BASELINE_NAME = "baseline"


def _decimal(value: float) -> str:
    """Shortest positional decimal of a float, never scientific (1e-05 -> '0.00001')."""
    text = repr(float(value))
    if "e" in text or "E" in text:
        text = f"{float(value):.17f}".rstrip("0")
    if text.endswith(".0"):
        text = text[:-2]
    return text.rstrip(".")


def variant_name(loss_function: str, gamma: float | None, alpha: float | None) -> str:
    """Stable identifier for a variant: ``baseline`` or ``focal_g2_a025``."""
    validate_focal_config(loss_function, gamma, alpha)
    if loss_function == "binary:logistic":
        return BASELINE_NAME
    assert gamma is not None and alpha is not None
    return f"focal_g{_decimal(gamma).replace('.', 'p')}_a{_decimal(alpha).replace('.', '')}"


@dataclass(frozen=True)
class Variant:
    """One arm of the ablation: a loss function and, for focal, its (gamma, alpha)."""

    name: str
    loss_function: str
    gamma: float | None
    alpha: float | None

    def __post_init__(self) -> None:
        validate_focal_config(self.loss_function, self.gamma, self.alpha)
        if self.loss_function == "binary:logistic" and (
            self.gamma is not None or self.alpha is not None
        ):
            raise GuardrailError(
                "gamma/alpha", (self.gamma, self.alpha), "must be None for the baseline variant"
            )
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise GuardrailError("name", self.name, "must be a valid Python identifier")
        if keyword.iskeyword(self.name):
            raise GuardrailError("name", self.name, "must not be a Python keyword")
        if self.loss_function == "focal" and self.name == BASELINE_NAME:
            raise GuardrailError("name", self.name, "is reserved for the binary:logistic baseline")

    @property
    def is_focal(self) -> bool:
        return self.loss_function == "focal"


DEFAULT_VARIANT_SPECS: tuple[Mapping[str, Any], ...] = (
    {"loss_function": "binary:logistic"},
    {"loss_function": "focal", "gamma": 1.0, "alpha": 0.25},
    {"loss_function": "focal", "gamma": 2.0, "alpha": 0.25},
    {"loss_function": "focal", "gamma": 2.0, "alpha": 0.5},
    {"loss_function": "focal", "gamma": 5.0, "alpha": 0.25},
)
_SPEC_KEYS = frozenset({"name", "loss_function", "gamma", "alpha"})


def _variant_from_spec(i: int, spec: Mapping[str, Any]) -> Variant:
    if not isinstance(spec, Mapping):
        raise GuardrailError(f"variants[{i}]", spec, "must be a mapping")
    unknown = set(spec) - _SPEC_KEYS
    if unknown:
        raise GuardrailError(
            f"variants[{i}]", sorted(unknown), f"unknown keys; allowed: {sorted(_SPEC_KEYS)}"
        )
    if "loss_function" not in spec:
        raise GuardrailError(f"variants[{i}].loss_function", None, "is required")
    loss_function = spec["loss_function"]
    gamma, alpha = spec.get("gamma"), spec.get("alpha")
    label = f"variants[{i}]" + (f" ({spec['name']})" if spec.get("name") else "")
    try:
        validate_focal_config(loss_function, gamma, alpha)
    except GuardrailError as exc:
        raise GuardrailError(f"{label}.{exc.field}", exc.value, exc.requirement) from None
    if loss_function == "binary:logistic":
        gamma = alpha = None  # ignored by the baseline (guardrails.validate_focal_config)
    else:
        assert gamma is not None and alpha is not None  # guaranteed by the guardrail
        gamma, alpha = float(gamma), float(alpha)
    name = spec.get("name") or variant_name(loss_function, gamma, alpha)
    return Variant(name=name, loss_function=loss_function, gamma=gamma, alpha=alpha)


def build_variant_matrix(specs: Sequence[Mapping[str, Any]] | None = None) -> tuple[Variant, ...]:
    """Variants from a list of dicts ``{loss_function, gamma?, alpha?, name?}``.

    Every entry passes the guardrail; names (given or generated) must be unique; there must
    be exactly one ``binary:logistic`` baseline (the gates compare every focal arm to it).
    ``None`` gives the default 5-variant matrix. Order is preserved.
    """
    if specs is None:
        specs = DEFAULT_VARIANT_SPECS
    if isinstance(specs, str | bytes) or not isinstance(specs, Sequence):
        raise GuardrailError("variants", specs, "must be a list of variant dicts")
    variants = tuple(_variant_from_spec(i, s) for i, s in enumerate(specs))
    seen: dict[str, int] = {}
    for i, v in enumerate(variants):
        if v.name in seen:
            raise GuardrailError(
                f"variants[{i}].name", v.name, f"duplicates variants[{seen[v.name]}]"
            )
        seen[v.name] = i
    baselines = [v.name for v in variants if not v.is_focal]
    if len(baselines) != 1:
        raise GuardrailError(
            "variants",
            [v.name for v in variants],
            f"need exactly one binary:logistic baseline variant, found {len(baselines)}"
            + (f" ({', '.join(baselines)})" if baselines else ""),
        )
    if len(variants) < 2:
        raise GuardrailError(
            "variants", [v.name for v in variants], "need at least one focal variant to compare"
        )
    return variants


DEFAULT_VARIANTS: tuple[Variant, ...] = build_variant_matrix()
