"""The per-partition artifact store: atomic writes, code-free formats, linked boosters."""

import numpy as np
import pandas as pd
import pytest

from cvn_assets.ablation.training import train_variant
from cvn_assets.ablation.variants import DEFAULT_VARIANTS
from resources.model_store import ArtifactStore, read_value, write_value


class _Boom:
    """A value whose serialisation fails half-way."""


def _model(seed: int = 0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(600, 4)), columns=list("abcd"))
    y = (X["a"] + rng.normal(size=600) > 0.8).astype(int).to_numpy()
    focal = next(v for v in DEFAULT_VARIANTS if v.loss_function == "focal")
    return train_variant(focal, X[:400], y[:400], X[400:], y[400:], num_boost_round=20).model, X


def test_failed_write_keeps_the_previous_value_and_leaves_no_debris(tmp_path):
    target = tmp_path / "asset" / "BTCUSDC"
    write_value(target, pd.DataFrame({"x": [1, 2]}))
    with pytest.raises(TypeError, match="cannot store a value of type _Boom"):
        write_value(target, _Boom())
    assert read_value(target)["x"].tolist() == [1, 2]
    assert sorted(p.name for p in target.parent.iterdir()) == ["BTCUSDC"]


def test_booster_round_trip_and_stored_link_are_bit_identical(tmp_path):
    model, X = _model()
    store = ArtifactStore(base_dir=str(tmp_path))
    store.write("model_x", "BTCUSDC|f0", "fp1", model)
    assert not store.has("model_x", "BTCUSDC|f0", "other-fingerprint")
    with pytest.raises(FileNotFoundError, match="nothing stored under fingerprint other"):
        store.read("model_x", "BTCUSDC|f0", "other")
    assert store.current_fingerprint("model_x", "BTCUSDC|f0") is None  # stored, not current
    again = store.read("model_x", "BTCUSDC|f0", "fp1")
    # a copy of the booster under another fingerprint links the stored files
    write_value(tmp_path / "model_x" / "BTCUSDC" / "f0" / "fp2", again)
    final = tmp_path / "model_x" / "BTCUSDC" / "f0" / "fp2" / "booster" / "booster.ubj"
    ckpt = store.path("model_x", "BTCUSDC|f0", "fp1") / "booster" / "booster.ubj"
    assert final.stat().st_ino == ckpt.stat().st_ino
    loaded = read_value(tmp_path / "model_x" / "BTCUSDC" / "f0" / "fp2")
    for other in (again, loaded):
        assert np.array_equal(other.predict_margin(X), model.predict_margin(X))
        assert other.raw_output_logits is True
    assert not list(tmp_path.rglob("*.pkl"))  # no pickle anywhere for models


def test_io_manager_slots_are_content_addressed(tmp_path):
    """Two fingerprints of one partition live side by side; CURRENT names the latest, and a
    crash between writing a value and moving CURRENT leaves the previous pointer intact."""
    from resources.model_store import Stamped, _read_slot, _write_slot

    slot = tmp_path / "features" / "BTCUSDC"
    _write_slot(slot, Stamped(pd.DataFrame({"x": [1]}), "aaaa"))
    _write_slot(slot, Stamped(pd.DataFrame({"x": [2]}), "bbbb"))
    assert (slot / "CURRENT").read_text() == "bbbb"
    assert _read_slot(slot)["x"].tolist() == [2]
    assert read_value(slot / "aaaa")["x"].tolist() == [1]  # the other sweep's value survives
    store = ArtifactStore(base_dir=str(tmp_path))
    assert store.current_fingerprint("features", "BTCUSDC") == "bbbb"
    assert store.read("features", "BTCUSDC", "aaaa")["x"].tolist() == [1]
    with pytest.raises(TypeError):
        _write_slot(slot, Stamped(_Boom(), "cccc"))
    assert (slot / "CURRENT").read_text() == "bbbb"
