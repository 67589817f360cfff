"""cvn_assets.ablation.calibration against hand checks, statsmodels, a reference PAV and loops."""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest
import statsmodels.api as sm
from scipy.special import expit, logit

from cvn_assets.ablation import calibration as cal
from cvn_assets.ablation.training import train_variant
from cvn_assets.ablation.variants import build_variant_matrix


class ProbaOnlyModel:
    """A binary:logistic-like model exposing only predict_proba (module level: picklable)."""

    def __init__(self, w: float) -> None:
        self.w = w

    def predict_proba(self, X):
        p = expit(self.w * np.asarray(X, dtype=float)[:, 0])
        return np.column_stack([1 - p, p])


@pytest.fixture(scope="module")
def focal_model():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1500, 4))
    y = (rng.random(1500) < expit(1.5 * X[:, 0] - 1.5)).astype(int)
    variant = build_variant_matrix(
        [
            {"loss_function": "binary:logistic"},
            {"loss_function": "focal", "gamma": 2, "alpha": 0.25},
        ]
    )[1]
    res = train_variant(variant, X[:1000], y[:1000], X[1000:], y[1000:], num_boost_round=40)
    return res.model, X, y


def _reference_pav(y, w):
    """Textbook pool-adjacent-violators (Ayer et al. 1955), O(n^2), for cross-checking."""
    blocks = [[float(v), float(wt), 1] for v, wt in zip(y, w, strict=True)]
    i = 0
    while i < len(blocks) - 1:
        if blocks[i][0] > blocks[i + 1][0]:
            a, b = blocks[i], blocks[i + 1]
            wt = a[1] + b[1]
            blocks[i] = [(a[0] * a[1] + b[0] * b[1]) / wt, wt, a[2] + b[2]]
            del blocks[i + 1]
            i = max(i - 1, 0)
        else:
            i += 1
    return np.concatenate([[v] * n for v, _, n in blocks])


class TestTemperature:
    def test_hand_check_t_equals_two(self):
        z = np.full(4, 2 * math.log(3))
        assert cal.fit_temperature(z, [1, 1, 1, 0]) == pytest.approx(2.0, abs=1e-6)

    def test_bounds_of_the_search(self):
        z = np.array([-5.0, -4.0, 4.0, 5.0])
        assert cal.fit_temperature(z, [0, 0, 1, 1]) == pytest.approx(0.1, abs=1e-6)
        assert cal.fit_temperature(z, [1, 1, 0, 0]) == pytest.approx(10.0, abs=1e-6)

    def test_recovers_a_known_temperature(self):
        rng = np.random.default_rng(1)
        z = rng.normal(0, 2, 200_000)
        y = (rng.random(z.shape[0]) < expit(z / 0.4)).astype(int)
        assert cal.fit_temperature(z, y) == pytest.approx(0.4, rel=0.03)

    def test_bad_inputs(self):
        with pytest.raises(ValueError, match=r"logits\[1\] = nan"):
            cal.fit_temperature([0.0, np.nan], [0, 1])
        with pytest.raises(ValueError, match=r"y\[0\] = 2"):
            cal.fit_temperature([0.0], [2])
        with pytest.raises(ValueError, match="length 2"):
            cal.fit_temperature([0.0, 1.0], [1])


class TestPlattAndIsotonic:
    def test_platt_matches_statsmodels_logit(self):
        rng = np.random.default_rng(2)
        z = rng.normal(0, 3, 5000)
        y = (rng.random(5000) < expit(0.5 * z - 1.2)).astype(int)
        a, b = cal.fit_platt(z, y)
        ref = sm.Logit(y, np.column_stack([z, np.ones_like(z)])).fit(disp=0, tol=1e-12).params
        assert (a, b) == (pytest.approx(ref[0], abs=1e-5), pytest.approx(ref[1], abs=1e-5))

    def test_platt_fixes_an_intercept_shift_that_temperature_cannot(self):
        rng = np.random.default_rng(3)
        z = rng.normal(0, 2, 50_000)
        y = (rng.random(z.shape[0]) < expit(z - 1.5)).astype(int)
        ece = {
            m: cal.expected_calibration_error(cal.fit_calibrator(m, z, y).transform(z), y)
            for m in ("temperature", "platt")
        }
        assert ece["platt"] < 0.01 < ece["temperature"]

    def test_isotonic_hand_example_with_interpolation(self):
        c = cal.fit_calibrator("isotonic", [1.0, 2.0, 3.0, 4.0], [1, 0, 1, 1])
        # PAV pools (1, 0) -> 0.5, 0.5 ; then 1, 1
        out = c.transform([0.0, 1.5, 2.5, 3.5, 9.0])
        np.testing.assert_allclose(out, [0.5, 0.5, 0.75, 1.0, 1.0])
        tied = cal.fit_calibrator("isotonic", [1.0, 1.0, 2.0], [1, 0, 1])
        np.testing.assert_allclose(tied.transform([1.0, 2.0]), [0.5, 1.0])

    def test_isotonic_matches_reference_pav(self):
        rng = np.random.default_rng(4)
        z = rng.normal(size=300)
        y = (rng.random(300) < expit(2 * z)).astype(int)
        c = cal.fit_calibrator("isotonic", z, y)
        order = np.argsort(z)
        expected = _reference_pav(y[order], np.ones(300))
        np.testing.assert_allclose(c.transform(z[order]), expected, atol=1e-12)
        assert len(c.x) < 300  # only block end points are stored


class TestSerialisation:
    @pytest.mark.parametrize("method", cal.CALIBRATION_METHODS)
    def test_json_round_trip(self, method):
        rng = np.random.default_rng(5)
        z = rng.normal(size=200)
        y = (rng.random(200) < expit(z)).astype(int)
        c = cal.fit_calibrator(method, z, y)
        again = cal.calibrator_from_dict(json.loads(json.dumps(c.to_dict())))
        assert again == c and again.method == method
        np.testing.assert_array_equal(again.transform(z), c.transform(z))

    def test_invalid_dicts(self):
        with pytest.raises(ValueError, match="'sigmoid'"):
            cal.calibrator_from_dict({"method": "sigmoid"})
        with pytest.raises(ValueError, match=r"needs fields \['temperature'\]"):
            cal.calibrator_from_dict({"method": "temperature", "t": 2})
        with pytest.raises(ValueError, match="temperature must be a positive"):
            cal.calibrator_from_dict({"method": "temperature", "temperature": -1})
        with pytest.raises(ValueError, match="method must be one of"):
            cal.fit_calibrator("hybrid", [0.0], [1])


class TestCalibrationError:
    def test_ece_hand_check(self):
        # bins (width 1/15): 0.1 -> bin 1, 0.2 -> bin 2 (right-closed), 0.9 -> 13, 0.95 -> 14
        ece = cal.expected_calibration_error([0.1, 0.2, 0.9, 0.95], [0, 1, 1, 1])
        assert ece == pytest.approx((0.1 + 0.8 + 0.1 + 0.05) / 4)

    def test_bins_are_closed_on_the_right(self):
        p = np.array([0.0, 1 / 15, np.nextafter(1 / 15, 1), 1.0])
        _, _, _, counts = cal.reliability_curve(p, [0, 0, 0, 1])
        assert counts[0] == 2 and counts[1] == 1 and counts[-1] == 1

    def test_ece_matches_a_loop(self):
        rng = np.random.default_rng(6)
        p = rng.random(1000) ** 2
        y = (rng.random(1000) < p).astype(int)
        total = 0.0
        for k in range(15):
            lo, hi = k / 15, (k + 1) / 15
            sel = (p > lo) & (p <= hi) if k else (p <= hi)
            if sel.any():
                total += sel.sum() / 1000 * abs(y[sel].mean() - p[sel].mean())
        assert cal.expected_calibration_error(p, y) == pytest.approx(total, rel=1e-12)

    def test_adaptive_ece_and_reliability_curve(self):
        p = [0.1, 0.2, 0.3, 0.4]
        # two equal-mass bins: {0.1, 0.2} vs y {0, 1}; {0.3, 0.4} vs y {1, 1}
        assert cal.adaptive_calibration_error(p, [0, 1, 1, 1], n_bins=2) == pytest.approx(
            (abs(1 - 0.3) + abs(2 - 0.7)) / 4
        )
        mid, mean_pred, frac_pos, counts = cal.reliability_curve(p, [0, 1, 1, 1], n_bins=5)
        np.testing.assert_allclose(mid, [0.1, 0.3, 0.5, 0.7, 0.9])
        assert counts.tolist() == [2, 2, 0, 0, 0]
        assert np.isnan(mean_pred[2]) and frac_pos[1] == 1.0
        with pytest.raises(ValueError, match="n_bins"):
            cal.expected_calibration_error(p, [0, 1, 1, 1], n_bins=0)


class TestAdaptiveCalibrationErrorTies:
    """ACE bins never split equal probabilities, so row order cannot change the result."""

    @pytest.mark.parametrize("n_bins", [1, 2, 3, 15, 20, 100])
    def test_all_equal_probabilities_form_one_bin(self, n_bins):
        # the issue: 20 rows at P(BUY) = 0.5, 10 positive -> 0.5 in one order, 0.0 in another
        p = np.full(20, 0.5)
        y = np.array([1] * 10 + [0] * 10)
        orders = [y, y[::-1], np.tile([1, 0], 10), np.tile([0, 1], 10)]
        rng = np.random.default_rng(7)
        orders += [rng.permutation(y) for _ in range(20)]
        for yy in orders:
            # one bin: |mean p - mean y| = |0.5 - 0.5| = 0, exactly
            assert cal.adaptive_calibration_error(p, yy, n_bins=n_bins) == 0.0

    def test_order_invariance_on_isotonic_like_step_outputs(self):
        rng = np.random.default_rng(11)
        z = rng.normal(size=600)
        y = (rng.random(600) < expit(1.2 * z - 1.0)).astype(int)
        iso = cal.fit_calibrator("isotonic", np.round(z, 1), y)
        p = iso.transform(np.round(z, 1))  # a handful of plateaus, each with many ties
        assert np.unique(p).size < 60
        for n_bins in (7, 15, 40):
            ref = cal.adaptive_calibration_error(p, y, n_bins=n_bins)
            for _ in range(200):
                perm = rng.permutation(600)
                assert cal.adaptive_calibration_error(p[perm], y[perm], n_bins=n_bins) == ref
            # and no cut separates equal values
            sp = np.sort(p)
            edges = cal._equal_mass_edges(sp, n_bins)
            assert edges[0] == 0 and edges[-1] == 600
            assert np.all(np.diff(edges) > 0)
            inner = edges[1:-1]
            assert np.all(sp[inner - 1] != sp[inner])

    def test_order_invariance_on_few_levels(self):
        rng = np.random.default_rng(3)
        levels = np.array([0.0, 0.1, 0.25, 0.25, 0.5, 1.0])
        for _ in range(50):
            n = int(rng.integers(1, 40))
            p = rng.choice(levels, size=n)
            y = (rng.random(n) < p).astype(int)
            n_bins = int(rng.integers(1, 12))
            ref = cal.adaptive_calibration_error(p, y, n_bins=n_bins)
            for _ in range(20):
                perm = rng.permutation(n)
                assert cal.adaptive_calibration_error(p[perm], y[perm], n_bins=n_bins) == ref

    def test_hand_value_without_ties(self):
        p = [0.05, 0.15, 0.3, 0.45, 0.6, 0.8, 0.9]
        y = [0, 0, 1, 0, 1, 1, 1]
        # n=7 into 3 equal-mass bins of sizes 3, 2, 2 (larger first):
        # {0.05, 0.15, 0.3}: |1 - 0.5| = 0.5; {0.45, 0.6}: |1 - 1.05| = 0.05;
        # {0.8, 0.9}: |2 - 1.7| = 0.3  ->  (0.5 + 0.05 + 0.3) / 7
        assert cal.adaptive_calibration_error(p, y, n_bins=3) == pytest.approx(0.85 / 7)
        # shuffled input, same value
        perm = [4, 0, 6, 2, 5, 1, 3]
        assert cal.adaptive_calibration_error(
            np.array(p)[perm], np.array(y)[perm], n_bins=3
        ) == pytest.approx(0.85 / 7)

    def test_a_cut_inside_a_tie_run_moves_to_the_nearer_end(self):
        # n=4, 2 bins: target cut after 2 rows falls inside the run of 0.3 (positions 1..2);
        # both ends are 1 away -> the cut moves to the run's start: {0.1} | {0.3, 0.3, 0.5}
        p = [0.3, 0.5, 0.1, 0.3]
        y = [1, 1, 0, 0]
        assert cal.adaptive_calibration_error(p, y, n_bins=2) == pytest.approx(
            (abs(0 - 0.1) + abs(2 - 1.1)) / 4
        )
        # run of three 0.2 then one 0.7: the cut after 2 rows is nearer the run's end
        assert cal.adaptive_calibration_error(
            [0.2, 0.2, 0.2, 0.7], [1, 0, 0, 1], n_bins=2
        ) == pytest.approx((abs(1 - 0.6) + abs(1 - 0.7)) / 4)

    @pytest.mark.parametrize("n_bins", [2, 3, 4, 5, 6, 50])
    def test_more_bins_than_distinct_values(self, n_bins):
        # two distinct values, 5 rows: every n_bins >= 2 gives one bin per value
        p = np.array([0.7, 0.2, 0.2, 0.7, 0.2])
        y = np.array([0, 1, 1, 0, 0])
        # {0.2 x3}: |2 - 0.6| = 1.4 ; {0.7 x2}: |0 - 1.4| = 1.4
        assert cal.adaptive_calibration_error(p, y, n_bins=n_bins) == pytest.approx(2.8 / 5)
        # a single bin pools them: |2 - 2.0| = 0
        assert cal.adaptive_calibration_error(p, y, n_bins=1) == pytest.approx(0.0, abs=1e-15)

    def test_bad_inputs(self):
        with pytest.raises(ValueError, match="n_bins"):
            cal.adaptive_calibration_error([0.5], [1], n_bins=0)
        with pytest.raises(ValueError, match="prob must not be empty"):
            cal.adaptive_calibration_error([], [])
        with pytest.raises(ValueError, match="probabilities in"):
            cal.adaptive_calibration_error([0.5, np.nan], [1, 0])
        with pytest.raises(ValueError, match="length 2"):
            cal.adaptive_calibration_error([0.5, 0.5], [1])
        with pytest.raises(ValueError, match="only 0 and 1"):
            cal.adaptive_calibration_error([0.5, 0.5], [1, 2])


class TestCalibratedModels:
    def test_temperature_model_on_focal_margins(self, focal_model):
        model, X, y = focal_model
        tsm = cal.TemperatureScaledModel.fit(model, X[:500], y[:500])
        z = model.predict_margin(X[500:])
        np.testing.assert_allclose(tsm.predict_proba(X[500:])[:, 1], expit(z / tsm.temperature))
        assert tsm.temperature == pytest.approx(
            cal.fit_temperature(model.predict_margin(X[:500]), y[:500])
        )
        np.testing.assert_array_equal(tsm.predict(X), tsm.predict_proba(X)[:, 1] >= 0.5)

    def test_probability_only_model_gets_its_logit_recovered(self):
        model = ProbaOnlyModel(3.0)
        X = np.linspace(-2, 2, 41)[:, None]
        np.testing.assert_allclose(cal.model_logits(model, X), 3.0 * X[:, 0], atol=1e-9)
        tsm = cal.TemperatureScaledModel(model, 2.0)
        np.testing.assert_allclose(tsm.predict_proba(X)[:, 1], expit(1.5 * X[:, 0]), rtol=1e-9)
        # saturated probabilities are clipped, so the logit stays finite
        assert np.isfinite(cal.model_logits(ProbaOnlyModel(1e4), X)).all()
        assert cal.model_logits(ProbaOnlyModel(1e4), X).max() == pytest.approx(logit(1 - 1e-7))

    def test_pickle_and_json_round_trips(self, focal_model, tmp_path):
        model, X, y = focal_model
        for c in (
            cal.TemperatureScaledModel.fit(model, X[:500], y[:500]),
            cal.CalibratedClassifier.fit(model, X[:500], y[:500], method="isotonic"),
        ):
            expected = c.predict_proba(X)
            np.testing.assert_array_equal(pickle.loads(pickle.dumps(c)).predict_proba(X), expected)
            c.save(tmp_path / c.method)
            loaded = type(c).load(tmp_path / c.method)
            assert type(loaded) is type(c)
            np.testing.assert_array_equal(loaded.predict_proba(X), expected)
        pickled = pickle.loads(pickle.dumps(cal.TemperatureScaledModel(ProbaOnlyModel(2.0), 0.5)))
        assert pickled.temperature == 0.5
