"""Benchmark of the SymPy-generated focal objective (issue 2, "Performance").

Prints figures measured in one run on this machine, as ratios against XGBoost's built-in
``binary:logistic`` on the same data, so machine speed cancels out:

1. training time: 100k rows x 30 features, 10% positives, hist, depth 6, 200 rounds,
   2 threads, gamma=2, alpha=0.25 (target: focal <= 1.25x built-in);
2. grad+hess cost per element at 1M rows (target: <= 20 ns);
3. ``import cvn_assets.ablation.focal_loss`` in a fresh interpreter (target: <= 0.6 s).

Timings interleave the contenders and keep the minimum of several repeats (the machine is
shared; the minimum is the least disturbed run). Run: ``.venv/bin/python bench/bench_focal.py``
(``--quick`` for fewer repeats).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import sympy as sp
import xgboost as xgb
from scipy.optimize import brentq
from scipy.special import expit

from cvn_assets.ablation import focal_loss as fl

GAMMA, ALPHA = 2.0, 0.25


def make_data(n: int, d: int, prior: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    score = X[:, :8] @ rng.normal(size=8) * 0.5
    shift = brentq(lambda c: expit(score + c).mean() - prior, -20, 20)
    y = (rng.random(n) < expit(score + shift)).astype(np.float32)
    return X, y


def naive_lambdify_objective() -> Callable[[np.ndarray, xgb.DMatrix], tuple[Any, Any]]:
    """The reference 'naive lambdify': SymPy's y-form derivatives, lambdify without cse."""
    grad, hess = fl.symbolic_grad_hess()
    vals = {fl.GAMMA: GAMMA, fl.ALPHA: ALPHA}
    f = sp.lambdify((fl.P, fl.Q, fl.Y), [grad.subs(vals), hess.subs(vals)], "numpy")

    def obj(predt: np.ndarray, dtrain: xgb.DMatrix) -> tuple[Any, Any]:
        y = dtrain.get_label()
        p = np.clip(expit(predt.astype(np.float64)), 1e-7, 1 - 1e-7)
        g, h = f(p, 1 - p, y)
        return g, np.maximum(h, fl.HESS_FLOOR)

    return obj


def numpy_logistic_objective(predt: np.ndarray, dtrain: xgb.DMatrix) -> tuple[Any, Any]:
    """A NumPy custom *logistic* objective: the cost floor of any Python objective."""
    y = dtrain.get_label()
    p = expit(predt.astype(np.float64))
    return p - y, p * (1 - p)


def bench_training(repeats: int) -> dict[str, tuple[float, float]]:
    X, y = make_data(100_000, 30, 0.10)
    dtrain = xgb.DMatrix(X, label=y)
    base = {"tree_method": "hist", "max_depth": 6, "eta": 0.1, "nthread": 2, "verbosity": 0}
    intercept = fl.optimal_constant_margin(y, GAMMA, ALPHA)
    prior = float(y.mean())
    contenders: dict[str, tuple[dict[str, Any], Any]] = {
        "built-in binary:logistic": ({**base, "objective": "binary:logistic"}, None),
        "focal FocalObjective (float32, 1 thread)": (
            {**base, "base_score": intercept},
            fl.FocalObjective(GAMMA, ALPHA),
        ),
        "focal FocalObjective (float32, 2 threads)": (
            {**base, "base_score": intercept},
            fl.FocalObjective(GAMMA, ALPHA, n_threads=2),
        ),
        "focal FocalObjective (float64, 1 thread)": (
            {**base, "base_score": intercept},
            fl.FocalObjective(GAMMA, ALPHA, dtype="float64"),
        ),
        "reference: NumPy custom logistic": (
            {**base, "base_score": float(np.log(prior / (1 - prior)))},
            numpy_logistic_objective,
        ),
        "reference: naive lambdify focal": (
            {**base, "base_score": intercept},
            naive_lambdify_objective(),
        ),
    }
    runs: dict[str, Callable[[], Any]] = {
        name: functools.partial(xgb.train, params, dtrain, 200, obj=obj)
        for name, (params, obj) in contenders.items()
    }
    xgb.train(contenders["built-in binary:logistic"][0], dtrain, 5)  # warm-up
    return _interleaved(runs, repeats)


def _interleaved(
    runs: dict[str, Callable[[], Any]], repeats: int
) -> dict[str, tuple[float, float]]:
    """(min wall seconds, min process CPU seconds) per run, contenders interleaved."""
    wall: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            w0, c0 = time.perf_counter(), time.process_time()
            run()
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
    return {k: (min(wall[k]), min(cpu[k])) for k in runs}


def bench_training_with_early_stopping(repeats: int) -> dict[str, tuple[float, float]]:
    """The trainer's real setting: a validation set evaluated every round."""
    X, y = make_data(120_000, 30, 0.10, seed=1)
    dtrain = xgb.DMatrix(X[:100_000], label=y[:100_000])
    dvalid = xgb.DMatrix(X[100_000:], label=y[100_000:])
    base = {"tree_method": "hist", "max_depth": 6, "eta": 0.1, "nthread": 2, "verbosity": 0}
    intercept = fl.optimal_constant_margin(y[:100_000], GAMMA, ALPHA)
    runs: dict[str, Callable[[], Any]] = {
        "built-in + logloss": lambda: xgb.train(
            {**base, "objective": "binary:logistic", "eval_metric": "logloss"},
            dtrain,
            200,
            evals=[(dvalid, "valid")],
            verbose_eval=False,
        ),
        "focal + FocalMetric": lambda: xgb.train(
            {**base, "base_score": intercept, "disable_default_eval_metric": 1},
            dtrain,
            200,
            obj=fl.FocalObjective(GAMMA, ALPHA),
            custom_metric=fl.FocalMetric(GAMMA, ALPHA),
            evals=[(dvalid, "valid")],
            verbose_eval=False,
        ),
    }
    return _interleaved(runs, repeats)


def bench_kernel(repeats: int) -> dict[str, float]:
    n = 1_000_000
    rng = np.random.default_rng(2)
    m = rng.normal(0, 3, n).astype(np.float32)  # XGBoost hands float32 margins
    y = (rng.random(n) < 0.1).astype(np.float32)
    naive = naive_lambdify_objective()
    d = xgb.DMatrix(np.zeros((n, 1), dtype=np.float32), label=y)
    cases: dict[str, Callable[[], Any]] = {
        "grad_hess float64, 1 thread (public default)": lambda: fl.grad_hess(m, y, GAMMA, ALPHA),
        "grad_hess float64, 2 threads": lambda: fl.grad_hess(m, y, GAMMA, ALPHA, n_threads=2),
        "grad_hess float32, 1 thread (objective default)": lambda: fl.grad_hess(
            m, y, GAMMA, ALPHA, dtype="float32"
        ),
        "grad_hess float32, 2 threads": lambda: fl.grad_hess(
            m, y, GAMMA, ALPHA, dtype="float32", n_threads=2
        ),
        "reference: naive lambdify (y-form, no cse)": lambda: naive(m, d),
    }
    for f in cases.values():
        f()  # build kernels / buffers once
    out: dict[str, float] = {}
    for name, f in cases.items():
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            f()
            best = min(best, time.perf_counter() - start)
        out[name] = best / n * 1e9
    return out


def bench_import(repeats: int) -> dict[str, float]:
    code = "import time; t = time.perf_counter(); import {mod}; print(time.perf_counter() - t)"
    out: dict[str, float] = {}
    for label, mod in (
        ("cvn_assets.ablation.focal_loss", "cvn_assets.ablation.focal_loss"),
        ("sympy alone", "sympy"),
    ):
        samples = []
        for _ in range(repeats):
            res = subprocess.run(
                [sys.executable, "-c", code.format(mod=mod)],
                capture_output=True,
                text=True,
                check=True,
            )
            samples.append(float(res.stdout.strip()))
        out[f"{label} (min)"] = min(samples)
        out[f"{label} (median)"] = statistics.median(samples)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    reps = 2 if args.quick else 5

    print(f"load average at the start: {os.getloadavg()} on {os.cpu_count()} cores")
    print("== import time (fresh interpreter) ==")
    imp = bench_import(3 if args.quick else 7)
    for k, v in imp.items():
        print(f"  {k:40s} {v:6.3f} s")
    verdict = "PASS" if imp["cvn_assets.ablation.focal_loss (min)"] <= 0.6 else "MISS"
    print(f"  target <= 0.6 s: {verdict}")

    print("== grad + hess at 1M rows (ns per element, min of repeats) ==")
    ker = bench_kernel(5 if args.quick else 9)
    for k, v in ker.items():
        print(f"  {k:50s} {v:7.2f} ns")
    for k in (
        "grad_hess float64, 1 thread (public default)",
        "grad_hess float32, 1 thread (objective default)",
    ):
        print(f"  target <= 20 ns, {k}: {'PASS' if ker[k] <= 20 else 'MISS'}")

    print("== training: 100k x 30, 10% positives, hist, depth 6, 200 rounds, nthread=2 ==")
    tr = bench_training(reps)
    _print_times(tr, "built-in binary:logistic")
    ratio = tr["focal FocalObjective (float32, 1 thread)"][0] / tr["built-in binary:logistic"][0]
    verdict = "PASS" if ratio <= 1.25 else "MISS"
    print(f"  target focal <= 1.25x built-in (wall): {ratio:.2f}x {verdict}")

    print("== training with a 20k-row validation set evaluated every round ==")
    _print_times(bench_training_with_early_stopping(reps), "built-in + logloss")
    print(f"load average at the end: {os.getloadavg()}")


def _print_times(times: dict[str, tuple[float, float]], reference: str) -> None:
    w_ref, c_ref = times[reference]
    print(f"  {'':45s} {'wall':>8s} {'ratio':>6s} {'cpu':>8s} {'ratio':>6s}")
    for k, (w, c) in times.items():
        print(f"  {k:45s} {w:7.3f}s {w / w_ref:5.2f}x {c:7.3f}s {c / c_ref:5.2f}x")


if __name__ == "__main__":
    main()
