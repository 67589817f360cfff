"""cvn_assets.training: the predict() path audit, persistence and input validation.

Independent truths: XGBoost's own ``Booster.predict`` on a DMatrix (with
``iteration_range``), the booster's saved config, scipy's sigmoid, and the module's focal
loss evaluated on the returned margins.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from scipy.special import expit

from cvn_assets import focal_loss as fl
from cvn_assets.ablation import DEFAULT_VARIANTS, Variant
from cvn_assets.guardrails import GuardrailError
from cvn_assets.training import TrainResult, XGBWrapper, evaluate_model, train_variant

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
        assert curve[res.best_iteration] == pytest.approx(recomputed, rel=1e-5)

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
