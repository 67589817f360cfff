"""Cells computed several at a time (cvn_assets.assets.cells.map_cells, cell_workers).

Independent truths: the same cells computed one after the other (bit-identical boosters, the
key order), an event that only a concurrently running cell can set, and the settings' own
validation messages.
"""

import math
import threading

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from cvn_assets.ablation.training import train_variant
from cvn_assets.ablation.variants import DEFAULT_VARIANTS
from cvn_assets.assets.cells import MAX_AUTO_CELL_WORKERS, cell_workers, map_cells
from resources.sweep_settings import SweepConfigError, SweepSettings


def test_cell_workers_auto_is_one_per_core_capped():
    assert cell_workers(0, cores=1) == 1
    assert cell_workers(0, cores=2) == 2
    assert cell_workers(0, cores=64) == MAX_AUTO_CELL_WORKERS
    assert cell_workers(3, cores=1) == 3  # an explicit count wins
    with pytest.raises(ValueError, match=r"cell_workers: -1"):
        cell_workers(-1)


def test_map_cells_keeps_key_order_and_isolates_failures():
    def work(key: str) -> int:
        if key == "c":
            raise RuntimeError("cell c broke")
        return ord(key)

    for workers in (1, 2, 3):
        out = list(map_cells(["a", "b", "c", "d"], work, workers))
        assert [k for k, _, _ in out] == ["a", "b", "c", "d"]
        assert [r for k, r, _ in out if k != "c"] == [97, 98, 100]
        err = dict((k, r) for k, r, _ in out)["c"]
        assert isinstance(err, RuntimeError) and str(err) == "cell c broke"
        assert all(s >= 0 for _, _, s in out)


def test_map_cells_runs_cells_at_the_same_time():
    # "a" can only finish once "b" has started: true only when two cells run at once (the
    # timeout bounds a hang; it is not a speed assertion)
    b_started = threading.Event()

    def work(key: str) -> bool:
        if key == "b":
            b_started.set()
            return True
        return b_started.wait(timeout=60)

    assert [r for _, r, _ in map_cells(["a", "b"], work, 2)] == [True, True]
    b_started.clear()
    seq = [r for _, r, _ in map_cells(["a", "b"], lambda k: k == "b" or b_started.is_set(), 1)]
    assert seq == [False, True]  # one worker: "a" ran before "b" started


def test_boosters_trained_in_parallel_equal_sequential_ones():
    rng = np.random.default_rng(7)
    X = pd.DataFrame(rng.normal(size=(3000, 6)), columns=[f"f{i}" for i in range(6)])
    y = (rng.random(3000) < expit(X["f0"].to_numpy() - 1.5)).astype(np.int8)
    params = {"max_depth": 3, "eta": 0.2, "nthread": 1, "subsample": 0.8, "seed": 0}

    def train(name: str):
        variant = next(v for v in DEFAULT_VARIANTS if v.name == name)
        res = train_variant(
            variant, X[:2000], y[:2000], X[2000:], y[2000:],
            params=params, num_boost_round=30, early_stopping_rounds=10, seed=0,
        )  # fmt: skip
        return bytes(res.model.booster.save_raw("ubj"))

    names = [v.name for v in DEFAULT_VARIANTS]
    parallel = {k: r for k, r, _ in map_cells(names, train, 3)}
    sequential = {k: r for k, r, _ in map_cells(names, train, 1)}
    assert parallel == sequential
    assert len(set(sequential.values())) == len(names)  # the variants differ


def test_cell_workers_setting_is_validated_and_outside_the_identity():
    with pytest.raises(SweepConfigError, match=r"cell_workers: -2"):
        SweepSettings(cell_workers=-2).validate_all()
    settings = SweepSettings(cell_workers=2)
    settings.validate_all()
    assert "cell_workers" not in settings.identity_settings()
    assert settings.identity_settings() == SweepSettings(cell_workers=1).identity_settings()
    assert settings.xgb_params()["nthread"] == 1


def test_eta_weighs_remaining_cells_by_their_measured_cost():
    from resources.sweep_settings import eta_seconds

    assert math.isnan(eta_seconds(5.0, 10, 0, 0.0, 0, 0.0))  # nothing measured yet
    # 5 of 10 trained in 20 s of steps, 30 s elapsed: 5 x 4 s left, overhead 1.5x -> 30 s
    assert eta_seconds(30.0, 10, 5, 20.0, 0, 0.0) == pytest.approx(30.0)
    # 3 of 4 trained (3 s each), 1 calibrated (2 s): left 1 x 3 + 3 x 2 = 9 s of 11 s done,
    # 22 s elapsed -> 22 * 9 / 11 = 18 s
    assert eta_seconds(22.0, 4, 3, 9.0, 1, 2.0) == pytest.approx(18.0)
    assert eta_seconds(40.0, 4, 4, 12.0, 4, 8.0) == 0.0  # all done
    # the results stage to come: one more calibrated pass over the 4 cells, 4 x 2 s:
    # 22 * (9 + 8) / 11 = 34 s; once every cell is done, 40 * 8 / 20 = 16 s
    assert eta_seconds(22.0, 4, 3, 9.0, 1, 2.0, results_stage=True) == pytest.approx(34.0)
    assert eta_seconds(40.0, 4, 4, 12.0, 4, 8.0, results_stage=True) == pytest.approx(16.0)
