"""One sweep cell (a variant's crypto x fold), the same code wherever it runs.

The in-process assets (:mod:`cvn_assets.assets.training`: a model asset, then a calibrated asset
per variant, in ranged runs) and the Celery step per cell (:mod:`cvn_assets.assets.celery_cells`)
both call these: train the booster or reuse the one stored under the cell's fingerprint
(:func:`train_or_reuse`), calibrate it or reuse the stored calibrated value
(:func:`calibrate_or_reuse`), and describe both as asset metadata (:func:`model_metadata`,
:func:`calibrated_metadata`). A stored value is reused because training and calibration are
deterministic: recomputing it would give the same bits.
"""

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from cvn_assets.ablation.calibrated_model import CalibratedModel
from cvn_assets.ablation.evaluation import calibrate_and_evaluate, train_cell
from cvn_assets.ablation.training import TrainResult
from cvn_assets.ablation.variants import Variant
from cvn_assets.assets._util import round_floats
from cvn_assets.market.folds import FoldPlan

#: tests only: a directory through which a test holds cells (see :func:`cell_gate`)
CELL_GATE_ENV = "CVN_TEST_CELL_GATE"
_GATE_LOCK = threading.Lock()

#: ``cell_workers = 0`` means one worker per usable core, but never more than this
MAX_AUTO_CELL_WORKERS = 4

T = TypeVar("T")

#: the calibrated cell's figures recorded as asset metadata (rounded to 4 digits)
CALIBRATED_FIGURES = (
    "f1_buy",
    "precision_buy",
    "recall_buy",
    "threshold",
    "ece_hold_none",
    "ece_hold_temperature",
    "ece_hold_platt",
    "ece_hold_isotonic",
    "log_loss",
    "expectancy_net",
    "n_test",
    "n_buy",
    "n_trades",
)


def mapping_key(partition_key: str) -> str:
    """``BTCUSDC|f3`` -> ``BTCUSDC_f3`` (dynamic mapping keys are identifiers)."""
    return str(partition_key).replace("|", "_")


def cell_gate(variant: Variant, partition_key: str) -> None:
    """Tests only (``CVN_TEST_CELL_GATE=<dir>``, unset in production: no effect): record that
    this process reached the cell ``<variant>_<mapping key>`` (``<dir>/arrived/<pid>-<k>-<label>``,
    ``k`` = its k-th cell) and, while ``<dir>/hold-<pid>`` (else ``<dir>/hold``, for every
    process) exists and holds a number below ``k``, wait. A test thus holds a worker (or the
    in-process sweep) at a known cell until it has acted (killed it, ...), whatever the
    machine's speed."""
    gate = os.environ.get(CELL_GATE_ENV, "").strip()
    if not gate:
        return
    label = f"{variant.name}_{mapping_key(partition_key)}"
    pid = os.getpid()
    arrived = Path(gate) / "arrived"
    with _GATE_LOCK:  # cells of one process arrive from several threads (map_cells)
        arrived.mkdir(parents=True, exist_ok=True)
        k = len(list(arrived.glob(f"{pid}-*"))) + 1
        (arrived / f"{pid}-{k}-{label}").touch()
    hold = Path(gate) / f"hold-{pid}"
    hold = hold if hold.exists() else Path(gate) / "hold"
    while True:
        try:
            if k <= int(hold.read_text().strip() or 0):
                return
        except (FileNotFoundError, ValueError):
            return
        time.sleep(0.1)


def cell_workers(requested: int, cores: int | None = None) -> int:
    """How many cells a ranged run computes at once: ``requested`` when > 0, else one per core
    this process may use (``os.sched_getaffinity``; ``cores`` overrides it), at most
    :data:`MAX_AUTO_CELL_WORKERS`. Raises ValueError for a negative ``requested``."""
    if requested < 0:
        raise ValueError(f"cell_workers: {requested!r} must be >= 0 (0 = one per core)")
    if requested > 0:
        return requested
    usable = cores if cores is not None else len(os.sched_getaffinity(0))
    return max(1, min(usable, MAX_AUTO_CELL_WORKERS))


def map_cells(
    keys: Sequence[str], work: Callable[[str], T], workers: int
) -> Iterator[tuple[str, T | Exception, float]]:
    """``(key, work(key) or the exception it raised, seconds it took)`` for every key, in the
    order of ``keys``, computing up to ``workers`` keys at once in threads (XGBoost's training
    and NumPy's kernels release the GIL). The caller consumes the results in its own thread,
    so Dagster's context is only touched there. One worker: plain sequential calls."""

    def timed(key: str) -> tuple[str, T | Exception, float]:
        t0 = time.perf_counter()
        try:
            out: T | Exception = work(key)
        except Exception as exc:  # isolated per cell; the caller reports it
            out = exc
        return key, out, time.perf_counter() - t0

    if workers <= 1 or len(keys) <= 1:
        yield from (timed(k) for k in keys)
        return
    pool = ThreadPoolExecutor(max_workers=min(workers, len(keys)), thread_name_prefix="cell")
    try:
        yield from pool.map(timed, keys)
    finally:  # a consumer that stops (failure, termination) leaves no queued cell behind
        pool.shutdown(wait=True, cancel_futures=True)


def train_or_reuse(
    artifacts: Any,
    asset_name: str,
    key: str,
    fingerprint: str,
    *,
    variant: Variant,
    dataset: Any,
    plan: FoldPlan,
    sweep: Any,
    retrain: bool,
) -> tuple[Any, bool]:
    """``(booster, reused)``: the booster stored under ``fingerprint`` (unless ``retrain``),
    else one trained on the fold's purged train rows, early-stopped on its slice, and stored
    at once (a crash afterwards keeps it). ``artifacts`` is the ``ArtifactStore``, ``sweep``
    the ``SweepSettings``; errors of training or of the store propagate."""
    if not retrain and artifacts.has(asset_name, key, fingerprint):
        return artifacts.read(asset_name, key, fingerprint), True
    res: TrainResult = train_cell(
        variant,
        dataset,
        plan,
        params=sweep.xgb_params(),
        num_boost_round=sweep.num_boost_round,
        early_stopping_rounds=sweep.early_stopping_rounds,
        seed=sweep.seed,
    )
    artifacts.write(asset_name, key, fingerprint, res.model)
    return res.model, False


def calibrate_or_reuse(
    artifacts: Any,
    asset_name: str,
    key: str,
    fingerprint: str,
    *,
    variant: Variant,
    model: Any,
    dataset: Any,
    plan: FoldPlan,
    sweep: Any,
    retrain: bool,
) -> tuple[CalibratedModel, bool]:
    """``(calibrated model, reused)``: the value stored under ``fingerprint`` (unless
    ``retrain``), else ``model`` calibrated on the fold's calibration block and scored once on
    its test block (:func:`cvn_assets.ablation.evaluation.calibrate_and_evaluate`), then
    stored. Errors of calibration or of the store propagate."""
    if not retrain and artifacts.has(asset_name, key, fingerprint):
        return artifacts.read(asset_name, key, fingerprint), True
    train = TrainResult(
        model=model,
        best_iteration=model.best_iteration,
        train_seconds=float(model.metadata.get("train_seconds", float("nan"))),
        n_rounds=-1,
    )
    cal = calibrate_and_evaluate(
        train,
        variant,
        dataset,
        plan,
        primary=sweep.primary_calibration,
        fee_per_side=sweep.fee_per_side,
    )
    artifacts.write(asset_name, key, fingerprint, cal)
    return cal, False


def model_metadata(
    model: Any,
    plan: FoldPlan,
    *,
    cell_seconds: float,
    reused: bool,
    fingerprint: str,
    sweep_fingerprint: str,
) -> dict[str, Any]:
    """A model cell's asset metadata: the booster's own training time (also for a reused
    model) and what the cell cost in this run (``cell_seconds``: training, or loading the
    stored model), both in seconds."""
    return {
        "best_iteration": int(model.best_iteration),
        "train_rows": len(plan.train),
        "early_stopping_rows": len(plan.early_stopping),
        "training_seconds": round(float(model.metadata.get("train_seconds", float("nan"))), 3),
        "cell_seconds": round(cell_seconds, 3),
        "reused_stored_model": reused,
        "fingerprint": fingerprint,
        "sweep_fingerprint": sweep_fingerprint,
    }


def calibrated_metadata(cal: CalibratedModel, fingerprint: str, *, reused: bool) -> dict[str, Any]:
    """A calibrated cell's asset metadata: :data:`CALIBRATED_FIGURES` rounded to 4 digits and
    the fitted temperature."""
    info = cal.info
    return {
        **round_floats({k: info[k] for k in CALIBRATED_FIGURES}),
        "fitted_temperature": round(float(info["temperature"]), 4),
        "reused_stored_cell": reused,
        "fingerprint": fingerprint,
    }
