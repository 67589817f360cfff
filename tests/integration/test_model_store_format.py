"""The store is data only: DataFrames round-trip exactly without pickle, anything else is refused.

Several hosts write and read ``CVN_STORE_DIR`` when the sweep runs on Celery workers, so a
stored value must never be a code-execution path.
"""

import json
import os
import pickle

import numpy as np
import pandas as pd
import pytest

from resources.model_store import (
    ArtifactStore,
    UnsafeFormatError,
    read_frame,
    read_value,
    write_frame,
    write_value,
)


def _frame() -> pd.DataFrame:
    idx = pd.date_range("2023-03-25 22:00", periods=6, freq="h", tz="Europe/Paris", name="t")
    frame = pd.DataFrame(
        {
            "f64": [0.1, np.nan, -0.0, 1e-300, np.inf, 3.0],
            "i8": np.array([1, -2, 3, 0, 127, -128], dtype=np.int8),
            "u32": np.arange(6, dtype=np.uint32),
            "i64": np.array([2**62, -(2**62), 0, 1, 2, 3], dtype=np.int64),
            "flag": [True, False, True, True, False, False],
            "t1": pd.to_datetime(
                ["2023-01-01", None, "2023-01-03", "2023-01-04", "2023-01-05", "2023-01-06"]
            ).tz_localize("UTC"),
            "naive": pd.to_datetime(["2020-02-29 12:34:56.789"] * 6),
            "dt": pd.to_timedelta([1, 2, None, 4, 5, 6], unit="s"),
            "barrier": pd.array(["tp", "sl", None, "time", "é", ""], dtype="str"),
            "obj": np.array(["a", None, "b", "c", "d", "e"], dtype=object),
            "n": pd.array([1, None, 3, 4, 5, 6], dtype="Int64"),
            "x": pd.array([0.5, None, 1.5, 2.0, 3.0, 4.0], dtype="Float64"),
            "ok": pd.array([True, None, False, True, True, False], dtype="boolean"),
        },
        index=idx,
    )
    frame.attrs = {"warmup_bars": 167, "buy_rate": 0.16989319092122832, "nested": {"a": [1]}}
    return frame


def _assert_identical(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a, b, check_exact=True, check_freq=True)
    assert list(map(str, a.dtypes)) == list(map(str, b.dtypes))
    assert str(a.index.dtype) == str(b.index.dtype) and a.index.name == b.index.name
    assert getattr(a.index, "freq", None) == getattr(b.index, "freq", None)
    assert str(a.columns.dtype) == str(b.columns.dtype)
    assert a.attrs == b.attrs


def test_frames_round_trip_exactly_without_pickle(tmp_path):
    frame = _frame()
    write_value(tmp_path / "v", frame)
    back = read_value(tmp_path / "v")
    _assert_identical(frame, back)
    assert str(back.index.tz) == "Europe/Paris" and str(back["t1"].dtype) == str(frame["t1"].dtype)
    assert back["barrier"].isna().tolist() == [False, False, True, False, False, False]
    assert back["obj"].isna().tolist() == [False, True, False, False, False, False]
    assert back["obj"].dropna().tolist() == ["a", "b", "c", "d", "e"]
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == [
        "frame.json",
        "frame.npz",
        "kind.json",
    ]
    with np.load(tmp_path / "v" / "frame.npz", allow_pickle=False) as z:  # no object arrays
        assert all(z[k].dtype != object for k in z.files)


@pytest.mark.parametrize(
    "frame",
    [
        pd.DataFrame({"x": [1, 2, 3]}),  # RangeIndex, int columns
        pd.DataFrame({0: [1.5], 1: [2.5]}, index=pd.Index(["a"], name="k")),  # int labels
        pd.DataFrame(columns=["a", "b"]).astype({"a": "float64", "b": "str"}),  # empty
        pd.DataFrame({"x": [1.0]}, index=pd.DatetimeIndex(["2024-01-01"], name="day")),
    ],
)
def test_other_shapes_round_trip(tmp_path, frame):
    write_frame(tmp_path, frame)
    _assert_identical(frame, read_frame(tmp_path))


def test_the_market_frames_of_the_sweep_round_trip(tmp_path):
    """The frames the market stage stores (candles .. model_dataset) are stored exactly."""
    from cvn_assets.market.dataset import assemble_dataset
    from cvn_assets.market.features import build_features
    from cvn_assets.market.labels import labels_for_strategy
    from cvn_assets.market.synthetic_market import synthetic_candles

    candles = synthetic_candles(["BTCUSDC"], hours=1200)["BTCUSDC"]
    features = build_features(candles)
    labels = labels_for_strategy(candles, "SL0.5_TP1_H4")
    dataset = assemble_dataset(features, labels)
    for i, frame in enumerate((candles, features, labels, dataset)):
        write_value(tmp_path / str(i), frame)
        _assert_identical(frame, read_value(tmp_path / str(i)))


class _Payload:
    """Unpickling this object would create a file: proof that a pickle was executed."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickled_frame_is_refused_and_never_unpickled(tmp_path):
    slot = tmp_path / "features" / "BTCUSDC" / "abcd"
    slot.mkdir(parents=True)
    witness = tmp_path / "executed"
    (slot / "frame.pkl").write_bytes(pickle.dumps(_Payload(str(witness))))
    (slot / "kind.json").write_text(json.dumps({"kind": "dataframe"}))
    (slot.parent / "CURRENT").write_text("abcd")
    with pytest.raises(UnsafeFormatError, match=r"pickled DataFrame \(frame.pkl\).*not loaded"):
        read_value(slot)
    with pytest.raises(UnsafeFormatError, match="pickle can execute code"):
        ArtifactStore(base_dir=str(tmp_path)).read("features", "BTCUSDC")
    assert not witness.exists()


def test_unknown_kinds_formats_and_object_arrays_are_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "kind.json").write_text(json.dumps({"kind": "pickle"}))
    with pytest.raises(UnsafeFormatError, match="unknown kind 'pickle'"):
        read_value(tmp_path / "a")

    write_value(tmp_path / "b", pd.DataFrame({"x": [1.0]}))
    meta = json.loads((tmp_path / "b" / "frame.json").read_text())
    (tmp_path / "b" / "frame.json").write_text(json.dumps({**meta, "format": "pickle"}))
    with pytest.raises(UnsafeFormatError, match="frame format 'pickle' is unknown"):
        read_value(tmp_path / "b")

    # an .npz smuggling an object (pickled) array is refused by numpy, never unpickled
    write_value(tmp_path / "c", pd.DataFrame({"x": [1.0]}))
    witness = tmp_path / "executed"
    with open(tmp_path / "c" / "frame.npz", "wb") as fh:
        np.savez(fh, c0=np.array([_Payload(str(witness))], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle=False"):
        read_value(tmp_path / "c")
    assert not witness.exists()


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        (pd.DataFrame({"c": pd.Categorical(["a", "b"])}), "dtype category cannot be stored"),
        (pd.DataFrame({"o": [object(), 1]}), "dtype object cannot be stored"),
        (pd.DataFrame({"x": [1]}).set_axis(pd.MultiIndex.from_tuples([(1, 2)])), "MultiIndex"),
    ],
)
def test_frames_that_need_code_are_refused_at_write(tmp_path, frame, match):
    with pytest.raises(TypeError, match=match):
        write_value(tmp_path / "v", frame)
    assert not (tmp_path / "v").exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".v.tmp")]
