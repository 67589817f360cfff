"""Asset checks users want to see green: no leakage between fold blocks, valid probabilities.

Both are evaluated inside the step that materializes the asset (``check_specs``), on the
values just computed, so they cover exactly the partitions of that run and cost no extra
step or re-read of the stored artifacts.
"""

from collections.abc import Mapping

import numpy as np
import pandas as pd
from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, MetadataValue

from cvn_assets.ablation.calibrated_model import CalibratedModel
from cvn_assets.ablation.calibration import CALIBRATION_METHODS
from cvn_assets.market.dataset import label_times
from cvn_assets.market.folds import FoldPlan, leakage_check

NO_LEAKAGE = "no_leakage"
PROBABILITIES_VALID = "probabilities_valid"


def no_leakage_spec(asset: str) -> AssetCheckSpec:
    return AssetCheckSpec(
        NO_LEAKAGE,
        asset=asset,
        description="No train / early-stopping row's label interval [t0, t1] overlaps a "
        "calibration or test row's, calibration does not overlap test, and train and "
        "early-stopping share no row (AFML 7.4), for every crypto of the run.",
    )


def probabilities_valid_spec(asset: str) -> AssetCheckSpec:
    return AssetCheckSpec(
        PROBABILITIES_VALID,
        asset=asset,
        description="Calibrated test-block probabilities are finite and in [0, 1] for every "
        "calibration method, and the BUY threshold is a probability, in every cell of the run.",
    )


def no_leakage_result(
    asset: str, datasets: Mapping[str, pd.DataFrame], plans: Mapping[str, list[FoldPlan]]
) -> AssetCheckResult:
    per_crypto: dict[str, dict[str, int]] = {}
    problems: list[str] = []
    for crypto, crypto_plans in plans.items():
        t0, t1 = label_times(datasets[crypto])
        overlaps = 0
        for p in crypto_plans:
            evaluation = np.concatenate([p.calibration, p.test])
            for name, (a, b) in {
                "train~calibration+test": (p.train, evaluation),
                "early_stopping~calibration+test": (p.early_stopping, evaluation),
                "calibration~test": (p.calibration, p.test),
            }.items():
                rep = leakage_check(t0, t1, a, b)
                if not rep.ok:
                    overlaps += rep.n_overlaps
                    problems.append(
                        f"{crypto} f{p.fold} {name}: {rep.n_overlaps} overlaps, "
                        f"first pair {rep.first_pair}"
                    )
            shared = np.intersect1d(p.train, p.early_stopping).size
            if shared:
                problems.append(f"{crypto} f{p.fold} train~early_stopping: {shared} shared rows")
        per_crypto[crypto] = {"folds": len(crypto_plans), "overlaps": overlaps}
    return AssetCheckResult(
        asset_key=asset,
        check_name=NO_LEAKAGE,
        passed=not problems and bool(per_crypto),
        metadata={
            "cryptos_checked": MetadataValue.json(per_crypto),
            "problems": MetadataValue.json(problems[:50]),
        },
    )


def probabilities_valid_result(
    asset: str, cells: Mapping[str, CalibratedModel], *, empty_selection: bool = False
) -> AssetCheckResult:
    """Every test-block probability in [0, 1] and finite, every threshold in [0, 1].

    Nothing checked is not a pass, unless the run selected no partition at all
    (``empty_selection``: an empty key range, which the asset reports and does nothing for).
    """
    violations: list[str] = []
    for key, cal in cells.items():
        for m in CALIBRATION_METHODS:
            p = cal.test_eval[f"prob_{m}"]
            if not (np.all(np.isfinite(p)) and p.min() >= 0.0 and p.max() <= 1.0):
                violations.append(f"{key} {m}: [{np.nanmin(p)}, {np.nanmax(p)}]")
        if not 0.0 <= cal.threshold <= 1.0:
            violations.append(f"{key} threshold {cal.threshold}")
    return AssetCheckResult(
        asset_key=asset,
        check_name=PROBABILITIES_VALID,
        passed=not violations and (bool(cells) or empty_selection),
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "cells_checked": MetadataValue.json(sorted(cells)),
            "note": "the run selected no cell (an empty partition range)"
            if empty_selection
            else "",
            "violations": MetadataValue.json(violations[:50]),
        },
    )
