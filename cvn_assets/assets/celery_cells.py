"""The sweep's cells on Celery (``CVN_EXECUTOR=celery``): one step, hence one task, per cell.

Per variant, one *graph-backed* multi-asset ``cells_<variant>`` with the keys of the
in-process assets (``model_<v>``, ``calibrated_<v>``: same partitions, tags and stored values):
``plan_cells_<v>`` yields one ``DynamicOutput`` per crypto x fold partition of the run (a
small JSON spec: key, crypto, fold, fingerprints, retrain); ``cell_<v>`` (:func:`run_cell`)
trains or reuses the booster and calibrates or reuses it with the same code as the in-process
assets (:mod:`cvn_assets.assets.cells`), stores both under their fingerprints and upserts the
cell's ``finetune_results`` row; ``collect_<v>`` moves the partitions' ``CURRENT`` pointers (the
materializations) and runs the ``probabilities_valid`` check. A ranged single run of the
ordinary assets would be one step per asset, hence one Celery task for all cells, which does
not spread out. The executor and the launch are in :mod:`cvn_assets.execution.executors`.
"""

import os
import socket
import time
from collections.abc import Mapping
from typing import Any

from dagster import (
    AssetIn,
    AssetKey,
    AssetOut,
    AssetsDefinition,
    BackfillPolicy,
    DynamicOut,
    DynamicOutput,
    Failure,
    In,
    Nothing,
    OpDefinition,
    OpExecutionContext,
    Out,
    Output,
    graph_multi_asset,
    op,
)

from cvn_assets.ablation.evaluation import result_row
from cvn_assets.ablation.variants import Variant
from cvn_assets.assets._util import (
    prepare_sweep,
    run_partition_keys,
    wants_retrain,
    warn_if_no_partition,
)
from cvn_assets.assets.cells import (
    calibrate_or_reuse,
    calibrated_metadata,
    cell_gate,
    mapping_key,
    model_metadata,
    train_or_reuse,
)
from cvn_assets.assets.checks import probabilities_valid_result, probabilities_valid_spec
from cvn_assets.assets.training import (
    _cell_asset_args,
    calibrated_asset_name,
    check_market_inputs,
    model_asset_name,
    tag_run_with_variant,
    variant_tags,
)
from cvn_assets.execution.executors import CELL_LOG_PREFIX, run_not_running
from cvn_assets.partitions import split_key, to_crypto
from resources.market_data import MarketDataResource
from resources.model_store import ArtifactStore, Stored
from resources.results_store import ResultsStore
from resources.sweep_settings import SweepSettings


def build_celery_cells(variant: Variant) -> AssetsDefinition:
    """``model_<v>`` + ``calibrated_<v>`` as one graph: plan -> one step per cell -> collect."""
    model_name, cal_name = model_asset_name(variant), calibrated_asset_name(variant)
    args = _cell_asset_args(
        variant,
        "ablation/training.py",
        "ablation/focal_loss.py",
        "ablation/numpy_codegen.py",
        "ablation/evaluation.py",
        "ablation/calibration.py",
        "ablation/calibrated_model.py",
        "ablation/metrics.py",
    )
    plan_cells, cell, collect = _plan_op(variant), _cell_op(variant), _collect_op(variant)
    check_spec = probabilities_valid_spec(cal_name)

    def _out(name: str, group: str, description: str) -> AssetOut:
        return AssetOut(
            key=AssetKey(name),
            group_name=group,
            metadata=args["metadata"],
            code_version=args["code_version"],
            kinds=args["kinds"],
            description=description,
        )

    @graph_multi_asset(
        name=f"cells_{variant.name}",
        outs={
            "model": _out(
                model_name,
                "models",
                f"XGBoost booster for variant {variant.name} (one Celery step per "
                "cell: trained on the fold's purged train rows, early-stopped on its slice).",
            ),
            "calibrated": _out(
                cal_name,
                "calibration",
                f"Variant {variant.name}: calibrators and BUY threshold fitted on "
                "the calibration block only; test block scored once (same step as its model).",
            ),
        },
        ins={
            "model_dataset": AssetIn(partition_mapping=to_crypto, dagster_type=Nothing),
            "fold_splits": AssetIn(partition_mapping=to_crypto, dagster_type=Nothing),
        },
        partitions_def=args["partitions_def"],
        backfill_policy=BackfillPolicy.single_run(),
        check_specs=[check_spec],
    )
    def cells(model_dataset, fold_splits):
        done = plan_cells(model_dataset=model_dataset, fold_splits=fold_splits).map(cell)
        model, calibrated, check = collect(done.collect())
        return {"model": model, "calibrated": calibrated, check_spec.get_python_identifier(): check}

    return cells


def _plan_op(variant: Variant) -> OpDefinition:
    """``plan_cells_<v>``: the run's checks before any work, then one spec per cell."""

    @op(
        name=f"plan_cells_{variant.name}",
        ins={"model_dataset": In(Nothing), "fold_splits": In(Nothing)},
        out=DynamicOut(dict),
        tags=variant_tags(variant),
    )
    def plan_cells(
        context: OpExecutionContext,
        sweep: SweepSettings,
        market_data: MarketDataResource,
        results_store: ResultsStore,
        artifacts: ArtifactStore,
    ):
        if warn_if_no_partition(context):
            return
        keys = run_partition_keys(context)
        cryptos = sorted({split_key(k)[0] for k in keys})
        identity = prepare_sweep(context, sweep, market_data, results_store)
        check_market_inputs(artifacts, identity, cryptos)
        tag_run_with_variant(context, variant)
        retrain = wants_retrain(context, sweep)
        for key in keys:
            crypto, fold = split_key(key)
            spec = {
                "key": key,
                "crypto": crypto,
                "fold": fold,
                "market_fp": identity.market_fingerprint(crypto),
                "model_fp": identity.model_fingerprint(crypto, fold, variant.name),
                "calibrated_fp": identity.calibrated_fingerprint(crypto, fold, variant.name),
                "sweep_fp": identity.fingerprint,
                "retrain": retrain,
            }
            yield DynamicOutput(spec, mapping_key=mapping_key(key))

    return plan_cells


def _cell_op(variant: Variant) -> OpDefinition:
    """``cell_<v>``: one cell (:func:`run_cell`), one Celery task."""

    @op(name=f"cell_{variant.name}", out=Out(dict), tags=variant_tags(variant))
    def cell(
        context: OpExecutionContext,
        spec: dict,
        sweep: SweepSettings,
        artifacts: ArtifactStore,
        results_store: ResultsStore,
    ) -> dict:
        return run_cell(context, variant, spec, sweep, artifacts, results_store)

    return cell


def _collect_op(variant: Variant) -> OpDefinition:
    """``collect_<v>``: every cell's metadata and ``CURRENT`` pointers, then the check."""
    model_name, cal_name = model_asset_name(variant), calibrated_asset_name(variant)

    @op(
        name=f"collect_{variant.name}",
        out={
            "model": Out(is_required=False),
            "calibrated": Out(is_required=False),
            "check": Out(is_required=False),
        },
        tags=variant_tags(variant),
    )
    def collect(context: OpExecutionContext, cells: list, artifacts: ArtifactStore):
        keys = run_partition_keys(context)
        done = {c["key"]: c for c in cells}
        missing = sorted(set(keys) - set(done))
        if missing:
            raise Failure(description=f"{variant.name}: no cell result for {missing}")
        # per-partition metadata of a graph-backed asset: through the step's context (the op
        # context of 1.13 has no add_asset_metadata)
        step = context.get_step_execution_context()
        for key in keys:
            c = done[key]
            step.add_asset_metadata(c["model_metadata"], asset_key=model_name, partition_key=key)
            step.add_asset_metadata(c["calibrated_metadata"], asset_key=cal_name, partition_key=key)
        yield Output({k: Stored(done[k]["model_fp"]) for k in keys}, "model")
        yield Output({k: Stored(done[k]["calibrated_fp"]) for k in keys}, "calibrated")
        cals = {
            k: artifacts.read(cal_name, k, done[k]["calibrated_fp"], with_model=False) for k in keys
        }
        yield probabilities_valid_result(cal_name, cals, empty_selection=not keys)

    return collect


def run_cell(
    context: Any,
    variant: Variant,
    spec: Mapping[str, Any],
    sweep: Any,
    artifacts: Any,
    results_store: Any,
) -> dict:
    """One crypto x fold cell on a worker: train (or reuse the stored booster with this
    fingerprint), calibrate (or reuse), store both, upsert the result row -- the in-process
    assets' code (:mod:`cvn_assets.assets.cells`). Returns the cell's metadata and where it
    ran (JSON: it travels through the IO manager).

    Before any work: when the run this step belongs to is no longer running
    (:func:`cvn_assets.execution.executors.run_not_running`; a redelivered message on a worker
    started with dagster-celery's own app, which lacks the worker-level check of
    :mod:`cvn_assets.execution.celery_worker`), the step fails without training or writing
    anything."""
    why = run_not_running(context.instance.get_run_by_id(context.run_id))
    if why is not None:
        raise Failure(description=f"cell {spec['key']} of {variant.name} not executed: {why}")
    cell_gate(variant, str(spec["key"]))  # tests only (CVN_TEST_CELL_GATE)
    model_name, cal_name = model_asset_name(variant), calibrated_asset_name(variant)
    key, crypto, fold = spec["key"], spec["crypto"], int(spec["fold"])
    retrain = bool(spec["retrain"])
    t0 = time.perf_counter()
    dataset = artifacts.read("model_dataset", crypto, spec["market_fp"])
    plan = {p.fold: p for p in artifacts.read("fold_splits", crypto, spec["market_fp"])}[fold]
    inputs = {"variant": variant, "dataset": dataset, "plan": plan, "sweep": sweep}
    model, reused = train_or_reuse(
        artifacts, model_name, key, spec["model_fp"], retrain=retrain, **inputs
    )
    if not reused:  # calibrate the stored booster, as the in-process path does (it loads it)
        model = artifacts.read(model_name, key, spec["model_fp"])
    model_s = time.perf_counter() - t0
    cal, cal_reused = calibrate_or_reuse(
        artifacts, cal_name, key, spec["calibrated_fp"], model=model, retrain=retrain, **inputs
    )
    results_store.replace_results(sweep.sweep_id, [result_row(crypto, fold, cal)])
    seconds = time.perf_counter() - t0
    host, pid = socket.gethostname(), os.getpid()
    action = "reused" if reused else "trained"
    context.log.info(
        f"{CELL_LOG_PREFIX}{variant.name} {key} {action} {seconds:.2f}s host={host} pid={pid} "
        f"f1_buy={cal.info['f1_buy']:.4f}"
    )
    worker = {"worker": f"{host} pid {pid}"}
    model_md = model_metadata(
        model,
        plan,
        cell_seconds=model_s,
        reused=reused,
        fingerprint=spec["model_fp"],
        sweep_fingerprint=spec["sweep_fp"],
    )
    cal_md = calibrated_metadata(cal, spec["calibrated_fp"], reused=cal_reused)
    return {
        "key": key,
        "model_fp": spec["model_fp"],
        "calibrated_fp": spec["calibrated_fp"],
        "action": action,
        "where": {"host": host, "pid": pid},
        "model_metadata": {**model_md, **worker},
        "calibrated_metadata": {**{k: _plain(v) for k, v in cal_md.items()}, **worker},
    }


def _plain(value: Any) -> Any:
    """numpy scalars -> Python (the cell's summary is JSON)."""
    return value.item() if hasattr(value, "item") else value
