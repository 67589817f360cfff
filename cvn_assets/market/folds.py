"""Purged and embargoed K-fold cross-validation (pure: no Dagster).

Lopez de Prado, *Advances in Financial Machine Learning* (AFML), ch. 7.4: with labels that span
time (here the triple barrier of :mod:`cvn_assets.market.labels`, from ``t0`` = open time of the
entry candle to ``t1`` = its vertical barrier), a plain K-fold leaks: a training label whose
interval overlaps an evaluation label shares its future. Purging drops those training rows; the
embargo drops a few more rows right after each evaluation block, against serial correlation of the
features (AFML ch. 7.4.2).

Contract of :func:`purged_kfold_splits` (the reference all callers and tests use):

* rows are in time order (``t0`` non-decreasing; ``t1 >= t0`` row by row), of any ordered type
  (datetimes, numbers);
* folds are contiguous blocks of ``numpy.array_split(arange(n), n_splits)`` -- no shuffling,
  deterministic;
* the test window of a block is ``[t0 of its first row, the MAX t1 over all its rows]`` (with
  variable-length labels the last row's ``t1`` is not the max);
* purge: every other row whose closed interval ``[t0, t1]`` overlaps the window is dropped, on
  both sides of the block. (The mlfinlab port starts the window at the first test row's *end*
  time, which leaves in training pre-test labels that overlap the block: avoided here.)
* embargo: ``int(n * embargo_pct)`` rows dropped *after* the block, counted from the first row
  after it that survived the purge; none before a block; none after the last block.

:func:`three_way_fold_plan` adds the calibration block the spec (7.2) requires for the calibrator
and the BUY threshold, and an early-stopping slice of train; :func:`leakage_check` verifies any
pair of row sets independently of how they were built.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd


class FoldError(ValueError):
    """A split cannot be made soundly (too few rows, an empty set, a fold without BUY labels)."""


@dataclass(frozen=True, eq=False)
class FoldPlan:
    """Row positions of one fold of the three-way plan (see :func:`three_way_fold_plan`).

    ``train`` fits the booster, ``early_stopping`` drives its early stopping, ``calibration``
    fits the calibrator and the BUY threshold, ``test`` gives the OOS metrics. The four sets are
    disjoint and sorted; ``test_block``/``calibration_block`` are block numbers.
    """

    fold: int
    train: np.ndarray
    early_stopping: np.ndarray
    calibration: np.ndarray
    test: np.ndarray
    test_block: int = -1
    calibration_block: int = -1
    info: dict[str, int] = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        """Row counts of the four sets."""
        return {
            "train": len(self.train),
            "early_stopping": len(self.early_stopping),
            "calibration": len(self.calibration),
            "test": len(self.test),
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form (positions as lists of int)."""
        return {
            "fold": self.fold,
            "train": self.train.tolist(),
            "early_stopping": self.early_stopping.tolist(),
            "calibration": self.calibration.tolist(),
            "test": self.test.tolist(),
            "test_block": self.test_block,
            "calibration_block": self.calibration_block,
            "info": dict(self.info),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FoldPlan":
        """Inverse of :meth:`to_dict`."""
        return cls(
            fold=int(d["fold"]),
            train=np.asarray(d["train"], dtype=np.int64),
            early_stopping=np.asarray(d["early_stopping"], dtype=np.int64),
            calibration=np.asarray(d["calibration"], dtype=np.int64),
            test=np.asarray(d["test"], dtype=np.int64),
            test_block=int(d.get("test_block", -1)),
            calibration_block=int(d.get("calibration_block", -1)),
            info={str(k): int(v) for k, v in d.get("info", {}).items()},
        )


@dataclass(frozen=True)
class LeakageReport:
    """Result of :func:`leakage_check`; truthy when there is no leakage.

    ``n_overlaps`` counts training rows whose label interval overlaps at least one evaluation
    row's interval (or that are evaluation rows themselves); ``first_pair`` is
    ``(train_position, evaluation_position)`` for the earliest such training row.
    """

    ok: bool
    n_overlaps: int
    first_pair: tuple[int, int] | None

    def __bool__(self) -> bool:
        return self.ok


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _naive_utc(index: pd.DatetimeIndex) -> np.ndarray:
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    return index.to_numpy()


def _as_ordered(x: Any, name: str) -> np.ndarray:
    """1-D array of comparable values; tz-aware datetimes become naive UTC datetime64."""
    if isinstance(x, pd.DataFrame):
        raise TypeError(f"{name} must be 1-D (index, Series or array), got a DataFrame")
    if isinstance(x, pd.Index | pd.Series) and isinstance(x.dtype, pd.DatetimeTZDtype):
        arr = _naive_utc(pd.DatetimeIndex(x))
    else:
        arr = np.asarray(x)
        if arr.dtype == object and len(arr) and isinstance(arr[0], pd.Timestamp):
            try:
                arr = _naive_utc(pd.DatetimeIndex(arr))
            except (TypeError, ValueError) as exc:
                raise TypeError(f"{name}: cannot read the Timestamps as one time axis") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind in "fmM":
        missing = np.isnan(arr) if arr.dtype.kind == "f" else np.isnat(arr)
        if missing.any():
            pos = int(np.flatnonzero(missing)[0])
            raise ValueError(f"{name} row {pos} is missing (value {arr[pos]})")
    return arr


def _check_times(t0: Any, t1: Any) -> tuple[np.ndarray, np.ndarray]:
    a0 = _as_ordered(t0, "t0")
    a1 = _as_ordered(t1, "t1")
    if len(a0) != len(a1):
        raise ValueError(f"t0 and t1 must have the same length, got {len(a0)} and {len(a1)}")
    if len(a0) == 0:
        raise FoldError("no rows: t0 and t1 are empty")
    try:
        back = a0[1:] < a0[:-1]
        inverted = a1 < a0
    except TypeError as exc:
        raise TypeError(
            f"t0 and t1 must be mutually comparable, got {a0.dtype} and {a1.dtype}"
        ) from exc
    if np.any(back):
        pos = int(np.flatnonzero(back)[0]) + 1
        raise ValueError(
            f"t0 must be in time order (non-decreasing): row {pos} has t0={a0[pos]} "
            f"after t0={a0[pos - 1]}"
        )
    if np.any(inverted):
        pos = int(np.flatnonzero(inverted)[0])
        raise ValueError(f"row {pos}: label end t1={a1[pos]} is before its start t0={a0[pos]}")
    return a0, a1


def _check_params(n: int, n_splits: int, embargo_pct: float, min_splits: int) -> int:
    if isinstance(n_splits, bool) or not isinstance(n_splits, int | np.integer):
        raise ValueError(f"n_splits must be an integer, got {n_splits!r}")
    if n_splits < min_splits:
        raise ValueError(f"n_splits must be >= {min_splits}, got {n_splits}")
    if not (math.isfinite(embargo_pct) and 0.0 <= embargo_pct < 1.0):
        raise ValueError(f"embargo_pct must be in [0, 1), got {embargo_pct!r}")
    if n < n_splits:
        raise FoldError(f"too few rows for {n_splits} folds: {n} rows (need at least one per fold)")
    return int(n * embargo_pct)


# --------------------------------------------------------------------------------------------
# Purge and embargo around one evaluation set
# --------------------------------------------------------------------------------------------


def _dropped_around(
    t0: np.ndarray, t1: np.ndarray, evaluation: np.ndarray, embargo: int
) -> np.ndarray:
    """Mask of rows purged against, or embargoed after, the contiguous set ``evaluation``.

    Window = [t0 of the first evaluation row, max t1 over evaluation rows]; purged = every row
    whose closed interval overlaps it; embargo = ``embargo`` rows from the first row after the
    set's last row that is not purged.
    """
    n = len(t0)
    start = evaluation[0]
    end = evaluation[-1] + 1
    w_lo = t0[start]
    w_hi = t1[evaluation].max()
    drop = (t0 <= w_hi) & (t1 >= w_lo)
    if embargo > 0 and end < n:
        survivors = np.flatnonzero(~drop[end:])
        if survivors.size:
            first = end + int(survivors[0])
            drop[first : first + embargo] = True
    return drop


def _early_stopping_slice(train: np.ndarray, size: int) -> np.ndarray | None:
    """The last ``size`` rows of the latest contiguous run of ``train`` at least that long."""
    breaks = np.flatnonzero(np.diff(train) != 1) + 1
    runs = np.split(train, breaks)
    for run in reversed(runs):
        if len(run) >= size:
            return run[-size:]
    return None


def _blocks(n: int, n_splits: int) -> list[np.ndarray]:
    return [b.astype(np.int64) for b in np.array_split(np.arange(n), n_splits)]


def _check_labels(labels: Any, n: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.shape != (n,):
        raise ValueError(f"labels must have one value per row ({n}), got shape {y.shape}")
    return y


def _require_buys(y: np.ndarray, fold: int, sets: Sequence[tuple[str, np.ndarray]]) -> None:
    for name, pos in sets:
        n_buy = int((y[pos] == 1).sum())
        if n_buy == 0:
            raise FoldError(
                f"fold {fold}: the {name} set has zero BUY labels ({len(pos)} rows); "
                f"metrics, calibration and the BUY threshold are undefined there -- use fewer "
                f"folds or more data"
            )


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def purged_kfold_splits(
    t0: Any,
    t1: Any,
    n_splits: int = 5,
    embargo_pct: float = 0.005,
    *,
    labels: Any = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Purged + embargoed K-fold: ``[(train_positions, test_positions), ...]`` (AFML ch. 7.4).

    See the module docstring for the exact contract. ``labels`` (optional, 0/1 per row) makes
    a fold whose test block has no BUY label an error naming the fold. Raises
    :class:`FoldError` when a fold would keep no training row.
    """
    a0, a1 = _check_times(t0, t1)
    n = len(a0)
    embargo = _check_params(n, n_splits, embargo_pct, 2)
    y = None if labels is None else _check_labels(labels, n)
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for k, block in enumerate(_blocks(n, n_splits)):
        keep = ~_dropped_around(a0, a1, block, embargo)
        keep[block] = False
        train = np.flatnonzero(keep).astype(np.int64)
        if train.size == 0:
            raise FoldError(
                f"fold {k}: no training rows left after purge and embargo "
                f"(labels longer than the data between blocks?)"
            )
        if y is not None:
            _require_buys(y, k, [("test", block), ("train", train)])
        out.append((train, block))
    return out


def three_way_fold_plan(
    t0: Any,
    t1: Any,
    n_splits: int = 5,
    embargo_pct: float = 0.005,
    early_stopping_frac: float = 0.1,
    *,
    labels: Any = None,
) -> list[FoldPlan]:
    """Train / early-stopping / calibration / test positions for each of ``n_splits`` folds.

    Layout (one fold per block, blocks as in :func:`purged_kfold_splits`):

    * ``test`` = block ``k`` (all of it: every row gets exactly one OOS prediction across folds);
    * ``calibration`` = the block just *before* the test block (block ``k-1``), and for fold 0,
      which has none, the block after it (block 1). Calibrating on the period right before the
      test period mirrors deployment, where the threshold and the calibrator are refitted on the
      most recent data and then used forward (spec 7.2, ADR-15). The calibration block is purged
      against the test window and, when it lies after the test block (fold 0 only), loses the
      embargo rows that follow the test block.
    * ``train`` = every other row, purged against the test window and the window of the kept
      calibration rows, and embargoed after each of them (so it is neither test nor calibration
      and shares no label interval with them);
    * ``early_stopping`` = ``ceil(early_stopping_frac * len(train))`` contiguous training rows:
      the tail of the latest contiguous run of train that is long enough (with the default sizes,
      simply the most recent training rows). They are removed from train, and the remaining
      training rows are purged against their window and embargoed after it, exactly as for an
      evaluation block. Being carved out of train, the slice never touches calibration or test
      rows.

    All four sets are disjoint. An empty set raises :class:`FoldError` naming the fold; with
    ``labels`` given, so does a set with zero BUY labels. Needs ``n_splits >= 3``.
    """
    a0, a1 = _check_times(t0, t1)
    n = len(a0)
    embargo = _check_params(n, n_splits, embargo_pct, 3)
    if not (math.isfinite(early_stopping_frac) and 0.0 < early_stopping_frac < 1.0):
        raise ValueError(f"early_stopping_frac must be in (0, 1), got {early_stopping_frac!r}")
    y = None if labels is None else _check_labels(labels, n)
    blocks = _blocks(n, n_splits)
    return [
        _fold_plan(k, blocks, a0, a1, embargo, early_stopping_frac, y) for k in range(len(blocks))
    ]


def _fold_plan(
    k: int,
    blocks: list[np.ndarray],
    a0: np.ndarray,
    a1: np.ndarray,
    embargo: int,
    early_stopping_frac: float,
    y: np.ndarray | None,
) -> FoldPlan:
    """Fold ``k`` of :func:`three_way_fold_plan` (test block ``k``; ``a0``/``a1`` the label
    intervals' start/end times, ``embargo`` in rows); :class:`FoldError` naming the fold."""
    test = blocks[k]
    cal_block = k - 1 if k > 0 else 1
    cal_all = blocks[cal_block]
    around_test = _dropped_around(a0, a1, test, embargo)
    calibration = cal_all[~around_test[cal_all]]
    if calibration.size == 0:
        raise FoldError(
            f"fold {k}: calibration block {cal_block} is empty after purging against the "
            f"test block (labels longer than a block?)"
        )
    around_cal = _dropped_around(a0, a1, calibration, embargo)
    keep = ~(around_test | around_cal)
    keep[test] = False
    keep[cal_all] = False
    train_all = np.flatnonzero(keep).astype(np.int64)
    early, rest, train = _carve_early_stopping(k, train_all, a0, a1, embargo, early_stopping_frac)
    if y is not None:
        _require_buys(
            y,
            k,
            [
                ("test", test),
                ("calibration", calibration),
                ("early_stopping", early),
                ("train", train),
            ],
        )
    n = len(a0)
    candidates = n - len(test) - len(cal_all)
    return FoldPlan(
        fold=k,
        train=train,
        early_stopping=early,
        calibration=calibration,
        test=test,
        test_block=k,
        calibration_block=cal_block,
        info={
            "n_rows": n,
            "embargo_rows": embargo,
            "calibration_dropped": int(len(cal_all) - len(calibration)),
            "train_dropped": int(candidates - len(train_all)),
            "train_dropped_for_early_stopping": int(len(rest) - len(train)),
        },
    )


def _carve_early_stopping(
    k: int,
    train_all: np.ndarray,
    a0: np.ndarray,
    a1: np.ndarray,
    embargo: int,
    early_stopping_frac: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(early_stopping, rest, train)`` of fold ``k``: the early-stopping slice carved out of
    the training rows, what remains, and that purged and embargoed against the slice."""
    if train_all.size < 2:
        raise FoldError(
            f"fold {k}: {train_all.size} training rows left after purge and embargo; "
            f"need at least 2 (train + early stopping)"
        )
    n_es = max(1, math.ceil(early_stopping_frac * train_all.size))
    early = _early_stopping_slice(train_all, n_es)
    if early is None or n_es >= train_all.size:
        raise FoldError(
            f"fold {k}: no contiguous run of {n_es} training rows for the early-stopping "
            f"set (early_stopping_frac={early_stopping_frac}, {train_all.size} training rows)"
        )
    rest = np.setdiff1d(train_all, early, assume_unique=True)
    around_es = _dropped_around(a0, a1, early, embargo)
    train = rest[~around_es[rest]]
    if train.size == 0:
        raise FoldError(f"fold {k}: no training rows left after purging the early-stopping set")
    return early, rest, train


def check_fold_labels(plans: Sequence[FoldPlan], labels: Any) -> None:
    """Raise :class:`FoldError` naming the fold and set when a set of a plan has no BUY label."""
    if not plans:
        raise FoldError("no fold plans")
    n = int(max(max(p.test.max(), p.calibration.max(), p.train.max()) for p in plans)) + 1
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) < n:
        raise ValueError(f"labels must be 1-D with at least {n} rows, got shape {y.shape}")
    for p in plans:
        _require_buys(
            y,
            p.fold,
            [
                ("test", p.test),
                ("calibration", p.calibration),
                ("early_stopping", p.early_stopping),
                ("train", p.train),
            ],
        )


def leakage_check(t0: Any, t1: Any, train: Any, evaluation: Any) -> LeakageReport:
    """Do any training rows share label time with evaluation rows? (AFML ch. 7.4.1)

    Two rows overlap when their closed intervals ``[t0, t1]`` intersect; a row in both sets is an
    overlap too. O((n_train + n_eval) log n_eval): evaluation intervals sorted by start, prefix
    maximum of their ends, one binary search per training row. The embargo is not checked here
    (it is a margin beyond overlap, not a leak of label information).
    """
    a0, a1 = _check_times(t0, t1)
    n = len(a0)
    tr = _positions(train, n, "train")
    ev = _positions(evaluation, n, "evaluation")
    if tr.size == 0 or ev.size == 0:
        return LeakageReport(ok=True, n_overlaps=0, first_pair=None)
    order = np.argsort(a0[ev], kind="stable")
    ev_sorted = ev[order]
    ev_t0 = a0[ev_sorted]
    ev_t1_max = np.maximum.accumulate(a1[ev_sorted])
    k = np.searchsorted(ev_t0, a1[tr], side="right")  # evaluation rows starting <= train end
    has = k > 0
    hit = np.zeros(tr.size, dtype=bool)
    hit[has] = ev_t1_max[k[has] - 1] >= a0[tr[has]]
    n_hit = int(hit.sum())
    if n_hit == 0:
        return LeakageReport(ok=True, n_overlaps=0, first_pair=None)
    i = int(np.flatnonzero(hit)[0])
    row = int(tr[i])
    partner_idx = int(np.flatnonzero(a1[ev_sorted[: k[i]]] >= a0[row])[0])
    return LeakageReport(ok=False, n_overlaps=n_hit, first_pair=(row, int(ev_sorted[partner_idx])))


def _positions(x: Any, n: int, name: str) -> np.ndarray:
    pos = np.asarray(x)
    if pos.size == 0:
        return np.empty(0, dtype=np.int64)
    if pos.ndim != 1 or pos.dtype.kind not in "iu":
        raise ValueError(f"{name} must be a 1-D array of integer positions, got {pos.dtype}")
    bad = (pos < 0) | (pos >= n)
    if bad.any():
        raise ValueError(f"{name} position {int(pos[bad][0])} is outside 0..{n - 1}")
    return np.unique(pos.astype(np.int64))
