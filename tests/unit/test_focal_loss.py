"""Formal verification of cvn_assets.ablation.focal_loss (spec: "Formal verification", 32 tests).

Independent truths used here:
* SymPy evaluated at 40 significant digits, from a loss written *in this file* in terms of
  the margin (``sigmoid`` spelled out), differentiated by ``sympy.diff`` - it shares no
  code with the module's p/q derivation or its generated NumPy kernel;
* central finite differences of the module's own loss;
* closed forms (alpha-weighted cross-entropy at gamma = 0, the focal modulating factor);
* the facts measured in the issue (where the exact hessian turns negative);
* XGBoost itself (a single-leaf tree's weight is ``-eta * sum(g) / (sum(h) + lambda)``).
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import sympy as sp
import xgboost as xgb
from scipy.optimize import brentq
from scipy.special import expit

from cvn_assets.ablation import focal_loss as fl
from cvn_assets.ablation import numpy_codegen as ncg
from cvn_assets.ablation.guardrails import GuardrailError

# ----------------------------------------------------------------------------------------
# independent symbolic reference (margin form)
# ----------------------------------------------------------------------------------------
_m = sp.Symbol("m", real=True)
_y, _g, _a = sp.symbols("y gamma alpha")
_sig = 1 / (1 + sp.exp(-_m))
_REF_LOSS = -(
    _a * _y * (1 - _sig) ** _g * sp.log(_sig) + (1 - _a) * (1 - _y) * _sig**_g * sp.log(1 - _sig)
)
_REF_GRAD = sp.diff(_REF_LOSS, _m)
_REF_HESS = sp.diff(_REF_LOSS, _m, 2)


def _reference(margin: float, y: int, gamma: float, alpha: float) -> tuple[float, float, float]:
    subs = {_m: sp.Float(margin, 60), _y: y, _g: sp.nsimplify(gamma), _a: sp.nsimplify(alpha)}
    return tuple(float(e.evalf(40, subs=subs)) for e in (_REF_LOSS, _REF_GRAD, _REF_HESS))


def _one(margin: float, y: int, gamma: float, alpha: float) -> tuple[float, float, float]:
    m, yy = np.array([margin]), np.array([y])
    g, h = fl.grad_hess(m, yy, gamma, alpha, hess_floor=None)
    return float(fl.loss(m, yy, gamma, alpha)[0]), float(g[0]), float(h[0])


# 24 cases: both labels, both sides of the decision boundary, confident rows up to the clip
# (|m| = 15 < 16.118), integer and non-integer gammas (0 .. 10), alphas in [0, 1].
SYMBOLIC_CASES = [
    (-12.0, 0, 2, 0.25),
    (-4.0, 1, 2, 0.25),
    (-0.7, 0, 2, 0.25),
    (0.0, 1, 2, 0.25),
    (0.3, 1, 2, 0.25),
    (1.9, 0, 2, 0.25),
    (6.5, 1, 2, 0.25),
    (14.5, 1, 2, 0.25),
    (-15.0, 0, 2, 0.25),
    (-1.5, 1, 1, 0.25),
    (2.5, 0, 1, 0.75),
    (9.0, 1, 1, 0.5),
    (-0.7, 0, 0, 0.25),
    (3.0, 1, 0, 0.9),
    (-6.0, 1, 0, 0.1),
    (0.3, 1, 0.5, 0.25),
    (-4.0, 1, 0.5, 0.6),
    (12.0, 0, 0.5, 0.25),
    (1.9, 0, 3.7, 0.25),
    (-12.0, 0, 3.7, 0.4),
    (6.5, 1, 5, 0.25),
    (-1.5, 1, 5, 0.25),
    (0.8, 0, 10, 0.3),
    (14.5, 1, 10, 0.25),
]


class TestFocalLossSymbolicEquivalence:
    @pytest.mark.parametrize(("margin", "y", "gamma", "alpha"), SYMBOLIC_CASES)
    def test_generated_code_matches_sympy(self, margin, y, gamma, alpha):
        ref = _reference(margin, y, gamma, alpha)
        got = _one(margin, y, gamma, alpha)
        for name, g_, r_ in zip(("loss", "grad", "hess"), got, ref, strict=True):
            assert g_ == pytest.approx(r_, rel=1e-12, abs=1e-300), name

    def test_reflection_identity_used_by_the_kernel(self):
        """y=0 branch == y=1 branch with p<->q, alpha->1-alpha (grad sign flips), by SymPy."""
        grad, hess = fl.symbolic_grad_hess()
        swap = {fl.P: fl.Q, fl.Q: fl.P, fl.ALPHA: 1 - fl.ALPHA}
        g1 = grad.subs(fl.Y, 1).subs(swap, simultaneous=True)
        h1 = hess.subs(fl.Y, 1).subs(swap, simultaneous=True)
        assert sp.expand(grad.subs(fl.Y, 0) + g1) == 0
        assert sp.expand(hess.subs(fl.Y, 0) - h1) == 0

    def test_kernel_expressions_are_the_alpha_free_y1_branch(self):
        grad, hess = fl.symbolic_grad_hess()
        assert sp.expand(grad.subs(fl.Y, 1) - fl.ALPHA * fl._UNIT_GRAD) == 0
        assert sp.expand(hess.subs(fl.Y, 1) - fl.ALPHA * fl._UNIT_HESS) == 0

    def test_sigmoid_rates_come_out_of_sympy(self):
        assert sp.simplify(fl._DP_DM - fl.P * fl.Q) == 0
        assert sp.simplify(fl._DQ_DM + fl.P * fl.Q) == 0


FD_CASES = [
    (-3.0, 1, 2, 0.25),
    (-0.4, 0, 2, 0.25),
    (0.0, 1, 1, 0.5),
    (1.2, 0, 0.5, 0.25),
    (2.2, 1, 5, 0.75),
    (5.0, 0, 2, 0.1),
    (-7.0, 1, 3.5, 0.25),
    (0.6, 1, 10, 0.25),
]


class TestFocalLossNumericalSanity:
    @pytest.mark.parametrize(("margin", "y", "gamma", "alpha"), FD_CASES)
    def test_finite_differences(self, margin, y, gamma, alpha):
        h = 1e-5
        m = np.array([margin - h, margin, margin + h])
        yy = np.full(3, y)
        loss = fl.loss(m, yy, gamma, alpha)
        grad, hess = fl.grad_hess(m, yy, gamma, alpha, hess_floor=None)
        fd_grad = (loss[2] - loss[0]) / (2 * h)
        fd_hess = (grad[2] - grad[0]) / (2 * h)
        assert grad[1] == pytest.approx(fd_grad, rel=1e-4, abs=1e-9)
        assert hess[1] == pytest.approx(fd_hess, rel=1e-3, abs=1e-8)


class TestFocalLossInvariants:
    def test_gamma_zero_is_alpha_weighted_cross_entropy(self):
        rng = np.random.default_rng(1)
        m = rng.normal(0, 4, 2000)
        y = rng.integers(0, 2, 2000)
        alpha = 0.3
        a_t = np.where(y == 1, alpha, 1 - alpha)
        ce = a_t * np.logaddexp(0, np.where(y == 1, -m, m))  # -a_t log p_t, stable
        p, q = expit(m), expit(-m)
        np.testing.assert_allclose(fl.loss(m, y, 0, alpha), ce, rtol=1e-12)
        g, h = fl.grad_hess(m, y, 0, alpha, hess_floor=None)
        # d CE / dm = a_t (p - y), written without cancellation: -q for y=1, p for y=0
        np.testing.assert_allclose(g, a_t * np.where(y == 1, -q, p), rtol=1e-12)
        np.testing.assert_allclose(h, a_t * p * q, rtol=1e-12)

    @pytest.mark.parametrize("gamma", [0, 1, 2, 5, 10])
    def test_hessian_handed_to_xgboost_is_positive_and_floored(self, gamma):
        m = np.concatenate([np.linspace(-40, 40, 4001), [-3e38, 3e38, -np.inf, np.inf]])
        for y in (0, 1):
            yy = np.full(m.shape, y)
            _, h = fl.grad_hess(m, yy, gamma, 0.25)
            _, exact = fl.grad_hess(m, yy, gamma, 0.25, hess_floor=None)
            assert (h > 0).all()
            assert (h >= fl.HESS_FLOOR).all()
            np.testing.assert_array_equal(h, np.maximum(exact, fl.HESS_FLOOR))

    @pytest.mark.parametrize(("gamma", "pt_root"), [(1, 0.043), (2, 0.058)])
    def test_exact_hessian_turns_negative_for_badly_misclassified_rows(self, gamma, pt_root):
        def hess_at(m):
            return fl.grad_hess(np.array([m]), np.array([1]), gamma, 0.25, hess_floor=None)[1][0]

        root = brentq(hess_at, -8.0, 0.0, xtol=1e-12)
        assert 1 / (1 + math.exp(-root)) == pytest.approx(pt_root, abs=1e-3)
        assert hess_at(root - 1.0) < 0 < hess_at(root + 1.0)

    def test_negative_curvature_reaches_about_21_percent_at_gamma_10(self):
        m = np.linspace(-16, 16, 320_001)
        _, h = fl.grad_hess(m, np.ones_like(m), 10, 0.25, hess_floor=None)
        assert h.min() / h.max() == pytest.approx(-0.21, abs=0.01)

    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    def test_no_nan_or_inf_at_extreme_logits(self, dtype):
        big = np.finfo(np.float32).max * 0.9  # ~3e38, representable in both dtypes
        m = np.array([-big, -1e30, -50, 0, 50, 1e30, big], dtype=dtype)
        for gamma in (0, 0.5, 2, 10):
            for alpha in (0.0, 0.25, 1.0):
                for y in (0, 1):
                    yy = np.full(m.shape, y, dtype=dtype)
                    g, h = fl.grad_hess(m, yy, gamma, alpha)
                    g32, h32 = fl.grad_hess(m, yy, gamma, alpha, dtype="float32")
                    loss = fl.loss(m, yy, gamma, alpha)
                    assert np.isfinite(g).all() and np.isfinite(h).all()
                    np.testing.assert_allclose(g32, g, rtol=1e-5, atol=1e-30)
                    np.testing.assert_allclose(h32, h, rtol=1e-5, atol=1e-30)
                    assert np.isfinite(loss).all() and (loss >= 0).all()

    def test_extreme_margins_equal_the_clipped_probability(self):
        """p is clipped to [1e-7, 1-1e-7]: the loss at +-3e38 is the loss at the clip."""
        eps, gamma, alpha = fl.P_CLIP, 2.0, 0.25
        worst = fl.loss(np.array([-3e38]), np.array([1]), gamma, alpha)[0]
        assert worst == pytest.approx(-alpha * (1 - eps) ** gamma * math.log(eps), rel=1e-9)
        best = fl.loss(np.array([3e38]), np.array([1]), gamma, alpha)[0]
        assert best == pytest.approx(-alpha * eps**gamma * math.log1p(-eps), rel=1e-9)
        at_clip = fl.grad_hess(np.array([fl.MARGIN_CLIP]), np.array([0]), gamma, alpha)
        at_inf = fl.grad_hess(np.array([np.inf]), np.array([0]), gamma, alpha)
        assert at_clip == (pytest.approx(at_inf[0]), pytest.approx(at_inf[1]))

    def test_focal_down_weights_confident_correct_rows(self):
        """FL / CE = (1 - p_t)^gamma: tiny for confident correct rows, ~1 for wrong ones."""
        p_t = np.array([0.05, 0.3, 0.5, 0.9, 0.99])
        m = np.log(p_t / (1 - p_t))
        y = np.ones_like(m)
        ratio = fl.loss(m, y, 2, 0.25) / fl.loss(m, y, 0, 0.25)
        np.testing.assert_allclose(ratio, (1 - p_t) ** 2, rtol=1e-9)
        assert np.all(np.diff(ratio) < 0)
        assert ratio[-1] < 1e-3 < 0.9 < ratio[0]

    def test_inputs_are_not_mutated_and_read_only_inputs_work(self):
        m = np.array([-2.0, 0.5, 3.0], dtype=np.float32)
        y = np.array([1.0, 0.0, 1.0], dtype=np.float32)
        m.setflags(write=False)
        y.setflags(write=False)
        m_copy, y_copy = m.copy(), y.copy()
        fl.grad_hess(m, y, 2, 0.25)
        fl.loss(m, y, 2, 0.25)
        np.testing.assert_array_equal(m, m_copy)
        np.testing.assert_array_equal(y, y_copy)

    def test_float32_and_float64_inputs_give_the_same_answer(self):
        m32 = np.random.default_rng(2).normal(0, 5, 1000).astype(np.float32)
        y = (np.arange(1000) % 3 == 0).astype(np.int64)
        a = fl.grad_hess(m32, y, 2, 0.25)
        b = fl.grad_hess(m32.astype(np.float64), y, 2, 0.25)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])

    def test_single_precision_kernel_matches_double_precision(self):
        rng = np.random.default_rng(3)
        m = np.concatenate([rng.normal(0, 6, 50_000), [-3e38, 3e38]]).astype(np.float32)
        y = (rng.random(m.shape[0]) < 0.2).astype(np.float32)
        for gamma in (1, 2, 2.5):
            g64, h64 = fl.grad_hess(m, y, gamma, 0.25, hess_floor=None)
            g32, h32 = fl.grad_hess(m, y, gamma, 0.25, hess_floor=None, dtype="float32")
            assert g32.dtype == np.float32
            tiny = np.abs(g64) < 1e-30  # float32 underflow: XGBoost stores float32 anyway
            # q**2.5 = exp(2.5 log q): float32 error grows with |2.5 log q| (<= 40 here)
            np.testing.assert_allclose(g32[~tiny], g64[~tiny], rtol=1e-5)
            assert np.max(np.abs(h32 - h64)) <= 2e-6 * np.max(np.abs(h64))

    def test_threads_chunks_and_shapes_do_not_change_results(self):
        n = 2 * ncg.CHUNK + 123
        rng = np.random.default_rng(4)
        m = rng.normal(0, 3, n)
        y = rng.integers(0, 2, n)
        g1, h1 = fl.grad_hess(m, y, 2, 0.25)
        g2, h2 = fl.grad_hess(m, y, 2, 0.25, n_threads=2)
        np.testing.assert_array_equal(g1, g2)
        np.testing.assert_array_equal(h1, h2)
        for i in (0, ncg.CHUNK - 1, ncg.CHUNK, n - 1):  # chunk edges == row-by-row
            gi, hi = fl.grad_hess(m[i : i + 1], y[i : i + 1], 2, 0.25)
            assert (gi[0], hi[0]) == (g1[i], h1[i])
        g3, _ = fl.grad_hess(m[:600].reshape(20, 30), y[:600].reshape(20, 30), 2, 0.25)
        assert g3.shape == (20, 30)
        np.testing.assert_array_equal(g3.ravel(), g1[:600])

    def test_integer_gamma_is_specialised_to_products(self):
        assert fl.kernel_source(2).count("_exp(") == 1  # the sigmoid's only
        assert "_log(" in fl.kernel_source(2)
        assert fl.kernel_source(2.5).count("_exp(") == 2  # q**2.5 = exp(2.5 log q)


_a_sym, _b_sym = sp.symbols("a b", positive=True)


@pytest.mark.parametrize(
    "expr",
    [
        -_a_sym - 3 * _b_sym + 1,
        _a_sym**5 / _b_sym**3 - 2.5,
        sp.log(_a_sym) * sp.exp(-_b_sym) / (_a_sym + _b_sym),
        _a_sym ** sp.Rational(1, 2) + _b_sym ** sp.Float(1.7) - 1 / _a_sym,
        -_a_sym * _b_sym * (_a_sym - 2 * _b_sym) ** 2,
        sp.Max(_a_sym - _b_sym, sp.Float(0.25)),
    ],
)
def test_code_generator_matches_lambdify(expr):
    """The SymPy -> in-place NumPy translator against SymPy's own lambdify printer."""
    gen = ncg.InplaceNumpyCodegen({_a_sym: "a", _b_sym: "b"})
    consts: dict[float, str] = {}
    lines, n_bufs = gen.compile_lines([(expr, "out")], consts)
    ns = dict(ncg.UFUNCS, **{n: np.array(v) for v, n in consts.items()})
    rng = np.random.default_rng(9)
    a, b = rng.uniform(0.1, 3, 64), rng.uniform(0.1, 3, 64)
    ns.update(a=a, b=b, out=np.empty(64), **{f"b{i}": np.empty(64) for i in range(n_bufs)})
    for line in lines:
        eval(line, ns)  # noqa: S307 - generated ufunc calls only
    expected = sp.lambdify((_a_sym, _b_sym), expr, "numpy")(a, b)
    np.testing.assert_allclose(ns["out"], expected, rtol=1e-13)


class TestFocalLossInputErrors:
    def test_nan_margin_raises_before_training(self):
        with pytest.raises(ValueError, match=r"margin\[2\] is NaN"):
            fl.grad_hess(np.array([0.0, 1.0, np.nan]), np.array([0, 1, 1]), 2, 0.25)
        with pytest.raises(ValueError, match="NaN"):
            fl.loss(np.array([np.nan]), np.array([1]), 2, 0.25)

    @pytest.mark.parametrize("bad", [2, -1, 0.5, np.nan])
    def test_labels_must_be_binary(self, bad):
        with pytest.raises(ValueError, match=r"y must be 0 or 1, got y\[1\]"):
            fl.grad_hess(np.zeros(3), np.array([0, bad, 1]), 2, 0.25)

    def test_shape_mismatch_and_bad_params(self):
        with pytest.raises(ValueError, match=r"margin \(3,\) and y \(2,\)"):
            fl.loss(np.zeros(3), np.zeros(2), 2, 0.25)
        with pytest.raises(GuardrailError, match="gamma=11"):
            fl.grad_hess(np.zeros(1), np.zeros(1), 11, 0.25)
        with pytest.raises(GuardrailError, match="alpha=1.5"):
            fl.FocalObjective(2, 1.5)
        with pytest.raises(ValueError, match="hess_floor"):
            fl.grad_hess(np.zeros(1), np.zeros(1), 2, 0.25, hess_floor=-1.0)
        with pytest.raises(ValueError, match="n_threads"):
            fl.FocalObjective(2, 0.25, n_threads=0)
        with pytest.raises(ValueError, match="dtype"):
            fl.grad_hess(np.zeros(1), np.zeros(1), 2, 0.25, dtype="float16")


class TestXGBoostIntegration:
    @staticmethod
    def _data(n=400, seed=5):
        rng = np.random.default_rng(seed)
        X = rng.normal(size=(n, 4))
        y = (X[:, 0] + rng.normal(size=n) > 1.0).astype(np.float32)
        return X, y

    def test_objective_is_picklable_and_equal_after_round_trip(self):
        obj = fl.FocalObjective(2, 0.25)
        clone = pickle.loads(pickle.dumps(obj))
        assert clone == obj
        X, y = self._data()
        d = xgb.DMatrix(X, label=y)
        m = np.linspace(-3, 3, y.shape[0]).astype(np.float32)
        for a, b in zip(obj(m, d), clone(m, d), strict=True):
            np.testing.assert_array_equal(a, b)

    def test_objective_refuses_nan_margins(self):
        X, y = self._data()
        d = xgb.DMatrix(X, label=y)
        m = np.zeros(y.shape[0], dtype=np.float32)
        m[7] = np.nan
        with pytest.raises(ValueError, match=r"margin\[7\] is NaN"):
            fl.FocalObjective(2, 0.25)(m, d)
        with pytest.raises(ValueError, match=r"margin\[7\] is NaN"):
            fl.FocalMetric(2, 0.25)(m, d)

    def test_xgboost_leaf_weight_uses_our_gradient_and_hessian(self):
        """No split allowed -> one leaf: weight = -eta * sum(g) / (sum(h) + lambda)."""
        X, y = self._data()
        d = xgb.DMatrix(X, label=y)
        base, eta, lam = -1.0, 0.3, 1.0
        params = {
            "base_score": base,
            "eta": eta,
            "lambda": lam,
            "gamma": 1e12,  # XGBoost's min_split_loss: forbids every split
            "nthread": 1,
            "disable_default_eval_metric": 1,
        }
        booster = xgb.train(params, d, 1, obj=fl.FocalObjective(2, 0.25))
        g, h = fl.grad_hess(np.full(y.shape, base), y, 2, 0.25)
        expected = base - eta * g.sum() / (h.sum() + lam)
        margin = booster.predict(d, output_margin=True)
        np.testing.assert_allclose(margin, expected, rtol=1e-5)

    def test_training_decreases_the_focal_metric_and_weights_are_used(self):
        X, y = self._data(600)
        w = np.where(y == 1, 2.0, 1.0)
        d = xgb.DMatrix(X, label=y, weight=w)
        obj, metric = fl.FocalObjective(2, 0.25), fl.FocalMetric(2, 0.25)
        m0 = np.zeros(y.shape[0], dtype=np.float32)
        g, h = obj(m0, d)
        g_ref, h_ref = fl.grad_hess(m0, y, 2, 0.25)
        np.testing.assert_allclose(g, g_ref * w, rtol=1e-6)
        np.testing.assert_allclose(h, h_ref * w, rtol=1e-6)
        name, value = metric(m0, d)
        assert name == "focal"
        assert value == pytest.approx(np.average(fl.loss(m0, y, 2, 0.25), weights=w), rel=1e-12)
        hist: dict = {}
        xgb.train(
            {"base_score": 0.0, "nthread": 1, "disable_default_eval_metric": 1, "max_depth": 3},
            d,
            20,
            obj=obj,
            custom_metric=metric,
            evals=[(d, "train")],
            evals_result=hist,
            verbose_eval=False,
        )
        curve = hist["train"]["focal"]
        assert curve[-1] < 0.7 * curve[0]


class TestOptimalConstantMargin:
    def test_gamma_zero_equals_weighted_log_odds(self):
        y = np.array([1] * 13 + [0] * 87)
        alpha, pi = 0.25, 0.13
        expected = math.log(alpha * pi / ((1 - alpha) * (1 - pi)))
        assert fl.optimal_constant_margin(y, 0, alpha) == pytest.approx(expected, abs=1e-7)

    def test_stationary_point_of_the_mean_focal_loss(self):
        y = np.array([1] * 10 + [0] * 90)
        c = fl.optimal_constant_margin(y, 2, 0.25)
        g, _ = fl.grad_hess(np.full(100, c), y, 2, 0.25, hess_floor=None)
        assert abs(g.mean()) < 1e-8
        with pytest.raises(ValueError, match="both classes"):
            fl.optimal_constant_margin(np.zeros(5), 2, 0.25)
