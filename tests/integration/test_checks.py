"""The asset-check evaluators fail on the defects they exist to catch."""

import numpy as np
import pandas as pd

from cvn_assets.assets.checks import no_leakage_result, probabilities_valid_result
from cvn_assets.market.folds import FoldPlan


def _dataset(n: int = 40, horizon: int = 4) -> pd.DataFrame:
    idx = pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC", name="open_time")
    return pd.DataFrame(
        {"t1": idx + pd.Timedelta(hours=horizon), "label": np.arange(n) % 2}, index=idx
    )


def test_clean_plan_passes_and_an_unpurged_one_fails():
    ds = _dataset()
    # rows 0..19 train, 24..31 calibration, 32..39 test: a 4-row gap = horizon, so no overlap
    clean = FoldPlan(
        fold=0,
        train=np.arange(0, 16),
        early_stopping=np.arange(16, 20),
        calibration=np.arange(24, 32),
        test=np.arange(36, 40),
    )
    assert no_leakage_result("fold_splits", {"X": ds}, {"X": [clean]}).passed
    # train row 21 ends at 25h, inside the calibration block: a leak the purge must remove
    leaky = FoldPlan(
        fold=0,
        train=np.arange(0, 22),
        early_stopping=np.arange(16, 20),
        calibration=np.arange(24, 32),
        test=np.arange(36, 40),
    )
    res = no_leakage_result("fold_splits", {"X": ds}, {"X": [leaky]})
    assert not res.passed
    problems = res.metadata["problems"].value
    assert any("train~calibration+test" in p for p in problems)
    assert any("train~early_stopping: 4 shared rows" in p for p in problems)


class _Cell:
    def __init__(self, probs, threshold=0.3):
        self.test_eval = {
            f"prob_{m}": np.asarray(probs, dtype=float)
            for m in ("none", "temperature", "platt", "isotonic")
        }
        self.threshold = threshold


def test_probabilities_outside_unit_interval_fail():
    assert probabilities_valid_result("c", {"A|f0": _Cell([0.0, 0.5, 1.0])}).passed
    assert not probabilities_valid_result("c", {"A|f0": _Cell([0.1, 1.2])}).passed
    assert not probabilities_valid_result("c", {"A|f0": _Cell([0.1, np.nan])}).passed
    assert not probabilities_valid_result("c", {"A|f0": _Cell([0.1], threshold=1.5)}).passed
    assert not probabilities_valid_result("c", {}).passed  # nothing checked is not a pass
    # ... unless the run selected no partition at all (an empty key range), which it says
    empty = probabilities_valid_result("c", {}, empty_selection=True)
    assert empty.passed and "empty partition range" in empty.metadata["note"].value
