"""The focal objective computes exactly what it computed before issue 22 (bit for bit).

Independent truth: the kernels the module generated *before* the speed work, frozen as text in
``tests/unit/data/focal_kernels_before_i22.json`` (``fl._build_kernel(...).source`` at commit
0c1f684 for 10 grad/hess and 4 loss settings: integer and non-integer gammas, float32 and
float64, floored and exact hessians), run here by a small driver that re-implements the old
calling path (float64 margins clipped to +-2 * MARGIN_CLIP before a float32 kernel, labels from
``DMatrix.get_label()`` every call, sample weights multiplied in afterwards). Nothing in the
driver comes from the module under test, so any change in a gradient, hessian or loss bit, or
in what XGBoost trains from them, fails here. Both paths run on the same machine, so the
comparison holds whatever SIMD code NumPy picks for ``exp``/``log``.
"""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb

from cvn_assets.ablation import focal_loss as fl

_FROZEN = json.loads((Path(__file__).parent / "data" / "focal_kernels_before_i22.json").read_text())
_OLD_MARGIN_CLIP = math.log((1.0 - 1e-7) / 1e-7)
_OLD_UFUNCS = {
    f"_{n}": getattr(np, n)
    for n in (
        *("add", "subtract", "multiply", "divide", "negative", "square", "sqrt"),
        *("log", "exp", "maximum", "minimum", "copyto"),
    )
}


def _frozen_kernel(source: str, dtype: str) -> Any:
    """Compile one frozen kernel with the old namespace (ufuncs, 0-d constants of ``dtype``)."""
    consts_line = next(ln for ln in source.splitlines() if ln.strip().startswith("# constants:"))
    namespace: dict[str, Any] = dict(_OLD_UFUNCS)
    body = consts_line.split(":", 1)[1].strip()
    for item in filter(None, (s.strip() for s in body.split(","))):
        name, value = (s.strip() for s in item.split("="))
        namespace[name] = np.array(float(value), dtype=dtype)
    exec(compile(source, "<frozen focal kernel>", "exec"), namespace)
    return namespace["kernel"]


def _run_frozen(source: str, dtype: str, margin: np.ndarray, y: np.ndarray, n_out: int) -> list:
    kernel = _frozen_kernel(source, dtype)
    m = np.ascontiguousarray(margin.reshape(-1))
    if m.dtype not in (np.float32, np.float64):
        m = m.astype(np.float64)
    if dtype == "float32" and m.dtype == np.float64:
        m = np.clip(m, -2 * _OLD_MARGIN_CLIP, 2 * _OLD_MARGIN_CLIP).astype(np.float32)
    yy = np.ascontiguousarray(y.reshape(-1))
    if yy.dtype not in (np.float32, np.float64):
        yy = yy.astype(np.float64)
    outs = [np.empty(m.shape[0], dtype=dtype) for _ in range(n_out)]
    params = list(inspect.signature(kernel).parameters)
    n_bufs = len(params) - 2 - n_out - 2  # m, y, outs..., buffers..., lo, hi
    chunk = int(source.split("range(lo, hi, ", 1)[1].split(")", 1)[0])
    bufs = [np.empty(chunk, dtype=dtype) for _ in range(n_bufs)]
    kernel(m, yy, *outs, *bufs, 0, m.shape[0])
    return outs


def _fixed_inputs(n: int = 100_003) -> tuple[np.ndarray, np.ndarray]:
    """Margins over the whole range (extremes, the clip, subnormals), about 10% positives."""
    rng = np.random.default_rng(22)
    special = [0.0, -0.0, 1e-45, -1e-45, 1e-30, 16.118095, -16.118095, 16.2, -16.2, 40.0, -40.0]
    special += [3e38, -3e38, np.inf, -np.inf]
    m = np.concatenate(
        [
            np.array(special),
            np.linspace(-40.0, 40.0, 20_001),
            rng.normal(0.0, 4.0, n - 20_001 - len(special)),
        ]
    )
    y = ((np.arange(n) * 7919) % 10 == 0) | (rng.random(n) < 0.02)
    return m, y.astype(np.float32)


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


GH_CASES = _FROZEN["grad_hess"]
GH_IDS = [f"g{c['gamma']}-a{c['alpha']}-{c['hess_floor']}-{c['dtype']}" for c in GH_CASES]


@pytest.mark.parametrize("case", GH_CASES, ids=GH_IDS)
@pytest.mark.parametrize("margin_dtype", ["float32", "float64"])
def test_grad_hess_bits_equal_the_frozen_kernels(case, margin_dtype):
    m, y = _fixed_inputs()
    m = m.astype(margin_dtype)
    want_g, want_h = _run_frozen(case["source"], case["dtype"], m, y, 2)
    assert np.isfinite(want_g).all() and np.isfinite(want_h).all()
    for n_threads in (1, 2):
        g, h = fl.grad_hess(
            m,
            y,
            case["gamma"],
            case["alpha"],
            hess_floor=case["hess_floor"],
            dtype=case["dtype"],
            n_threads=n_threads,
        )
        assert _same_bits(g, want_g), f"gradient bits differ ({n_threads} threads)"
        assert _same_bits(h, want_h), f"hessian bits differ ({n_threads} threads)"


@pytest.mark.parametrize("case", _FROZEN["loss"], ids=lambda c: f"g{c['gamma']}-a{c['alpha']}")
def test_loss_bits_equal_the_frozen_kernels(case):
    m, y = _fixed_inputs()
    (want,) = _run_frozen(case["source"], case["dtype"], m, y, 1)
    assert _same_bits(fl.loss(m, y, case["gamma"], case["alpha"]), want)


def _frozen_objective(case: dict[str, Any]) -> Any:
    """The objective as it was: labels and weights read from the DMatrix on every call."""

    def obj(predt: np.ndarray, dtrain: xgb.DMatrix) -> tuple[np.ndarray, np.ndarray]:
        y = dtrain.get_label().reshape(predt.shape)
        grad, hess = _run_frozen(case["source"], case["dtype"], predt, y, 2)
        weights = dtrain.get_weight()
        if weights.size:
            grad *= weights
            hess *= weights
        return grad.reshape(predt.shape), hess.reshape(predt.shape)

    return obj


OBJ_CASES = [c for c in GH_CASES if c["hess_floor"] == fl.HESS_FLOOR]


@pytest.mark.parametrize("case", OBJ_CASES, ids=[GH_IDS[GH_CASES.index(c)] for c in OBJ_CASES])
@pytest.mark.parametrize("weighted", [False, True])
def test_objective_bits_equal_the_frozen_path_on_every_call(case, weighted):
    m, y = _fixed_inputs(30_011)
    predt = m.astype(np.float32)
    d = xgb.DMatrix(np.zeros((y.size, 1), dtype=np.float32), label=y)
    if weighted:
        d.set_weight(np.linspace(0.25, 3.0, y.size))
    old = _frozen_objective(case)
    new = fl.FocalObjective(case["gamma"], case["alpha"], dtype=case["dtype"])
    new2 = fl.FocalObjective(case["gamma"], case["alpha"], dtype=case["dtype"], n_threads=2)
    want_g, want_h = old(predt, d)
    for objective in (new, new, new2, new):  # first call fills the per-DMatrix cache
        g, h = objective(predt, d)
        assert _same_bits(g, want_g) and _same_bits(h, want_h)


def test_trained_booster_predictions_equal_the_frozen_path():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(6_000, 6)).astype(np.float32)
    y = (rng.random(6_000) < 1 / (1 + np.exp(-(X[:, 0] - 2.0)))).astype(np.float32)
    dtrain = xgb.DMatrix(X, label=y)
    case = next(c for c in OBJ_CASES if c["gamma"] == 2.0 and c["dtype"] == "float32")
    params = {"tree_method": "hist", "max_depth": 4, "eta": 0.3, "nthread": 2, "verbosity": 0}
    params["base_score"] = fl.optimal_constant_margin(y, 2.0, 0.25)
    old = xgb.train(params, dtrain, 15, obj=_frozen_objective(case))
    new = xgb.train(params, dtrain, 15, obj=fl.FocalObjective(2.0, 0.25))
    p_old = old.predict(dtrain, output_margin=True)
    assert np.ptp(p_old) > 1.0  # the boosters learned something
    assert _same_bits(new.predict(dtrain, output_margin=True), p_old)
    assert _same_bits(new.predict(dtrain), old.predict(dtrain))
