"""Sweep identity: canonical fingerprints, what each artifact depends on, named diffs."""

import hashlib
import json

import pytest

from cvn_assets.ablation.identity import (
    SweepIdentity,
    canonical_json,
    describe_diff,
    digest,
    file_sha256,
    identity_diff,
    source_digests,
)

SETTINGS = {
    "label_strategy": "SL0.5_TP1_H4",
    "embargo_pct": 0.005,
    "early_stopping_frac": 0.15,
    "fee_per_side": 0.00075,
    "primary_calibration": "temperature",
    "eta": 0.05,
    "max_depth": 4,
    "seed": 0,
}
DEFINITION = {
    "universe": ["BTCUSDC", "ETHUSDC"],
    "n_folds": 5,
    "variants": [
        {"name": "baseline", "loss_function": "binary:logistic", "gamma": None, "alpha": None},
        {"name": "focal_x", "loss_function": "focal", "gamma": 2.0, "alpha": 0.25},
    ],
}
DATA = {"source": "synthetic", "symbols": ["BTCUSDC", "ETHUSDC"], "seed": 7, "hours": 4000}
CODE = {"cvn_focal": "0.1.0", "xgboost": "3.2.0", "source_cell": "aa", "source_sweep": "bb"}


def ident(**parts) -> SweepIdentity:
    base = {"settings": SETTINGS, "definition": DEFINITION, "data": DATA, "code": CODE}
    for k, v in parts.items():
        base[k] = {**base[k], **v}
    return SweepIdentity(**base)


def test_fingerprint_is_sha256_of_canonical_json():
    i = ident()
    doc = {"settings": SETTINGS, "definition": DEFINITION, "data": DATA, "code": CODE}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    assert canonical_json(doc) == text
    assert i.fingerprint == hashlib.sha256(text.encode()).hexdigest()[:16]
    # key order does not matter
    shuffled = SweepIdentity(dict(reversed(SETTINGS.items())), DEFINITION, DATA, CODE)
    assert shuffled.fingerprint == i.fingerprint
    assert SweepIdentity.from_dict(i.as_dict()).fingerprint == i.fingerprint


def test_an_xgboost_parameter_changes_models_but_not_the_market():
    a, b = ident(), ident(settings={"eta": 0.1})
    assert a.fingerprint != b.fingerprint
    assert a.market_fingerprint("BTCUSDC") == b.market_fingerprint("BTCUSDC")
    assert a.model_fingerprint("BTCUSDC", 0, "baseline") != b.model_fingerprint(
        "BTCUSDC", 0, "baseline"
    )


def test_calibration_settings_change_calibrated_cells_only():
    a, b = ident(), ident(settings={"fee_per_side": 0.001})
    assert a.model_fingerprint("BTCUSDC", 3, "focal_x") == b.model_fingerprint(
        "BTCUSDC", 3, "focal_x"
    )
    assert a.calibrated_fingerprint("BTCUSDC", 3, "focal_x") != b.calibrated_fingerprint(
        "BTCUSDC", 3, "focal_x"
    )


def test_label_strategy_changes_the_market_and_everything_after():
    a, b = ident(), ident(settings={"label_strategy": "SL1_TP2_H8"})
    assert a.market_fingerprint("ETHUSDC") != b.market_fingerprint("ETHUSDC")
    assert a.model_fingerprint("ETHUSDC", 0, "baseline") != b.model_fingerprint(
        "ETHUSDC", 0, "baseline"
    )


def test_changing_gamma_under_the_same_name_changes_that_variant_only():
    variants = [dict(v) for v in DEFINITION["variants"]]
    variants[1]["gamma"] = 5.0
    a, b = ident(), ident(definition={"variants": variants})
    assert a.model_fingerprint("BTCUSDC", 0, "focal_x") != b.model_fingerprint(
        "BTCUSDC", 0, "focal_x"
    )
    assert a.model_fingerprint("BTCUSDC", 0, "baseline") == b.model_fingerprint(
        "BTCUSDC", 0, "baseline"
    )
    assert identity_diff(a.as_dict(), b.as_dict()) == [
        ("definition.variants[focal_x].gamma", 2.0, 5.0)
    ]


def test_cells_differ_by_crypto_fold_and_variant():
    i = ident()
    fps = {
        i.model_fingerprint(c, f, v)
        for c in ("BTCUSDC", "ETHUSDC")
        for f in range(5)
        for v in ("baseline", "focal_x")
    }
    assert len(fps) == 20


def test_csv_data_is_identified_per_file_hash():
    files = {
        "BTCUSDC": {"name": "BTCUSDT_1h.csv", "sha256": "1" * 64},
        "ETHUSDC": {"name": "ETHUSDT_1h.csv", "sha256": "2" * 64},
    }
    a = SweepIdentity(SETTINGS, DEFINITION, {"source": "csv", "files": files}, CODE)
    files2 = {**files, "ETHUSDC": {"name": "ETHUSDT_1h.csv", "sha256": "3" * 64}}
    b = SweepIdentity(SETTINGS, DEFINITION, {"source": "csv", "files": files2}, CODE)
    assert a.market_fingerprint("BTCUSDC") == b.market_fingerprint("BTCUSDC")
    assert a.market_fingerprint("ETHUSDC") != b.market_fingerprint("ETHUSDC")
    with pytest.raises(ValueError, match="no CSV file recorded for crypto 'SOLUSDC'"):
        a.market_fingerprint("SOLUSDC")


def test_code_and_library_versions_change_cells():
    a, b = ident(), ident(code={"xgboost": "3.3.0"})
    assert a.model_fingerprint("BTCUSDC", 0, "baseline") != b.model_fingerprint(
        "BTCUSDC", 0, "baseline"
    )
    # gates/report code is sweep-level: it changes the identity, not the cells
    c = ident(code={"source_sweep": "cc"})
    assert c.fingerprint != a.fingerprint
    assert c.model_fingerprint("BTCUSDC", 0, "baseline") == a.model_fingerprint(
        "BTCUSDC", 0, "baseline"
    )


def test_diff_names_what_changed():
    a, b = ident(), ident(settings={"eta": 0.1, "max_depth": 6}, data={"hours": 3000})
    diff = identity_diff(a.as_dict(), b.as_dict())
    assert diff == [
        ("data.hours", 4000, 3000),
        ("settings.eta", 0.05, 0.1),
        ("settings.max_depth", 4, 6),
    ]
    assert describe_diff(diff) == (
        "data.hours: 4000 -> 3000; settings.eta: 0.05 -> 0.1; settings.max_depth: 4 -> 6"
    )
    assert identity_diff(a.as_dict(), a.as_dict()) == []


def test_file_sha256_matches_hashlib(tmp_path):
    p = tmp_path / "x.csv"
    p.write_bytes(b"a,b\n1,2\n" * 100_000)
    assert file_sha256(p) == hashlib.sha256(p.read_bytes()).hexdigest()
    assert file_sha256(p, chunk=7) == file_sha256(p)


def test_source_digest_covers_computing_modules():
    d = source_digests()
    assert len(d["cell"]) == 16 and len(d["sweep"]) == 16 and d["cell"] != d["sweep"]
    assert digest({"a": 1}) == digest({"a": 1}) != digest({"a": 2})


def test_cell_code_is_what_cell_computations_import():
    from cvn_assets.ablation.identity import CELL_ROOTS, module_closure

    cell = set(module_closure(CELL_ROOTS))
    # reached through imports: the objective, the fill rule, the calibrators
    assert {
        "ablation/training.py",
        "ablation/focal_loss.py",
        "ablation/numpy_codegen.py",
        "market/trading.py",
        "ablation/calibration.py",
    } <= cell
    # orchestration and the production guard do not retrain the sweep when they change
    assert not cell & {
        "sweep.py",
        "sweeps.py",
        "definitions.py",
        "ablation/identity.py",
        "ablation/report.py",
    }
    assert "guard/monitoring.py" not in cell and "guard/paper.py" not in cell
