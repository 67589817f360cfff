"""Guardrails (spec ADR-58: loss_function, gamma in [0, 10], alpha in [0, 1]) and the matrix."""

from __future__ import annotations

import dataclasses
import math

import pytest

from cvn_assets.ablation.guardrails import (
    GuardrailError,
    validate_focal_config,
    validate_xgb_params,
)
from cvn_assets.ablation.variants import (
    DEFAULT_VARIANTS,
    Variant,
    build_variant_matrix,
    variant_name,
)


class TestFocalGuardrail:
    @pytest.mark.parametrize(
        ("loss", "gamma", "alpha"),
        [
            ("focal", 0, 0),
            ("focal", 10, 1),
            ("focal", 2, 0.25),
            ("focal", 2.5, 0.999),
            ("binary:logistic", None, None),
            ("binary:logistic", 2, 0.25),  # ignored but in range: the kill switch flips loss only
        ],
    )
    def test_accepted(self, loss, gamma, alpha):
        validate_focal_config(loss, gamma, alpha)

    @pytest.mark.parametrize(
        ("loss", "gamma", "alpha", "field", "shown"),
        [
            ("focal_loss", 2, 0.25, "loss_function", "'focal_loss'"),
            ("binary:hinge", None, None, "loss_function", "'binary:hinge'"),
            (None, None, None, "loss_function", "None"),
            ("focal", -0.1, 0.25, "gamma", "-0.1"),
            ("focal", 10.000001, 0.25, "gamma", "10.000001"),
            ("focal", math.nan, 0.25, "gamma", "nan"),
            ("focal", math.inf, 0.25, "gamma", "inf"),
            ("focal", True, 0.25, "gamma", "True"),
            ("focal", "2", 0.25, "gamma", "'2'"),
            ("focal", None, 0.25, "gamma", "None"),
            ("focal", 2, -0.01, "alpha", "-0.01"),
            ("focal", 2, 1.01, "alpha", "1.01"),
            ("focal", 2, None, "alpha", "None"),
            ("binary:logistic", 11, None, "gamma", "11"),
        ],
    )
    def test_rejected_with_field_and_value(self, loss, gamma, alpha, field, shown):
        with pytest.raises(GuardrailError) as info:
            validate_focal_config(loss, gamma, alpha)
        assert info.value.field == field
        assert str(info.value).startswith(f"{field}={shown} rejected")
        assert isinstance(info.value, ValueError)


class TestXGBParams:
    def test_accepted(self):
        validate_xgb_params(
            {
                "max_depth": 6,
                "eta": 1.0,
                "nthread": 2,
                "subsample": 0.8,
                "tree_method": "hist",
                "lambda": 0.0,
                "gamma": 0.5,
                "max_bin": 64,
                "seed": 3,
                "min_child_weight": 0,
            }
        )

    @pytest.mark.parametrize(
        ("params", "field"),
        [
            ({"max_depth": 0}, "max_depth"),
            ({"max_depth": 2.5}, "max_depth"),
            ({"max_depth": True}, "max_depth"),
            ({"eta": 0}, "eta"),
            ({"eta": 1.5}, "eta"),
            ({"learning_rate": -0.1}, "learning_rate"),
            ({"nthread": 0}, "nthread"),
            ({"subsample": 0.0}, "subsample"),
            ({"lambda": -1}, "lambda"),
            ({"tree_method": "gpu_hist"}, "tree_method"),
            ({"max_dept": 3}, "max_dept"),
            ({"objective": "binary:logistic"}, "objective"),
            ({"base_score": 0.5}, "base_score"),
        ],
    )
    def test_rejected(self, params, field):
        with pytest.raises(GuardrailError) as info:
            validate_xgb_params(params)
        assert info.value.field == field
        assert repr(next(iter(params.values()))) in str(info.value)


class TestVariantMatrix:
    def test_default_matrix(self):
        names = [v.name for v in DEFAULT_VARIANTS]
        assert names == [
            "baseline",
            "focal_g1_a025",
            "focal_g2_a025",
            "focal_g2_a05",
            "focal_g5_a025",
        ]
        assert all(n.isidentifier() for n in names)
        assert sum(not v.is_focal for v in DEFAULT_VARIANTS) == 1
        points = {(v.gamma, v.alpha) for v in DEFAULT_VARIANTS if v.is_focal}
        assert points == {(1.0, 0.25), (2.0, 0.25), (2.0, 0.5), (5.0, 0.25)}
        assert DEFAULT_VARIANTS[0] == Variant("baseline", "binary:logistic", None, None)
        assert build_variant_matrix() == DEFAULT_VARIANTS  # stable

    @pytest.mark.parametrize(
        ("gamma", "alpha", "name"),
        [
            (2, 0.25, "focal_g2_a025"),
            (1.5, 0.125, "focal_g1p5_a0125"),
            (0.5, 1, "focal_g0p5_a1"),
            (0, 0, "focal_g0_a0"),
            (10, 0.00001, "focal_g10_a000001"),
        ],
    )
    def test_names(self, gamma, alpha, name):
        assert variant_name("focal", gamma, alpha) == name
        assert name.isidentifier()

    def test_custom_matrix_and_explicit_names(self):
        vs = build_variant_matrix(
            [
                {"loss_function": "binary:logistic", "gamma": 2},
                {"loss_function": "focal", "gamma": 3, "alpha": 0.4, "name": "my_focal"},
            ]
        )
        assert [v.name for v in vs] == ["baseline", "my_focal"]
        assert vs[0].gamma is None and vs[1].gamma == 3.0

    @pytest.mark.parametrize(
        ("specs", "message"),
        [
            (
                [
                    {"loss_function": "binary:logistic"},
                    {"loss_function": "focal", "gamma": 2, "alpha": 0.25},
                    {"loss_function": "focal", "gamma": 2.0, "alpha": 0.250},
                ],
                r"variants\[2\].name='focal_g2_a025' rejected: duplicates variants\[1\]",
            ),
            (
                [
                    {"loss_function": "binary:logistic"},
                    {"loss_function": "binary:logistic", "name": "b2"},
                ],
                "exactly one binary:logistic baseline",
            ),
            (
                [{"loss_function": "focal", "gamma": 2, "alpha": 0.25}],
                "exactly one binary:logistic baseline",
            ),
            (
                [
                    {"loss_function": "binary:logistic"},
                    {"loss_function": "focal", "gamma": 11, "alpha": 0.25},
                ],
                "gamma=11 rejected",
            ),
            (
                [
                    {"loss_function": "binary:logistic"},
                    {"loss_function": "focal", "gamma": 2, "alpha": 0.25, "beta": 1},
                ],
                r"variants\[1\]=\['beta'\] rejected",
            ),
            (
                [
                    {"loss_function": "binary:logistic"},
                    {"loss_function": "focal", "gamma": 2, "alpha": 0.25, "name": "focal-2"},
                ],
                "name='focal-2' rejected",
            ),
            (
                [
                    {"loss_function": "binary:logistic"},
                    {"loss_function": "focal", "gamma": 2, "alpha": 0.25, "name": "baseline"},
                ],
                "reserved",
            ),
            ([{"gamma": 2}], r"variants\[0\].loss_function=None rejected"),
            ("baseline", "must be a list"),
        ],
    )
    def test_rejected(self, specs, message):
        with pytest.raises(GuardrailError, match=message):
            build_variant_matrix(specs)

    def test_variants_are_immutable(self):
        with pytest.raises(dataclasses.FrozenInstanceError):
            DEFAULT_VARIANTS[1].gamma = 3.0  # type: ignore[misc]
