"""The objective's per-DMatrix label cache never hands out labels the DMatrix does not hold.

Independent truth: :func:`fl.grad_hess` and :func:`fl.loss` called with the label array
itself (no DMatrix, no cache), and XGBoost's public ``DMatrix.get_label()``/``get_weight()``.
"""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import xgboost as xgb

from cvn_assets.ablation import focal_loss as fl


def _margins(n: int, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).normal(-1.0, 3.0, n).astype(np.float32)


def _labels(n: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random(n) < 0.3).astype(np.float32)


def _dmatrix(y: np.ndarray) -> xgb.DMatrix:
    return xgb.DMatrix(np.zeros((y.size, 1), dtype=np.float32), label=y)


def _expected(m: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return fl.grad_hess(m, y, 2.0, 0.25, dtype="float32")


def _assert_bits(got: tuple[np.ndarray, ...], want: tuple[np.ndarray, ...]) -> None:
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


def test_set_label_on_the_same_dmatrix_is_seen_on_the_next_call():
    n = 40_000
    m, y1, y2 = _margins(n), _labels(n, 1), _labels(n, 2)
    d = _dmatrix(y1)
    obj = fl.FocalObjective(2.0, 0.25)
    _assert_bits(obj(m, d), _expected(m, y1))
    _assert_bits(obj(m, d), _expected(m, y1))
    d.set_label(y2)  # same DMatrix, same length, other labels
    _assert_bits(obj(m, d), _expected(m, y2))
    y3 = y2.copy()
    y3[-1] = 1.0 - y3[-1]  # one label flipped, in the last row
    d.set_label(y3)
    _assert_bits(obj(m, d), _expected(m, y3))


def test_labels_set_to_invalid_values_are_refused_on_the_next_call():
    n = 1_000
    d = _dmatrix(_labels(n, 1))
    obj = fl.FocalObjective(2.0, 0.25)
    obj(_margins(n), d)
    bad = _labels(n, 1)
    bad[17] = 0.5
    d.set_label(bad)
    with pytest.raises(ValueError, match=r"y must be 0 or 1, got y\[17\] = 0\.5 \(1 bad rows\)"):
        obj(_margins(n), d)
    with pytest.raises(ValueError, match=r"y\[17\] = 0\.5"):
        fl.FocalMetric(2.0, 0.25)(_margins(n), d)


def test_two_dmatrices_of_the_same_length_keep_their_own_labels():
    n = 20_000
    m, y1 = _margins(n), _labels(n, 1)
    y2 = 1.0 - y1
    d1, d2 = _dmatrix(y1), _dmatrix(y2)
    obj = fl.FocalObjective(2.0, 0.25)
    metric = fl.FocalMetric(2.0, 0.25)
    for _ in range(2):
        _assert_bits(obj(m, d1), _expected(m, y1))
        _assert_bits(obj(m, d2), _expected(m, y2))
        assert metric(m, d1) == ("focal", float(np.mean(fl.loss(m, y1, 2.0, 0.25))))
        assert metric(m, d2) == ("focal", float(np.mean(fl.loss(m, y2, 2.0, 0.25))))


def test_cache_entry_goes_with_its_dmatrix():
    n = 500
    d = _dmatrix(_labels(n, 4))
    fl.FocalObjective(2.0, 0.25)(_margins(n), d)
    ref = weakref.ref(d)
    assert d in fl._LABELS
    gc.collect()  # DMatrices of earlier tests go first, so the count below is this one's
    before = len(fl._LABELS)
    del d
    gc.collect()
    assert ref() is None  # the cache does not keep the DMatrix alive
    assert len(fl._LABELS) == before - 1


def test_label_count_must_match_the_margins():
    d = _dmatrix(_labels(100, 1))
    with pytest.raises(ValueError, match="the DMatrix has 100 labels for 99 margins"):
        fl.FocalObjective(2.0, 0.25)(_margins(99), d)
    unlabeled = xgb.DMatrix(np.zeros((10, 1), dtype=np.float32))
    with pytest.raises(ValueError, match="the DMatrix has 0 labels for 10 margins"):
        fl.FocalObjective(2.0, 0.25)(_margins(10), unlabeled)


@pytest.mark.parametrize("reader", [fl._float_info, fl._float_info_public])
def test_float_info_readers_equal_xgboost_public_getters(reader):
    y = _labels(3_000, 7)
    d = _dmatrix(y)
    assert reader(d, "weight").size == 0
    got = reader(d, "label")
    assert got.dtype == np.float32 and np.array_equal(got, d.get_label())
    w = np.linspace(0.5, 2.0, y.size)
    d.set_weight(w)
    assert np.array_equal(reader(d, "weight"), d.get_weight())
    assert np.array_equal(reader(d, "weight"), w.astype(np.float32))


def test_weights_set_after_the_first_call_are_used():
    n = 5_000
    m, y = _margins(n), _labels(n, 8)
    d = _dmatrix(y)
    obj = fl.FocalObjective(2.0, 0.25)
    g0, h0 = obj(m, d)
    w = np.linspace(0.0, 3.0, n).astype(np.float32)
    d.set_weight(w)
    g, h = obj(m, d)
    _assert_bits((g, h), (g0 * w, h0 * w))
    name, value = fl.FocalMetric(2.0, 0.25)(m, d)
    assert value == float(np.average(fl.loss(m, y, 2.0, 0.25), weights=w))
