"""Models stage: one model asset and one calibrated-model asset per variant (asset factory).

Each asset is partitioned by crypto x fold and runs as a single ranged run
(``BackfillPolicy.single_run()``), looping over ``context.partition_keys``: per-partition
overhead stays near 0.03 s instead of 0.1-0.6 s for a run per partition. The cells of a run are
computed ``cell_workers`` at a time in threads, each booster on one thread (``nthread`` 1;
:func:`cvn_assets.assets.cells.map_cells`); their metadata, progress lines and results follow
the order of the partition keys.

Content addressing (:mod:`cvn_assets.ablation.identity`): every cell's booster is stored at once
under the fingerprint of exactly what it depends on (the crypto's data, the market and training
settings, the variant's loss, gamma and alpha, the fold, the code and library versions). A
stored model with the cell's fingerprint is reused (training is deterministic: it would be
bit-identical), so a re-run after a failure or ``kill -9`` trains only what is missing, and a
sweep with other settings never picks up these models. ``retrain`` (sweep config) or the run tag
``cvn/retrain=true`` trains again regardless. A cell that raises does not stop the others; the
step then fails naming the failed cells.
"""

from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    BackfillPolicy,
    Failure,
    MetadataValue,
    Output,
    asset,
)

from cvn_assets.ablation.calibrated_model import CalibratedModel
from cvn_assets.ablation.evaluation import result_row
from cvn_assets.ablation.identity import SweepIdentity, module_digest
from cvn_assets.ablation.variants import Variant
from cvn_assets.assets._util import (
    by_key,
    prepare_sweep,
    run_partition_keys,
    wants_retrain,
    warn_if_no_partition,
)
from cvn_assets.assets.cells import (
    calibrate_or_reuse,
    calibrated_metadata,
    cell_gate,
    cell_workers,
    map_cells,
    model_metadata,
    train_or_reuse,
)
from cvn_assets.assets.checks import probabilities_valid_result, probabilities_valid_spec
from cvn_assets.partitions import crypto_fold_partitions, split_key, to_crypto
from resources.market_data import MarketDataResource
from resources.model_store import ArtifactStore, Stamped
from resources.results_store import ResultsStore
from resources.sweep_settings import SweepProgress, SweepSettings


def model_asset_name(variant: Variant) -> str:
    return f"model_{variant.name}"


def calibrated_asset_name(variant: Variant) -> str:
    return f"calibrated_{variant.name}"


def variant_tags(variant: Variant) -> dict[str, str]:
    return {"cvn/variant": variant.name, "cvn/loss_function": variant.loss_function}


def _variant_metadata(variant: Variant) -> dict[str, Any]:
    return {
        "variant": variant.name,
        "loss_function": variant.loss_function,
        "gamma": variant.gamma if variant.gamma is not None else "-",
        "alpha": variant.alpha if variant.alpha is not None else "-",
    }


def _fail_if_any(
    context: AssetExecutionContext, failed: dict[str, str], what: str, note: str
) -> None:
    if failed:
        lines = "\n".join(f"- {k}: {v}" for k, v in sorted(failed.items()))
        raise Failure(
            description=(
                f"{what}: {len(failed)} of {len(run_partition_keys(context))} partitions "
                f"failed; {note}:\n" + lines
            ),
            metadata={"failed_partitions": MetadataValue.json(sorted(failed))},
        )


def _cell_asset_args(variant: Variant, *modules: str) -> dict[str, Any]:
    """What every per-variant crypto x fold asset shares (partitions, ranged runs, tags); the
    code version covers the modules it calls and the variant's definition, so changing a
    variant's gamma under the same name marks its cells out of date in the UI."""
    return {
        "partitions_def": crypto_fold_partitions,
        "backfill_policy": BackfillPolicy.single_run(),
        "op_tags": variant_tags(variant),
        "metadata": _variant_metadata(variant),
        "kinds": {"xgboost"},
        "code_version": module_digest(*modules, extra=_variant_metadata(variant)),
    }


def tag_run_with_variant(context: AssetExecutionContext, variant: Variant) -> None:
    """Add ``cvn/variant`` and ``cvn/loss_function`` to the run (UI backfills and ad-hoc
    materializations run an implicit asset job that carries no job tags), so every run that
    trains a variant is filterable by it in the Runs page."""
    missing = {k: v for k, v in variant_tags(variant).items() if context.run.tags.get(k) != v}
    if missing:
        context.instance.add_run_tags(context.run.run_id, missing)


def check_market_inputs(
    artifacts: ArtifactStore, identity: SweepIdentity, cryptos: list[str]
) -> None:
    """The per-crypto inputs loaded must be the ones of this run's settings, else fail naming
    them (they were materialized by a sweep with other settings or data)."""
    stale = []
    for crypto in cryptos:
        want = identity.market_fingerprint(crypto)
        for asset_name in ("model_dataset", "fold_splits"):
            have = artifacts.current_fingerprint(asset_name, crypto)
            if have != want:
                stale.append(f"{asset_name} {crypto} (stored {have}, this run needs {want})")
    if stale:
        raise Failure(
            description="the market assets of these cryptos were materialized with other "
            "settings, data or code than this run's; materialize them first (market_job, or "
            "select candles..fold_splits in the UI with the same config):\n- " + "\n- ".join(stale),
            metadata={"stale_inputs": MetadataValue.json(stale)},
        )


#: the per-crypto inputs of a cell, mapped from its crypto x fold partition
_PER_CRYPTO_INS = {
    "model_dataset": AssetIn(partition_mapping=to_crypto),
    "fold_splits": AssetIn(partition_mapping=to_crypto),
}


def build_model_asset(variant: Variant):
    """``model_<variant>``: per crypto x fold cell of the run, the booster trained (or reused
    from the store under the cell's fingerprint, :func:`cvn_assets.assets.cells.train_or_reuse`)
    and stored at once; a cell that raises does not stop the others, the step then fails
    naming it."""
    name = model_asset_name(variant)

    @asset(
        name=name,
        group_name="models",
        ins=_PER_CRYPTO_INS,
        **_cell_asset_args(
            variant,
            "ablation/training.py",
            "ablation/focal_loss.py",
            "ablation/numpy_codegen.py",
            "ablation/evaluation.py",
        ),
        description=f"XGBoost booster for variant {variant.name} ({variant.loss_function}"
        + (f", gamma={variant.gamma}, alpha={variant.alpha}" if variant.gamma is not None else "")
        + "), trained on the fold's purged train rows, early-stopped on its slice.",
    )
    def _model(
        context: AssetExecutionContext,
        model_dataset,
        fold_splits,
        sweep: SweepSettings,
        progress: SweepProgress,
        artifacts: ArtifactStore,
        market_data: MarketDataResource,
        results_store: ResultsStore,
    ) -> dict[str, Stamped]:
        if warn_if_no_partition(context):
            return {}
        keys = run_partition_keys(context)
        cryptos = sorted({split_key(k)[0] for k in keys})
        identity = prepare_sweep(context, sweep, market_data, results_store)
        check_market_inputs(artifacts, identity, cryptos)
        datasets, plans = by_key(model_dataset, cryptos), by_key(fold_splits, cryptos)
        retrain = wants_retrain(context, sweep)
        tag_run_with_variant(context, variant)
        progress.start(context)
        out: dict[str, Stamped] = {}
        failed: dict[str, str] = {}
        fingerprints = {k: identity.model_fingerprint(*split_key(k), variant.name) for k in keys}

        def train(key: str) -> tuple[Any, bool]:
            crypto, fold = split_key(key)
            cell_gate(variant, key)  # tests only (CVN_TEST_CELL_GATE)
            return train_or_reuse(
                artifacts,
                name,
                key,
                fingerprints[key],
                variant=variant,
                dataset=datasets[crypto],
                plan=plans[crypto][fold],
                sweep=sweep,
                retrain=retrain,
            )

        workers = cell_workers(sweep.cell_workers)
        for key, result, seconds in map_cells(keys, train, workers):
            if isinstance(result, Exception):  # isolate the cell; the step fails at the end
                context.log.error(f"{name} {key}: {type(result).__name__}: {result}")
                failed[key] = f"{type(result).__name__}: {result}"
                continue
            model, reused = result
            crypto, fold = split_key(key)
            out[key] = Stamped(model, fingerprints[key])
            meta = model_metadata(
                model,
                plans[crypto][fold],
                cell_seconds=seconds,
                reused=reused,
                fingerprint=fingerprints[key],
                sweep_fingerprint=identity.fingerprint,
            )
            context.add_asset_metadata(meta, partition_key=key)
            _tick(context, progress, variant, key, reused, seconds, len(keys))
        _fail_if_any(context, failed, name, "the others are stored; a re-run trains only these")
        return out

    return _model


def _tick(
    context: AssetExecutionContext,
    progress: SweepProgress,
    variant: Variant,
    key: str,
    reused: bool,
    cell_s: float,
    total: int,
) -> None:
    """One progress line of a finished model cell (``trained`` or ``reused``, seconds)."""
    action = "reused " if reused else "trained"
    progress.tick(
        context, f"{variant.name:<16} {key:<12} {action} {cell_s:5.2f}s", total, action.strip()
    )


def build_calibrated_asset(variant: Variant):
    """``calibrated_<variant>``: per cell of the run, its model (which must be this sweep's)
    calibrated and scored, or the stored value reused
    (:func:`cvn_assets.assets.cells.calibrate_or_reuse`); each cell's ``finetune_results`` row
    is upserted; a cell that fails does not stop the others, the step then fails naming it."""
    name = calibrated_asset_name(variant)

    @asset(
        name=name,
        group_name="calibration",
        ins={"model": AssetIn(key=AssetKey(model_asset_name(variant))), **_PER_CRYPTO_INS},
        **_cell_asset_args(
            variant,
            "ablation/calibration.py",
            "ablation/calibrated_model.py",
            "ablation/metrics.py",
        ),
        check_specs=[probabilities_valid_spec(name)],
        description=f"Variant {variant.name}: calibrators (none/temperature/Platt/isotonic) and "
        "BUY threshold fitted on the calibration block only; test block scored once.",
    )
    def _calibrated(
        context: AssetExecutionContext,
        model,
        model_dataset,
        fold_splits,
        sweep: SweepSettings,
        results_store: ResultsStore,
        artifacts: ArtifactStore,
        market_data: MarketDataResource,
        progress: SweepProgress,
    ):
        if warn_if_no_partition(context):
            yield Output({})
            yield probabilities_valid_result(name, {}, empty_selection=True)
            return
        keys = run_partition_keys(context)
        cryptos = sorted({split_key(k)[0] for k in keys})
        identity = prepare_sweep(context, sweep, market_data, results_store)
        check_market_inputs(artifacts, identity, cryptos)
        models = by_key(model, keys)
        datasets, plans = by_key(model_dataset, cryptos), by_key(fold_splits, cryptos)
        retrain = wants_retrain(context, sweep)
        out: dict[str, CalibratedModel] = {}
        stamps: dict[str, str] = {}
        failed: dict[str, str] = {}
        for key in keys:
            stale = _stale_model(artifacts, identity, variant, key)
            if stale is not None:
                failed[key] = stale
            else:
                stamps[key] = identity.calibrated_fingerprint(*split_key(key), variant.name)

        def calibrate(key: str) -> tuple[CalibratedModel, bool]:
            crypto, fold = split_key(key)
            return calibrate_or_reuse(
                artifacts,
                name,
                key,
                stamps[key],
                variant=variant,
                model=models[key],
                dataset=datasets[crypto],
                plan=plans[crypto][fold],
                sweep=sweep,
                retrain=retrain,
            )

        todo = [k for k in keys if k in stamps]
        progress.start(context)
        for key, result, _ in map_cells(todo, calibrate, cell_workers(sweep.cell_workers)):
            if isinstance(result, Exception):
                context.log.error(f"{name} {key}: {type(result).__name__}: {result}")
                failed[key] = f"{type(result).__name__}: {result}"
                continue
            out[key], reused = result
            _record_calibrated(context, key, out[key], stamps[key], reused=reused)
        progress.calibrated(
            context, f"{variant.name:<16} {len(out)} cells calibrated", len(todo), len(keys)
        )
        # each cell's finetune_results row is upserted as soon as it exists (replace, never
        # duplicate); the fan-in asset re-validates the complete grid
        results_store.replace_results(
            sweep.sweep_id, [result_row(*split_key(k), cal) for k, cal in out.items()]
        )
        _fail_if_any(context, failed, name, "nothing of this step was materialized")
        yield Output({k: Stamped(cal, stamps[k]) for k, cal in out.items()})
        yield probabilities_valid_result(name, out)

    return _calibrated


def _stale_model(
    artifacts: ArtifactStore, identity: SweepIdentity, variant: Variant, key: str
) -> str | None:
    """Why the cell's latest model is not this sweep's (None when it is)."""
    crypto, fold = split_key(key)
    model_fp = identity.model_fingerprint(crypto, fold, variant.name)
    have = artifacts.current_fingerprint(model_asset_name(variant), key)
    if have == model_fp:
        return None
    return (
        f"its model was trained with other settings (stored {have}, this run "
        f"needs {model_fp}); materialize {model_asset_name(variant)} {key} first"
    )


def _record_calibrated(
    context: AssetExecutionContext, key: str, cal: CalibratedModel, fp: str, *, reused: bool
) -> None:
    """The cell's asset metadata, and one line in the run's event log as it finishes (the
    step's materializations are recorded by Dagster when its output is stored, at its end)."""
    context.add_asset_metadata(calibrated_metadata(cal, fp, reused=reused), partition_key=key)
    info = cal.info
    context.log.info(
        f"{key} {'reused' if reused else 'calibrated'}: f1_buy {info['f1_buy']:.4f}, "
        f"ECE_HOLD({cal.primary}) {info[f'ece_hold_{cal.primary}']:.4f}, "
        f"threshold {info['threshold']:.3f}"
    )
