"""Join features and labels into the modelling table (pure: no Dagster).

One row per labelled candle with a full feature window: features of candle ``i`` (known at its
close) next to the label of a long entered at that close. Rows are kept in time order because
:mod:`cvn_assets.market.folds` cuts contiguous blocks and purges by ``t1`` (AFML ch. 7.4).
"""

from collections.abc import Sequence

import numpy as np
import pandas as pd

from cvn_assets.market.features import FEATURE_NAMES

TARGET_COLUMNS: tuple[str, ...] = ("label", "t1", "ret")


class DatasetError(ValueError):
    """The features or labels cannot make a sound modelling table; the message names the column."""


def assemble_dataset(
    features: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    feature_names: Sequence[str] = FEATURE_NAMES,
) -> pd.DataFrame:
    """Inner-join ``features`` and ``labels`` on the open time; drop the warm-up; check columns.

    * Rows present on one side only are dropped by the inner join: the last ``horizon`` candles
      (no label) -- counted in ``attrs["n_unlabeled_dropped"]`` -- and labels without features.
    * Warm-up rows -- the leading rows where any feature is NaN -- are dropped and counted in
      ``attrs["n_warmup_dropped"]``. A NaN *after* the warm-up is not silently dropped: it means a
      broken feature and raises :class:`DatasetError` naming the column and the open time.
    * A feature column that is all NaN, or constant over the kept rows, carries no information
      and usually betrays a bug upstream (a zero-volume feed, a wrong window): refused with the
      column named.

    Returns the columns ``feature_names + ("label", "t1", "ret")``, in time order, with
    ``attrs`` carrying the counts and the BUY rate.
    """
    names = list(feature_names)
    if not names:
        raise DatasetError("feature_names is empty")
    if features.empty:
        raise DatasetError("features frame is empty (no rows)")
    if labels.empty:
        raise DatasetError("labels frame is empty (no rows)")
    missing_f = [c for c in names if c not in features.columns]
    if missing_f:
        raise DatasetError(f"features frame lacks column(s) {missing_f}")
    missing_l = [c for c in TARGET_COLUMNS if c not in labels.columns]
    if missing_l:
        raise DatasetError(f"labels frame lacks column(s) {missing_l}")
    for side, frame in (("features", features), ("labels", labels)):
        if not frame.index.is_monotonic_increasing or not frame.index.is_unique:
            raise DatasetError(f"{side} index must be unique and increasing (time order)")

    feats = features[names]
    for col in names:
        if feats[col].isna().all():
            raise DatasetError(f"feature column {col!r} is all NaN")

    joined = feats.join(labels[list(TARGET_COLUMNS)], how="inner")
    if joined.empty:
        raise DatasetError("features and labels share no open_time (inner join is empty)")
    n_unlabeled = int((~features.index.isin(labels.index)).sum())

    any_nan = joined[names].isna().any(axis=1).to_numpy()
    valid = np.flatnonzero(~any_nan)
    if len(valid) == 0:
        raise DatasetError("every joined row has a NaN feature (nothing left after the warm-up)")
    n_warmup = int(valid[0])
    body = joined.iloc[n_warmup:]
    late_nan = body[names].isna()
    if late_nan.to_numpy().any():
        col = str(late_nan.any(axis=0).idxmax())
        when = late_nan.index[late_nan[col].to_numpy()][0]
        raise DatasetError(
            f"feature column {col!r} is NaN at open_time {when} after the warm-up "
            f"({int(late_nan[col].sum())} rows): fix the feature rather than dropping rows"
        )
    for col in names:
        values = body[col].to_numpy()
        if np.all(values == values[0]):
            raise DatasetError(
                f"feature column {col!r} is constant (value {float(values[0])!r}) over all "
                f"{len(values)} rows after the warm-up"
            )
    if body["label"].isna().any():
        raise DatasetError("label column has NaN values")

    out = body.copy()
    out.attrs = {
        "n_rows": len(out),
        "n_warmup_dropped": n_warmup,
        "n_unlabeled_dropped": n_unlabeled,
        "buy_rate": float(out["label"].mean()),
    }
    return out


def label_times(dataset: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Label start/end times of each row as ``datetime64[ns]`` (UTC, tz-naive) arrays.

    A tz-aware index converts to an *object* array of Timestamps, on which the fold and
    leakage code's comparisons run ~100x slower; naive UTC datetime64 orders identically.
    """
    t0 = dataset.index.to_numpy(dtype="datetime64[ns]")
    t1 = dataset["t1"].to_numpy(dtype="datetime64[ns]")
    return t0, t1
