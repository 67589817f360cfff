"""IO manager for the sweep: content-addressed directories per asset partition, written atomically.

Layout: ``<base>/<asset>/<crypto>[/<fold>]/<fingerprint>/`` holds one value, and
``<base>/<asset>/<crypto>[/<fold>]/CURRENT`` names the fingerprint of the partition's latest
materialization (what downstream steps load). The fingerprint is the one of
:mod:`cvn_assets.ablation.identity` (settings, data, code): an asset returns
``Stamped(value, fingerprint)`` per partition. Sweeps with different settings therefore never
share a slot, a sweep with the same settings finds its values again (resume for free), and a
reader that knows which fingerprint it needs (``finetune_results``) reads exactly that one,
whatever was materialized last.

Why not Dagster's ``FilesystemIOManager``: it refuses outputs that cover several partitions,
and the sweep runs each stage as one ranged run (``BackfillPolicy.single_run()``) to keep the
per-partition overhead near 0.03 s. This manager accepts a ``{partition_key: value}`` dict for
such runs and a bare value for a one-partition run, and loads the same way.

Formats (self-describing: each directory has a ``kind.json``):
- ``XGBWrapper``       booster in XGBoost's UBJSON format + JSON sidecar (never pickle);
- ``CalibratedModel``  the above + calibrators/threshold/metrics as JSON + test arrays as .npz;
- ``list[FoldPlan]``   integer position arrays in .npz (``allow_pickle=False``);
- ``pandas.DataFrame`` one array per column in ``frame.npz`` (``allow_pickle=False``) + a JSON
  sidecar with the column names, dtypes, index (name, dtype, time zone, freq) and ``attrs``
  (:func:`write_frame` / :func:`read_frame`; round-trips exactly, refuses dtypes it cannot
  store without code).

Nothing in the store is a code-execution path (several hosts write and read it): every format is
data only, and a value in any other format (a ``frame.pkl`` of an older version included) is
refused with an error naming it, never unpickled.

Every write goes to a temporary sibling directory that is renamed into place, so a crash
(kill -9) never leaves a half-written partition behind.
"""

import json
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from dagster import (
    ConfigurableIOManager,
    ConfigurableResource,
    InputContext,
    MultiPartitionKey,
    OutputContext,
)

from cvn_assets.ablation.calibrated_model import CalibratedModel, link_files
from cvn_assets.ablation.training import XGBWrapper
from cvn_assets.market.folds import FoldPlan
from resources.home_source import home_dir

KIND_FILE = "kind.json"
CURRENT_FILE = "CURRENT"
#: the fingerprint directory of a value written without one (e.g. by hand in a test)
UNSTAMPED = "_"


@dataclass(frozen=True)
class Stamped:
    """A partition's value and the fingerprint of everything it depends on."""

    value: Any
    fingerprint: str


@dataclass(frozen=True)
class Stored:
    """A partition's value is already stored under ``fingerprint`` (written by the step that
    computed it, possibly on another host): the IO manager only points ``CURRENT`` at it."""

    fingerprint: str


def default_store_dir() -> str:
    """``$CVN_STORE_DIR``, else ``$DAGSTER_HOME/storage/cvn`` (resolved at use)."""
    if os.environ.get("CVN_STORE_DIR"):
        return str(Path(os.environ["CVN_STORE_DIR"]).resolve())
    return str(home_dir() / "storage" / "cvn")


def read_current(slot: Path) -> str | None:
    """The fingerprint a partition slot points at, or None when never materialized."""
    try:
        return (slot / CURRENT_FILE).read_text().strip() or None
    except FileNotFoundError:
        return None


def write_current(slot: Path, fingerprint: str) -> None:
    """Point a slot at ``fingerprint`` atomically (write a sibling, then rename)."""
    slot.mkdir(parents=True, exist_ok=True)
    tmp = slot / f".{CURRENT_FILE}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.write_text(fingerprint)
    os.replace(tmp, slot / CURRENT_FILE)


def has_value(directory: Path) -> bool:
    return (directory / KIND_FILE).exists()


def partition_dirname(key: str) -> Path:
    """``'BTCUSDC|f3'`` -> ``BTCUSDC/f3``; a single-dimension key is its own directory."""
    parts = str(key).split("|")
    return Path(*parts)


def write_value(directory: Path, value: Any) -> str:
    """Write ``value`` into ``directory`` atomically; returns the kind written."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        kind = _dump(tmp, value)
        (tmp / KIND_FILE).write_text(json.dumps({"kind": kind}))
        old = None
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(directory, old)
        os.replace(tmp, directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return kind


def read_value(directory: Path, *, with_model: bool = True) -> Any:
    kind_path = directory / KIND_FILE
    if not kind_path.exists():
        raise FileNotFoundError(f"no stored value at {directory} (materialize the upstream first)")
    kind = json.loads(kind_path.read_text())["kind"]
    if kind == "xgb_wrapper":
        wrapper = XGBWrapper.load(directory / "booster")
        _remember_source(wrapper, directory / "booster")
        return wrapper
    if kind == "calibrated_model":
        return CalibratedModel.load(directory, with_model=with_model)
    if kind == "fold_plans":
        meta = json.loads((directory / "fold_plans.json").read_text())
        with np.load(directory / "fold_plans.npz", allow_pickle=False) as z:
            return [
                FoldPlan(
                    fold=int(f),
                    train=z[f"f{f}_train"],
                    early_stopping=z[f"f{f}_early_stopping"],
                    calibration=z[f"f{f}_calibration"],
                    test=z[f"f{f}_test"],
                )
                for f in meta["folds"]
            ]
    if kind == FRAME_KIND:
        return read_frame(directory)
    if kind == "dataframe":  # pandas pickle of an older version: never unpickled
        raise UnsafeFormatError(
            f"{directory}: a pickled DataFrame (frame.pkl) from an older version of the store; "
            "pickle can execute code, so it is not loaded. Re-materialize this partition (the "
            "one command does, as its fingerprint's value is not readable), or delete the "
            "directory."
        )
    if kind == "json":
        return json.loads((directory / "value.json").read_text())
    raise UnsafeFormatError(
        f"{kind_path}: unknown kind {kind!r}; the store loads only its own data-only formats"
    )


def _dump(directory: Path, value: Any) -> str:
    if isinstance(value, CalibratedModel):
        value.save(directory, model_files=_stored_source(value.model))
        return "calibrated_model"
    if isinstance(value, XGBWrapper):
        src = _stored_source(value)
        if src is not None:
            link_files(src, directory / "booster")
        else:
            value.save(directory / "booster")
        return "xgb_wrapper"
    if isinstance(value, list) and value and all(isinstance(v, FoldPlan) for v in value):
        arrays: dict[str, np.ndarray] = {}
        for plan in value:
            for part in ("train", "early_stopping", "calibration", "test"):
                arrays[f"f{plan.fold}_{part}"] = np.asarray(getattr(plan, part), dtype=np.int64)
        np.savez(directory / "fold_plans.npz", **arrays)
        (directory / "fold_plans.json").write_text(json.dumps({"folds": [p.fold for p in value]}))
        return "fold_plans"
    if isinstance(value, pd.DataFrame):
        write_frame(directory, value)
        return FRAME_KIND
    if isinstance(value, (dict, list)):
        (directory / "value.json").write_text(json.dumps(value, default=float))
        return "json"
    raise TypeError(f"CvnIOManager cannot store a value of type {type(value).__name__}")


class UnsafeFormatError(ValueError):
    """A stored value is not in one of the store's data-only formats; it is not loaded."""


#: ``kind`` of a DataFrame stored as column arrays + JSON sidecar
FRAME_KIND = "frame_npz"
FRAME_FORMAT = "cvn-frame/1"


def _encode_array(values: Any, where: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A column or index as plain arrays (no object dtype) + how to rebuild it exactly."""
    dtype = values.dtype
    name = str(dtype)
    if isinstance(dtype, pd.DatetimeTZDtype) or (
        isinstance(dtype, np.dtype) and dtype.kind in "mM"
    ):
        arr = pd.array(values)
        unit = arr.unit
        return {"": np.asarray(arr.asi8, dtype=np.int64)}, {
            "enc": "timedelta" if dtype.kind == "m" else "datetime",
            "dtype": name,
            "unit": unit,
        }
    if isinstance(dtype, np.dtype) and dtype.kind in "biuf":
        return {"": np.asarray(values, dtype=dtype)}, {"enc": "numpy", "dtype": name}
    if (
        isinstance(dtype, pd.api.extensions.ExtensionDtype)
        and getattr(dtype, "numpy_dtype", np.dtype(object)).kind in "biuf"
    ):  # nullable Int64 / Float64 / boolean: values + mask
        arr = pd.array(values, dtype=dtype)
        mask = np.asarray(arr.isna(), dtype=bool)
        data = arr.to_numpy(dtype=dtype.numpy_dtype, na_value=dtype.numpy_dtype.type(0))
        return {"": data, "_mask": mask}, {"enc": "masked", "dtype": name}
    if isinstance(dtype, pd.StringDtype) or (
        isinstance(dtype, np.dtype)
        and dtype.kind == "O"
        and all(
            isinstance(v, str) or v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v))
            for v in values
        )
    ):
        obj = np.asarray(values, dtype=object)
        mask = np.asarray(pd.isna(obj), dtype=bool)
        text = np.array(["" if m else str(v) for v, m in zip(obj, mask, strict=True)], dtype=str)
        if text.dtype.kind != "U":  # an empty column
            text = text.astype("U1")
        return {"": text, "_mask": mask}, {"enc": "string", "dtype": name}
    raise TypeError(
        f"{where}: dtype {name} cannot be stored in the data-only frame format "
        "(numbers and booleans, nullable or not, datetimes with or without time zone, "
        "timedeltas and strings can)"
    )


def _decode_array(arrays: Mapping[str, np.ndarray], prefix: str, spec: Mapping[str, Any]) -> Any:
    raw = arrays[prefix]
    enc = spec["enc"]
    if enc == "numpy":
        return raw.astype(np.dtype(spec["dtype"]), copy=False)
    if enc == "masked":
        dtype = pd.api.types.pandas_dtype(spec["dtype"])
        return dtype.construct_array_type()(raw, arrays[f"{prefix}_mask"])
    if enc == "datetime":
        naive = raw.view(f"M8[{spec['unit']}]")
        dtype = pd.api.types.pandas_dtype(spec["dtype"])
        if isinstance(dtype, pd.DatetimeTZDtype):
            return pd.DatetimeIndex(naive).tz_localize("UTC").tz_convert(dtype.tz).array
        return pd.array(naive, dtype=dtype)
    if enc == "timedelta":
        return pd.array(
            raw.view(f"m8[{spec['unit']}]"), dtype=pd.api.types.pandas_dtype(spec["dtype"])
        )
    if enc == "string":
        mask = arrays[f"{prefix}_mask"]
        obj = raw.astype(object)
        dtype = pd.api.types.pandas_dtype(spec["dtype"])
        obj[mask] = None if dtype == np.dtype(object) else pd.NA
        if dtype == np.dtype(object):
            return obj
        return pd.array(obj, dtype=dtype)
    raise UnsafeFormatError(f"unknown column encoding {enc!r}")


def _json_label(label: Any, where: str) -> Any:
    if isinstance(label, (str, int, float, bool)) or label is None:
        return label
    if isinstance(label, np.generic):
        return label.item()
    raise TypeError(f"{where}: label {label!r} cannot be stored in the data-only frame format")


def write_frame(directory: Path, frame: pd.DataFrame) -> None:
    """``frame.npz`` (one array per column, ``allow_pickle=False``) + ``frame.json``."""
    if isinstance(frame.columns, pd.MultiIndex) or isinstance(frame.index, pd.MultiIndex):
        raise TypeError("a DataFrame with a MultiIndex cannot be stored in the data-only format")
    arrays: dict[str, np.ndarray] = {}
    columns = []
    blocks: dict[str, list[np.ndarray]] = {}
    for i, col in enumerate(frame.columns):
        parts, spec = _encode_array(frame.iloc[:, i], f"column {col!r}")
        if spec["enc"] == "numpy":  # plain columns of one dtype: one 2-D block (fast to load)
            rows = blocks.setdefault(spec["dtype"], [])
            spec = {**spec, "enc": "block", "row": len(rows)}
            rows.append(parts[""])
        else:
            arrays.update({f"c{i}{k}": v for k, v in parts.items()})
        columns.append(spec)
    for dtype, rows in blocks.items():
        arrays[f"block_{dtype}"] = np.stack(rows) if rows[0].size else np.empty((len(rows), 0))
    index = frame.index
    if isinstance(index, pd.RangeIndex):
        index_spec: dict[str, Any] = {
            "enc": "range",
            "start": index.start,
            "stop": index.stop,
            "step": index.step,
        }
    else:
        parts, index_spec = _encode_array(index, "index")
        arrays.update({f"index{k}": v for k, v in parts.items()})
        freq = getattr(index, "freqstr", None)
        if freq:
            index_spec["freq"] = freq
    index_spec["name"] = _json_label(index.name, "index name")
    meta = {
        "format": FRAME_FORMAT,
        "labels": [_json_label(c, "column") for c in frame.columns],
        "labels_dtype": str(frame.columns.dtype),
        "labels_name": _json_label(frame.columns.name, "columns name"),
        "columns": columns,
        "index": index_spec,
        "attrs": frame.attrs,
    }
    try:
        text = json.dumps(meta, allow_nan=True)
    except TypeError as exc:
        raise TypeError(f"DataFrame attrs cannot be stored as JSON: {exc}") from exc
    with open(directory / "frame.npz", "wb") as fh:
        np.savez(fh, **arrays)
    (directory / "frame.json").write_text(text)


def _with_freq(index: pd.DatetimeIndex, freq: str) -> pd.DatetimeIndex:
    """``index`` with its stored ``freq``; a regular index is rebuilt by ``date_range`` (which
    needs no validation pass over the values), checked equal to the stored values."""
    if len(index):
        regular = pd.date_range(
            index[0], periods=len(index), freq=freq, unit=index.unit, name=index.name
        )
        if regular.asi8[-1] == index.asi8[-1] and np.array_equal(regular.asi8, index.asi8):
            return regular
    return pd.DatetimeIndex(index, freq=freq)


def read_frame(directory: Path) -> pd.DataFrame:
    """The DataFrame :func:`write_frame` stored, exactly (dtypes, index, time zone, freq,
    attrs); refuses anything but this format."""
    meta = json.loads((directory / "frame.json").read_text())
    if meta.get("format") != FRAME_FORMAT:
        raise UnsafeFormatError(f"{directory}: frame format {meta.get('format')!r} is unknown")
    with np.load(directory / "frame.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    spec = meta["index"]
    if spec["enc"] == "range":
        index = pd.RangeIndex(spec["start"], spec["stop"], spec["step"], name=spec["name"])
    else:
        index = pd.Index(_decode_array(arrays, "index", spec), name=spec["name"])
        if spec.get("freq"):
            index = _with_freq(index, spec["freq"])
    data = {
        i: (
            arrays[f"block_{s['dtype']}"][s["row"]].astype(np.dtype(s["dtype"]), copy=False)
            if s["enc"] == "block"
            else _decode_array(arrays, f"c{i}", s)
        )
        for i, s in enumerate(meta["columns"])
    }
    frame = pd.DataFrame(data, index=index, copy=False)
    frame.columns = pd.Index(
        meta["labels"],
        dtype=pd.api.types.pandas_dtype(meta["labels_dtype"]),
        name=meta["labels_name"],
    )
    frame.attrs = meta["attrs"]
    return frame


_SOURCE_ATTR = "_cvn_stored_at"


def _remember_source(wrapper: XGBWrapper, booster_dir: Path) -> None:
    """Note where this (unmodified) booster's files already are, to link instead of re-save."""
    setattr(wrapper, _SOURCE_ATTR, booster_dir)


def _stored_source(wrapper: Any) -> Path | None:
    src = getattr(wrapper, _SOURCE_ATTR, None)
    return src if src is not None and Path(src).is_dir() else None


class CvnIOManager(ConfigurableIOManager):
    """Content-addressed per-partition directories under ``base_dir``.

    ``base_dir`` unset: ``$CVN_STORE_DIR``, else ``$DAGSTER_HOME/storage/cvn``, resolved at use
    (a run config for this resource that sets no ``base_dir`` keeps the environment's).
    """

    base_dir: str = ""

    def _root(self) -> Path:
        return Path(self.base_dir or default_store_dir())

    def _asset_dir(self, asset_key_path: list[str]) -> Path:
        return self._root().joinpath(*asset_key_path)

    def _op_output_dir(self, identifier: Sequence[str]) -> Path:
        """Where an op output that is not an asset (the Celery fan-out's plans and cell
        summaries) lives: keyed by ``get_identifier()`` (run, step, output and mapping key),
        so each mapped step reads its own value on any host."""
        return self._root().joinpath("_op_outputs", *(str(p) for p in identifier))

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        if not context.has_asset_key:
            write_value(self._op_output_dir(context.get_identifier()), obj)
            return
        if obj is None:
            return
        base = self._asset_dir(list(context.asset_key.path))
        if not context.has_asset_partitions:
            write_value(base / "_unpartitioned", obj)
            return
        keys = [str(k) for k in context.asset_partition_keys]
        if not keys:  # an empty partition range: nothing to store (the asset said so)
            return
        if len(keys) == 1 and not _is_partition_dict(obj, keys):
            _write_slot(base / partition_dirname(keys[0]), obj)
            return
        if not _is_partition_dict(obj, keys):
            raise TypeError(
                f"{context.asset_key.to_user_string()}: a run over {len(keys)} partitions must "
                f"return a dict keyed by partition key, got {type(obj).__name__}"
            )
        missing = sorted(set(keys) - {str(k) for k in obj})
        if missing:
            raise ValueError(
                f"{context.asset_key.to_user_string()}: no value for partition(s) {missing}"
            )
        for key, value in obj.items():
            _write_slot(base / partition_dirname(str(key)), value)

    def load_input(self, context: InputContext) -> Any:
        if not context.has_asset_key:
            upstream = context.upstream_output
            assert upstream is not None
            return read_value(self._op_output_dir(upstream.get_identifier()))
        base = self._asset_dir(list(context.asset_key.path))
        if not context.has_asset_partitions:
            return read_value(base / "_unpartitioned")
        keys = [str(k) for k in context.asset_partition_keys]
        if len(keys) == 1:
            return _read_slot(base / partition_dirname(keys[0]))
        return {k: _read_slot(base / partition_dirname(k)) for k in keys}


def _write_slot(slot: Path, obj: Any) -> None:
    """Write a partition's value under its fingerprint (unless already there), then point
    ``CURRENT`` at it: a crash between the two leaves the previous pointer intact."""
    if isinstance(obj, Stored):
        if not has_value(slot / obj.fingerprint):
            raise FileNotFoundError(
                f"{slot}: nothing stored under fingerprint {obj.fingerprint} (on a shared "
                "CVN_STORE_DIR, every host must see the same directory)"
            )
        write_current(slot, obj.fingerprint)
        return
    value, fp = (obj.value, obj.fingerprint) if isinstance(obj, Stamped) else (obj, UNSTAMPED)
    target = slot / fp
    if _stored_dir(value) != target.resolve() or not has_value(target):
        write_value(target, value)
    write_current(slot, fp)


def _read_slot(slot: Path) -> Any:
    fp = read_current(slot)
    if fp is None:
        raise FileNotFoundError(f"no stored value at {slot} (materialize the upstream first)")
    return read_value(slot / fp)


_STORED_DIR_ATTR = "_cvn_stored_dir"


def _mark_stored(value: Any, directory: Path) -> None:
    """Remember that ``value`` is stored, unchanged, at ``directory`` (models only)."""
    if isinstance(value, XGBWrapper):
        _remember_source(value, directory / "booster")
    if isinstance(value, (XGBWrapper, CalibratedModel)):
        setattr(value, _STORED_DIR_ATTR, directory.resolve())


def _stored_dir(value: Any) -> Path | None:
    return getattr(value, _STORED_DIR_ATTR, None) if not isinstance(value, pd.DataFrame) else None


def _is_partition_dict(obj: Any, keys: list[str]) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and {str(k) for k in obj} <= set(keys)


class ArtifactStore(ConfigurableResource):
    """Read/write access to the same content-addressed directories outside the IO manager.

    The training assets store each finished cell at once under its fingerprint (a crash
    checkpoint that is also the final value: a re-run with the same settings finds it);
    ``finetune_results`` reads exactly the calibrated cells of its sweep's fingerprints, one at
    a time and without their boosters (the fan-in never holds 125 models in memory).
    ``base_dir`` resolves like :class:`CvnIOManager`'s.
    """

    base_dir: str = ""

    def root(self) -> Path:
        return Path(self.base_dir or default_store_dir())

    def slot(self, asset_name: str, partition_key: str | MultiPartitionKey) -> Path:
        return self.root() / asset_name / partition_dirname(str(partition_key))

    def path(
        self, asset_name: str, partition_key: str | MultiPartitionKey, fingerprint: str
    ) -> Path:
        return self.slot(asset_name, partition_key) / fingerprint

    def current_fingerprint(
        self, asset_name: str, partition_key: str | MultiPartitionKey
    ) -> str | None:
        """Fingerprint of the partition's latest materialization (None if never)."""
        return read_current(self.slot(asset_name, partition_key))

    def has(
        self, asset_name: str, partition_key: str | MultiPartitionKey, fingerprint: str
    ) -> bool:
        return has_value(self.path(asset_name, partition_key, fingerprint))

    def read(
        self,
        asset_name: str,
        partition_key: str | MultiPartitionKey,
        fingerprint: str | None = None,
        *,
        with_model: bool = True,
    ) -> Any:
        """The value stored under ``fingerprint`` (default: the slot's ``CURRENT``).

        Raises ``FileNotFoundError`` naming the asset, partition and fingerprint.
        """
        fp = fingerprint or self.current_fingerprint(asset_name, partition_key)
        directory = self.slot(asset_name, partition_key) / (fp or "?")
        if fp is None or not has_value(directory):
            raise FileNotFoundError(
                f"{asset_name} {partition_key}: nothing stored under fingerprint {fp}"
            )
        value = read_value(directory, with_model=with_model)
        _mark_stored(value, directory)
        return value

    def write(
        self,
        asset_name: str,
        partition_key: str | MultiPartitionKey,
        fingerprint: str,
        value: Any,
    ) -> None:
        """Store ``value`` under its fingerprint without moving ``CURRENT``."""
        directory = self.path(asset_name, partition_key, fingerprint)
        write_value(directory, value)
        _mark_stored(value, directory)
