"""Asset checks users want to see green: no leakage, probabilities valid."""

import numpy as np
from dagster import AssetCheckResult, AssetCheckSeverity, AssetKey, MetadataValue, asset_check

from cvn_assets.ablation import Variant
from cvn_assets.assets.market import fold_splits
from cvn_assets.assets.training import calibrated_asset_name
from cvn_assets.calibration import CALIBRATION_METHODS
from cvn_assets.folds import leakage_check
from cvn_assets.partitions import SETTINGS, cell_key
from resources.model_store import ArtifactStore


@asset_check(
    asset=fold_splits,
    description="No train / early-stopping row's label interval overlaps a calibration or test "
    "row's, and calibration does not overlap test (AFML 7.4), for every stored crypto.",
)
def fold_splits_no_leakage(artifacts: ArtifactStore) -> AssetCheckResult:
    per_crypto: dict[str, dict[str, int]] = {}
    problems: list[str] = []
    for crypto in SETTINGS.universe:
        try:
            ds = artifacts.read("model_dataset", crypto)
            plans = artifacts.read("fold_splits", crypto)
        except FileNotFoundError:
            continue
        t0, t1 = ds.index.to_numpy(), ds["t1"].to_numpy()
        overlaps = 0
        for p in plans:
            pairs = {
                "train~calibration+test": (p.train, np.concatenate([p.calibration, p.test])),
                "early_stopping~calibration+test": (
                    p.early_stopping,
                    np.concatenate([p.calibration, p.test]),
                ),
                "calibration~test": (p.calibration, p.test),
                "train~early_stopping(rows)": (p.train, p.early_stopping),
            }
            for name, (a, b) in pairs.items():
                if name.endswith("(rows)"):
                    shared = np.intersect1d(a, b).size
                    if shared:
                        problems.append(f"{crypto} f{p.fold} {name}: {shared} shared rows")
                    continue
                rep = leakage_check(t0, t1, a, b)
                if not rep.ok:
                    overlaps += rep.n_overlaps
                    problems.append(f"{crypto} f{p.fold} {name}: {rep.n_overlaps} overlaps")
        per_crypto[crypto] = {"folds": len(plans), "overlaps": overlaps}
    return AssetCheckResult(
        passed=not problems and bool(per_crypto),
        metadata={
            "cryptos_checked": MetadataValue.json(per_crypto),
            "problems": MetadataValue.json(problems[:50]),
        },
    )


def build_probability_check(variant: Variant):
    name = calibrated_asset_name(variant)

    @asset_check(
        asset=AssetKey(name),
        name=f"{name}_probabilities_valid",
        description="Calibrated test-block probabilities are finite and in [0, 1] for every "
        "calibration method, and the threshold is a probability.",
    )
    def _check(artifacts: ArtifactStore) -> AssetCheckResult:
        cells = bad = 0
        worst: list[str] = []
        for crypto in SETTINGS.universe:
            for fold in range(SETTINGS.n_folds):
                key = cell_key(crypto, fold)
                try:
                    cal = artifacts.read(name, key, with_model=False)
                except FileNotFoundError:
                    continue
                cells += 1
                for m in CALIBRATION_METHODS:
                    p = cal.test_eval[f"prob_{m}"]
                    if not (np.all(np.isfinite(p)) and p.min() >= 0.0 and p.max() <= 1.0):
                        bad += 1
                        worst.append(f"{key} {m}: [{np.nanmin(p)}, {np.nanmax(p)}]")
                if not 0.0 <= cal.threshold <= 1.0:
                    bad += 1
                    worst.append(f"{key} threshold {cal.threshold}")
        return AssetCheckResult(
            passed=cells > 0 and bad == 0,
            severity=AssetCheckSeverity.ERROR,
            metadata={"cells_checked": cells, "violations": MetadataValue.json(worst[:50])},
        )

    return _check
