"""The per-partition artifact store: atomic writes, code-free formats, linked boosters."""

import numpy as np
import pandas as pd
import pytest

from cvn_assets.ablation import DEFAULT_VARIANTS
from cvn_assets.training import train_variant
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


def test_booster_round_trip_and_checkpoint_link_are_bit_identical(tmp_path):
    model, X = _model()
    store = ArtifactStore(base_dir=str(tmp_path))
    store.write_checkpoint("model_x", "BTCUSDC|f0", "fp1", model)
    assert store.read_checkpoint("model_x", "BTCUSDC|f0", "other-fingerprint") is None
    again = store.read_checkpoint("model_x", "BTCUSDC|f0", "fp1")
    # the final write links the checkpoint's files instead of serialising the booster again
    write_value(tmp_path / "model_x" / "BTCUSDC" / "f0", model)
    final = tmp_path / "model_x" / "BTCUSDC" / "f0" / "booster" / "booster.ubj"
    ckpt = store.checkpoint_path("model_x", "BTCUSDC|f0") / "value" / "booster" / "booster.ubj"
    assert final.stat().st_ino == ckpt.stat().st_ino
    loaded = read_value(tmp_path / "model_x" / "BTCUSDC" / "f0")
    for other in (again, loaded):
        assert np.array_equal(other.predict_margin(X), model.predict_margin(X))
        assert other.raw_output_logits is True
    assert not list(tmp_path.rglob("*.pkl"))  # no pickle anywhere for models
