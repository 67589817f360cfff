"""cvn_assets.ablation.training: the predict() path audit, persistence and input validation.

Independent truths: XGBoost's own ``Booster.predict`` on a DMatrix (with
``iteration_range``), the booster's saved config, scipy's sigmoid, and the module's focal
loss evaluated on the returned margins.
"""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from scipy.special import expit

from cvn_assets.ablation import focal_loss as fl
from cvn_assets.ablation.guardrails import GuardrailError
from cvn_assets.ablation.training import (
    LOGLOSS_EPS,
    TrainResult,
    ValidationEarlyStopping,
    XGBWrapper,
    evaluate_model,
    train_variant,
)
from cvn_assets.ablation.variants import DEFAULT_VARIANTS, Variant

BASELINE = DEFAULT_VARIANTS[0]
FOCAL = next(v for v in DEFAULT_VARIANTS if v.name == "focal_g2_a025")
COLUMNS = [f"f{i}" for i in range(5)]


def _data(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 5)), columns=COLUMNS)
    X.iloc[::17, 3] = np.nan  # missing values are allowed (XGBoost's default direction)
    z = 1.2 * X["f0"].to_numpy() - 0.8 * X["f1"].to_numpy() - 2.0
    return X, (rng.random(n) < expit(z)).astype(np.int8)


@pytest.fixture(scope="module")
def data():
    X, y = _data(2400, 0)
    return X.iloc[:1600], y[:1600], X.iloc[1600:2000], y[1600:2000], X.iloc[2000:], y[2000:]


@pytest.fixture(scope="module")
def trained(data):
    Xtr, ytr, Xva, yva, _, _ = data
    params = {"max_depth": 3, "eta": 0.3, "nthread": 1}
    return {
        v.name: train_variant(
            v, Xtr, ytr, Xva, yva, params=params, num_boost_round=60, early_stopping_rounds=8
        )
        for v in (BASELINE, FOCAL)
    }


@pytest.mark.parametrize("name", ["baseline", "focal_g2_a025"])
class TestPredictPaths:
    def test_probabilities_rows_and_labels_agree(self, trained, data, name):
        model = trained[name].model
        X = data[4]
        proba = model.predict_proba(X)
        assert proba.shape == (X.shape[0], 2)
        assert ((proba >= 0) & (proba <= 1)).all()
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-15)
        np.testing.assert_array_equal(model.predict(X), proba[:, 1] >= 0.5)
        np.testing.assert_array_equal(trained[name].predict_proba(X), proba)  # trainer path
        ev = evaluate_model(model, X, data[5])  # evaluation path
        assert ev["n_pred_buy"] == int(model.predict(X).sum())

    def test_wrapper_equals_xgboost_on_the_best_iteration(self, trained, data, name):
        res = trained[name]
        model, X = res.model, data[4]
        assert res.n_rounds > res.best_iteration + 1  # early stopping really cut the model
        d = xgb.DMatrix(X)
        rng_best = (0, res.best_iteration + 1)
        margin = model.booster.predict(d, output_margin=True, iteration_range=rng_best)
        np.testing.assert_allclose(model.predict_margin(X), margin, rtol=0, atol=1e-6)
        full = model.booster.predict(d, output_margin=True)
        assert np.abs(full - margin).max() > 1e-3
        np.testing.assert_allclose(model.predict_proba(X)[:, 1], expit(margin), rtol=2e-6)
        raw = model.booster.predict(d, iteration_range=rng_best)
        if model.raw_output_logits:  # custom objective: XGBoost hands back raw margins
            np.testing.assert_allclose(raw, margin, atol=1e-6)
            assert (raw < 0).any()
        else:
            np.testing.assert_allclose(model.predict_proba(X)[:, 1], raw, atol=1e-7)

    def test_save_load_and_pickle_are_bit_identical(self, trained, data, name, tmp_path):
        model, X = trained[name].model, data[4]
        model.save(tmp_path / "m")
        assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["booster.ubj", "wrapper.json"]
        sidecar = json.loads((tmp_path / "m" / "wrapper.json").read_text())
        assert sidecar["raw_output_logits"] is model.raw_output_logits
        for clone in (XGBWrapper.load(tmp_path / "m"), pickle.loads(pickle.dumps(model))):
            assert clone.best_iteration == model.best_iteration
            np.testing.assert_array_equal(clone.predict_margin(X), model.predict_margin(X))
            np.testing.assert_array_equal(clone.predict_proba(X), model.predict_proba(X))
            np.testing.assert_array_equal(clone.predict(X), model.predict(X))


class TestTraining:
    def test_focal_base_score_and_early_stopping_metric(self, trained, data):
        res = trained["focal_g2_a025"]
        ytr = data[1]
        expected = fl.optimal_constant_margin(ytr, 2.0, 0.25)
        assert res.base_score == pytest.approx(expected)
        cfg = json.loads(res.model.booster.save_config())
        stored = float(cfg["learner"]["learner_model_param"]["base_score"].strip("[]"))
        assert stored == pytest.approx(expected, rel=1e-6)  # not XGBoost's default 0.5
        curve = res.evals_result["valid"]["focal"]
        assert res.best_iteration == int(np.argmin(curve))
        Xva, yva = data[2], data[3]
        recomputed = fl.loss(res.model.predict_margin(Xva), yva, 2.0, 0.25).mean()
        assert curve[res.best_iteration] == pytest.approx(recomputed, rel=1e-12)

    def test_baseline_uses_logloss_and_the_training_prior(self, trained, data):
        res = trained["baseline"]
        assert "logloss" in res.evals_result["valid"]
        assert res.base_score == pytest.approx(data[1].mean())
        assert not res.model.raw_output_logits and trained["focal_g2_a025"].model.raw_output_logits

    def test_numpy_inputs_and_feature_names(self, trained, data):
        Xtr, ytr, Xva, yva, Xte, _ = data
        model = trained["baseline"].model
        assert model.feature_names == COLUMNS
        assert model.booster.feature_names == COLUMNS
        shuffled = Xte[COLUMNS[::-1]]
        np.testing.assert_array_equal(model.predict_proba(shuffled), model.predict_proba(Xte))
        np.testing.assert_array_equal(model.predict_proba(Xte.to_numpy()), model.predict_proba(Xte))
        with pytest.raises(ValueError, match=r"missing \['f4'\]"):
            model.predict_proba(Xte.drop(columns="f4"))
        res = train_variant(
            BASELINE,
            Xtr.to_numpy(),
            ytr,
            Xva.to_numpy(),
            yva,
            num_boost_round=5,
            params={"nthread": 1},
        )
        assert res.model.feature_names is None
        assert res.train_seconds > 0 and res.n_rounds == 5
        with pytest.raises(ValueError, match="4 features"):
            res.model.predict(Xte.to_numpy()[:, :4])

    def test_early_stopping_can_be_disabled(self, data):
        Xtr, ytr, Xva, yva, _, _ = data
        res = train_variant(
            FOCAL,
            Xtr,
            ytr,
            Xva,
            yva,
            num_boost_round=7,
            early_stopping_rounds=0,
            params={"nthread": 1},
        )
        assert (res.n_rounds, res.best_iteration) == (7, 6)
        assert isinstance(res, TrainResult)


class TestValidation:
    def _call(self, data, **over):
        Xtr, ytr, Xva, yva, _, _ = data
        kwargs = dict(X_train=Xtr, y_train=ytr, X_valid=Xva, y_valid=yva)
        kwargs.update(over)
        return train_variant(FOCAL, **kwargs, num_boost_round=3, params={"nthread": 1})

    def test_label_errors_name_the_field_and_value(self, data):
        y = data[1].astype(float).copy()
        with pytest.raises(ValueError, match=r"y_train has 3 rows but its features have 1600"):
            self._call(data, y_train=y[:3])
        y2 = y.copy()
        y2[5] = 2
        with pytest.raises(ValueError, match=r"y_train\[5\] = 2"):
            self._call(data, y_train=y2)
        y3 = y.copy()
        y3[7] = np.nan
        with pytest.raises(ValueError, match="y_train has NaN labels"):
            self._call(data, y_train=y3)
        with pytest.raises(ValueError, match="n_positive=0"):
            self._call(data, y_train=np.zeros_like(y))
        with pytest.raises(ValueError, match="no negative"):
            self._call(data, y_train=np.ones_like(y))
        with pytest.raises(ValueError, match=r"y_valid\[0\] = -1"):
            self._call(data, y_valid=np.full(data[3].shape, -1))

    def test_feature_and_config_errors(self, data):
        Xva = data[2]
        with pytest.raises(ValueError, match="differ from X_train"):
            self._call(data, X_valid=Xva.rename(columns={"f0": "g0"}))
        with pytest.raises(ValueError, match="X_train has 5 features but X_valid has 4"):
            self._call(data, X_valid=Xva.iloc[:, :4].to_numpy())
        bad = data[0].copy()
        bad.iloc[3, 2] = np.inf
        with pytest.raises(ValueError, match=r"X_train contains inf at row 3, column 'f2'"):
            self._call(data, X_train=bad)
        Xtr, ytr, Xva, yva = data[:4]
        with pytest.raises(GuardrailError, match="max_dept"):
            train_variant(FOCAL, Xtr, ytr, Xva, yva, params={"max_dept": 3})
        with pytest.raises(GuardrailError, match="objective"):
            train_variant(FOCAL, Xtr, ytr, Xva, yva, params={"objective": "binary:logistic"})
        with pytest.raises(ValueError, match="num_boost_round"):
            train_variant(FOCAL, Xtr, ytr, Xva, yva, num_boost_round=0)
        with pytest.raises(ValueError, match="contradicts seed"):
            train_variant(FOCAL, Xtr, ytr, Xva, yva, params={"seed": 3}, seed=4)
        with pytest.raises(TypeError, match="Variant"):
            train_variant({"loss_function": "focal"}, Xtr, ytr, Xva, yva)  # type: ignore[arg-type]
        with pytest.raises(GuardrailError, match="gamma=12"):
            Variant("focal_x", "focal", 12.0, 0.25)

    def test_wrapper_construction_and_load_errors(self, trained, tmp_path):
        booster = trained["baseline"].model.booster
        with pytest.raises(ValueError, match="best_iteration=999"):
            XGBWrapper(booster, raw_output_logits=False, best_iteration=999)
        with pytest.raises(TypeError, match="raw_output_logits"):
            XGBWrapper(booster, raw_output_logits=1, best_iteration=0)  # type: ignore[arg-type]
        trained["baseline"].model.save(tmp_path / "m")
        sidecar = json.loads((tmp_path / "m" / "wrapper.json").read_text())
        sidecar["format"] = "pickle"
        (tmp_path / "m" / "wrapper.json").write_text(json.dumps(sidecar))
        with pytest.raises(ValueError, match="unsupported format 'pickle'"):
            XGBWrapper.load(tmp_path / "m")


# ---------------------------------------------------------------------------------------------
# early stopping on full-precision validation losses (issue: focal arm stopped on "%f" text)
# ---------------------------------------------------------------------------------------------
PATIENCE = 30
MAX_ROUNDS = 400


def _xgb_rule(history: np.ndarray, patience: int) -> tuple[int, int]:
    """XGBoost's EarlyStopping rule on a loss sequence: (rounds trained, best iteration)."""
    best = 0
    for k in range(len(history)):
        if history[k] < history[best]:
            best = k
        if k - best >= patience:
            return k + 1, best
    return len(history), best


def _reference_loss(name: str, margin: np.ndarray, y: np.ndarray) -> float:
    """Independent float64 recomputation: the focal loss module, or expit-based logloss."""
    m = margin.astype(np.float64)
    if name == "baseline":
        p = np.clip(expit(m), LOGLOSS_EPS, 1 - LOGLOSS_EPS)
        return float(-np.mean(np.where(y == 1, np.log(p), np.log1p(-p))))
    return float(np.mean(fl.loss(m, y, 2.0, 0.25)))


@pytest.fixture(scope="module")
def issue_example():
    """The issue's setting: 2,000 train / 1,000 validation rows, 3 normal features, label
    ``0.4 x0 + noise > 1.6``, eta 0.01, depth 2, patience 30 (seed picked so that the
    rounded "%f" history stops early: see the first test)."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(3000, 3))
    y = (0.4 * X[:, 0] + rng.normal(size=3000) > 1.6).astype(np.int8)
    Xtr, ytr, Xva, yva = X[:2000], y[:2000], X[2000:], y[2000:]
    params = {"eta": 0.01, "max_depth": 2, "nthread": 1}
    out = {}
    for v in (BASELINE, FOCAL):
        res = train_variant(
            v,
            Xtr,
            ytr,
            Xva,
            yva,
            params=params,
            num_boost_round=MAX_ROUNDS,
            early_stopping_rounds=PATIENCE,
        )
        d = xgb.DMatrix(Xva)
        recomputed = np.array(
            [
                _reference_loss(
                    v.name,
                    res.model.booster.predict(d, output_margin=True, iteration_range=(0, k)),
                    yva,
                )
                for k in range(1, res.n_rounds + 1)
            ]
        )
        out[v.name] = (res, recomputed)
    return out, (Xva, yva)


@pytest.mark.parametrize("name", ["baseline", "focal_g2_a025"])
class TestFullPrecisionEarlyStopping:
    def test_best_iteration_is_the_argmin_of_the_recomputed_validation_loss(
        self, issue_example, name
    ):
        res, recomputed = issue_example[0][name]
        assert res.best_iteration == int(np.argmin(recomputed))
        # stopped exactly when XGBoost's rule says so on the float64 losses, not before
        assert res.n_rounds >= min(res.best_iteration + PATIENCE + 1, MAX_ROUNDS)
        assert (res.n_rounds, res.best_iteration) == _xgb_rule(recomputed, PATIENCE)
        if name == "focal_g2_a025":  # the regression: "%f" text stops ~40 rounds too early
            rounded = np.array([float(f"{v:f}") for v in recomputed])
            stop_r, best_r = _xgb_rule(rounded, PATIENCE)
            assert stop_r < res.n_rounds and best_r < res.best_iteration
            assert stop_r < res.best_iteration + PATIENCE  # it stopped before the true minimum

    def test_history_and_attributes_are_full_precision(self, issue_example, name, tmp_path):
        res, recomputed = issue_example[0][name]
        metric = "logloss" if name == "baseline" else "focal"
        history = res.evals_result["valid"][metric]
        assert list(res.evals_result) == ["valid"] and list(res.evals_result["valid"]) == [metric]
        np.testing.assert_allclose(history, recomputed, rtol=1e-12, atol=0)
        booster = res.model.booster
        assert booster.best_iteration == res.best_iteration == res.model.best_iteration
        assert float(booster.attr("best_score")) == history[res.best_iteration]
        md = res.model.metadata
        assert md["early_stopping_metric"] == metric and md["early_stopping_rounds"] == PATIENCE
        assert md["best_score"] == history[res.best_iteration]
        res.model.save(tmp_path / "m")
        loaded = XGBWrapper.load(tmp_path / "m")
        assert loaded.metadata["valid_history"] == history  # JSON keeps every bit
        assert loaded.booster.best_iteration == res.best_iteration

    def test_same_definition_as_xgboosts_own_metric(self, issue_example, name):
        """Only the precision changed: XGBoost's float32 metric agrees to ~1e-6."""
        res, _ = issue_example[0][name]
        Xva, yva = issue_example[1]
        metric = "logloss" if name == "baseline" else "focal"
        d = xgb.DMatrix(Xva, label=yva)
        if name == "baseline":
            text = res.model.booster.eval(d, "v")
        else:
            text = res.model.booster.eval_set([(d, "v")], feval=fl.FocalMetric(2.0, 0.25))
        xgb_value = float(text.split(f"v-{metric}:")[1].split()[0])
        assert res.evals_result["valid"][metric][-1] == pytest.approx(xgb_value, rel=1e-4)


class TestValidationEarlyStoppingCallback:
    def test_running_margin_equals_a_full_prediction(self, data):
        Xtr, ytr, Xva, yva, _, _ = data
        dtrain = xgb.DMatrix(Xtr, label=ytr)
        Xv = Xva.to_numpy(dtype=np.float32)
        stopper = ValidationEarlyStopping(Xv, lambda m: float(np.mean(m)), patience=0)
        params = {"max_depth": 6, "eta": 0.3, "nthread": 1, "objective": "binary:logistic"}
        booster = xgb.train(
            {**params, "base_score": 0.2}, dtrain, 80, callbacks=[stopper], verbose_eval=False
        )
        assert booster.num_boosted_rounds() == 80 and len(stopper.history) == 80
        assert stopper.margin is not None
        full = booster.predict(xgb.DMatrix(Xva), output_margin=True)
        np.testing.assert_allclose(stopper.margin, full, rtol=0, atol=1e-6)
        for k in (1, 2, 40):  # each recorded value is the loss of the k-round model
            m_k = booster.predict(xgb.DMatrix(Xva), output_margin=True, iteration_range=(0, k))
            assert stopper.history[k - 1] == pytest.approx(float(np.mean(m_k)), rel=1e-6)

    def test_same_rule_as_xgboost_early_stopping(self, data):
        """Ties do not improve, the first minimum wins, stop after ``patience`` idle rounds:
        compared with XGBoost's own EarlyStopping fed the same (exactly printable) values."""
        Xtr, ytr, Xva, _, _, _ = data
        dtrain = xgb.DMatrix(Xtr, label=ytr)
        params = {"max_depth": 2, "nthread": 1, "objective": "binary:logistic"}
        sequence = [5.0, 4.0, 4.0, 3.0, 3.5, 3.0, 3.0, 2.5, 2.5, 2.75, 2.5, 2.5, 9.0, 1.0]
        for patience in (1, 2, 3, 4, 6):
            counter = iter(sequence)
            ours = ValidationEarlyStopping(
                Xva.to_numpy(dtype=np.float32), lambda m, c=counter: next(c), patience
            )
            b1 = xgb.train(params, dtrain, len(sequence), callbacks=[ours], verbose_eval=False)
            theirs = iter(sequence)
            b2 = xgb.train(
                {**params, "disable_default_eval_metric": 1},
                dtrain,
                len(sequence),
                evals=[(dtrain, "t")],
                custom_metric=lambda p, d, c=theirs: ("seq", next(c)),
                early_stopping_rounds=patience,
                maximize=False,
                verbose_eval=False,
            )
            assert b1.num_boosted_rounds() == b2.num_boosted_rounds(), patience
            assert b1.best_iteration == b2.best_iteration == ours.best_iteration, patience
            assert float(b1.attr("best_score")) == float(b2.attr("best_score"))

    def test_non_finite_loss_raises_and_early_stopping_zero_keeps_the_last_round(self, data):
        Xtr, ytr, Xva, yva, _, _ = data
        dtrain = xgb.DMatrix(Xtr, label=ytr)
        stopper = ValidationEarlyStopping(Xva.to_numpy(np.float32), lambda m: math.nan, 5, "v")
        with pytest.raises(FloatingPointError, match="v is not finite at round 0"):
            xgb.train({"nthread": 1}, dtrain, 3, callbacks=[stopper], verbose_eval=False)
        res = train_variant(
            BASELINE,
            Xtr,
            ytr,
            Xva,
            yva,
            num_boost_round=6,
            early_stopping_rounds=0,
            params={"nthread": 1, "max_depth": 8, "eta": 1.0},
        )
        assert (res.n_rounds, res.best_iteration) == (6, 5)
        assert res.model.booster.best_iteration == 5
        assert len(res.evals_result["valid"]["logloss"]) == 6
